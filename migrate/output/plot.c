/* SPDX-License-Identifier: MIT */
/*
 * Pictures of a migration, drawn by gnuplot.  Each picture leaves its
 * data (whitespace-separated columns, one block per series) and its
 * script beside the PNG, so that a researcher can restyle it and run
 * `gnuplot out.gp` again (docs/report.md).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "phase.h"
#include "report.h"

/* One colour per phase (phase.h); blackout is drawn red on top. */
#define phase_color(p) (kwm_phase_info[p].colour)

int kwm_plot_base(const char *png, char *base, size_t len)
{
	size_t n = strlen(png);

	if (n < 5 || strcmp(png + n - 4, ".png") || n - 4 >= len)
		return -1;
	memcpy(base, png, n - 4);
	base[n - 4] = 0;
	return 0;
}

static FILE *open_dat(const char *base, const char *name, char *path, size_t len)
{
	if ((size_t)snprintf(path, len, "%s-%s.dat", base, name) >= len) {
		errno = ENAMETOOLONG;
		return NULL;
	}
	return fopen(path, "w");
}

/* The name gnuplot's script uses for a data file: beside the script. */
static const char *leaf(const char *path)
{
	const char *s = strrchr(path, '/');

	return s ? s + 1 : path;
}

int kwm_plot_render(const char *base, char *err, size_t errlen)
{
	char gp[4096], dir[4096];
	const char *slash;
	int status;
	pid_t pid;

	if ((size_t)snprintf(gp, sizeof(gp), "%s.gp", base) >= sizeof(gp)) {
		snprintf(err, errlen, "%s: name too long", base);
		return -1;
	}
	/* The script names its data files without a folder: run it there. */
	slash = strrchr(gp, '/');
	snprintf(dir, sizeof(dir), "%.*s", slash ? (int)(slash - gp) : 1, slash ? gp : ".");
	if (!*dir)
		snprintf(dir, sizeof(dir), "/");
	pid = fork();
	if (pid < 0) {
		snprintf(err, errlen, "cannot start gnuplot: %s", strerror(errno));
		return -1;
	}
	if (!pid) {
		if (chdir(dir))
			_exit(126);
		execlp("gnuplot", "gnuplot", leaf(gp), (char *)NULL);
		_exit(errno == ENOENT ? 127 : 126);
	}
	if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status)) {
		int rc = WIFEXITED(status) ? WEXITSTATUS(status) : -1;

		if (rc == 127)
			snprintf(err, errlen, "gnuplot not found: install it (Debian: apt-get install "
				 "gnuplot-nox); the data and script are in %s*", base);
		else
			snprintf(err, errlen, "gnuplot failed (exit %d) on %s", rc, gp);
		return -1;
	}
	return 0;
}

/* Phase name -> index in phase order, or -1. */
static int phase_index(const char *name)
{
	for (int p = 0; p < KWM_PH__COUNT; p++)
		if (!strcmp(name, kwm_phase_name(p)))
			return p;
	return -1;
}

/*
 * Every finished blackout span as a row "vm-row start end vm why" (seconds
 * after t0) to f and, with gp, as a hatched rectangle on a time axis.
 */
static void write_blackouts(json_object *vms, double t0, FILE *f, FILE *gp, int *obj)
{
	for (size_t i = 0; i < json_object_array_length(vms); i++) {
		json_object *vm = json_object_array_get_idx(vms, i);
		json_object *sp = kwm_jget(kwm_jget(vm, "blackout"), "spans");

		for (size_t k = 0; sp && k < json_object_array_length(sp); k++) {
			json_object *s = json_object_array_get_idx(sp, k);
			double a = kwm_jnum(s, "start") - t0, b = kwm_jnum(s, "end") - t0;

			if (!kwm_jnum(s, "end"))
				continue;
			fprintf(f, "%zu %.6f %.6f %s %s\n", i, a, b, kwm_jstr(vm, "name"),
				kwm_jstr(s, "why"));
			if (gp)
				fprintf(gp, "set object %d rect from %.6f, graph 0 to %.6f, graph 1 "
					"front fc rgb 'red' fs transparent pattern 4 noborder\n",
					(*obj)++, a, b);
		}
	}
}

int kwm_plot_mark_phases(json_object *rep, double t0, const char *base, FILE *gp,
			 char *legend, size_t len)
{
	size_t used = 0;

	double lo[KWM_PH__COUNT] = { 0 }, hi[KWM_PH__COUNT] = { 0 };
	json_object *vms = kwm_jget(rep, "vms");
	char path[4096];
	FILE *f = open_dat(base, "cluster-phases", path, sizeof(path));
	int obj = 1;

	if (!f)
		return -1;
	for (size_t i = 0; i < json_object_array_length(vms); i++) {
		json_object *ph = kwm_jget(json_object_array_get_idx(vms, i), "phases");

		for (size_t k = 0; ph && k < json_object_array_length(ph); k++) {
			json_object *p = json_object_array_get_idx(ph, k);
			int x = phase_index(kwm_jstr(p, "phase"));
			double s = kwm_jnum(p, "start"), e = kwm_jnum(p, "end");

			if (x < 0 || !s)
				continue;
			if (!lo[x] || s < lo[x])
				lo[x] = s;
			if (e > hi[x])
				hi[x] = e;
		}
	}
	fprintf(f, "# phase start[s] end[s] (earliest start and latest end over the VMs, "
		"seconds after %.6f)\n", t0);
	for (int p = 0; p < KWM_PH__COUNT; p++) {
		if (!lo[p] || !hi[p])
			continue;
		fprintf(f, "%s %.6f %.6f\n", kwm_phase_name(p), lo[p] - t0, hi[p] - t0);
		fprintf(gp, "set object %d rect from %.6f, graph 0 to %.6f, graph 1 behind "
			"fc rgb '%s' fs transparent solid 0.18 noborder\n", obj++, lo[p] - t0,
			hi[p] - t0, phase_color(p));
		used += (size_t)snprintf(legend + used, used < len ? len - used : 0,
			", \\\n     NaN with boxes fs transparent solid 0.35 noborder "
			"lc rgb '%s' title '%s'", phase_color(p), kwm_phase_name(p));
	}
	used += (size_t)snprintf(legend + used, used < len ? len - used : 0,
		", \\\n     NaN with boxes fs pattern 4 lc rgb 'red' title 'blackout'");
	if (used >= len)
		legend[0] = 0;
	fprintf(f, "\n\n# blackout: vm-row start[s] end[s] vm why\n");
	write_blackouts(vms, t0, f, gp, &obj);
	return fclose(f) ? -1 : 0;
}

/* base-phases.dat: one block per phase, a row per VM that ran it;
 * base-blackout.dat: a row per blackout span.  Returns the phases seen
 * as a bit mask, or -1. */
static int write_timeline(json_object *vms, double t0, const char *base)
{
	char path[4096];
	FILE *f = open_dat(base, "phases", path, sizeof(path)), *b;
	int seen = 0;

	if (!f)
		return -1;
	fprintf(f, "# one block per phase (gnuplot index = phase number):\n"
		"# vm-row start[s] end[s] vm\n");
	for (int p = 0; p < KWM_PH__COUNT; p++) {
		fprintf(f, "# %s\n", kwm_phase_name(p));
		for (size_t i = 0; i < json_object_array_length(vms); i++) {
			json_object *vm = json_object_array_get_idx(vms, i);
			json_object *ph = kwm_jget(vm, "phases");

			for (size_t k = 0; ph && k < json_object_array_length(ph); k++) {
				json_object *x = json_object_array_get_idx(ph, k);
				double e = kwm_jnum(x, "end") ? kwm_jnum(x, "end") :
					   kwm_jnum(x, "start");

				if (phase_index(kwm_jstr(x, "phase")) != p)
					continue;
				fprintf(f, "%zu %.6f %.6f %s\n", i, kwm_jnum(x, "start") - t0,
					e - t0, kwm_jstr(vm, "name"));
				seen |= 1 << p;
			}
		}
		/* gnuplot wants a point in every block it is asked for. */
		if (!(seen & 1 << p))
			fprintf(f, "-1 0 0 none\n");
		fprintf(f, "\n\n");
	}
	if (fclose(f))
		return -1;
	b = open_dat(base, "blackout", path, sizeof(path));
	if (!b)
		return -1;
	fprintf(b, "# vm-row start[s] end[s] vm why\n");
	write_blackouts(vms, t0, b, NULL, NULL);
	fprintf(b, "-1 0 0 none none\n");
	return fclose(b) ? -1 : seen;
}

/* base-transfer.dat: one block per VM: time, storage MB, memory MB.
 * Returns the number of samples written, or -1. */
static long write_transfer(json_object *vms, double t0, const char *base)
{
	char path[4096];
	FILE *f = open_dat(base, "transfer", path, sizeof(path));
	long n = 0;

	if (!f)
		return -1;
	fprintf(f, "# one block per VM (gnuplot index = VM row):\n"
		"# time[s] storage-copied[MB] memory-copied[MB]\n");
	for (size_t i = 0; i < json_object_array_length(vms); i++) {
		json_object *vm = json_object_array_get_idx(vms, i);
		json_object *sa = kwm_jget(vm, "samples");

		fprintf(f, "# %s\n", kwm_jstr(vm, "name"));
		for (size_t k = 0; sa && k < json_object_array_length(sa); k++) {
			json_object *s = json_object_array_get_idx(sa, k);

			fprintf(f, "%.6f %.6f %.6f\n", kwm_jnum(s, "time") - t0,
				kwm_jnum(s, "disk_processed") / 1e6,
				kwm_jnum(s, "memory_processed") / 1e6);
			n++;
		}
		if (!sa || !json_object_array_length(sa))
			fprintf(f, "0 NaN NaN\n");
		fprintf(f, "\n\n");
	}
	return fclose(f) ? -1 : n;
}

static void timeline_script(FILE *gp, json_object *rep, const char *base, int seen,
			    double x1, bool bottom)
{
	json_object *vms = kwm_jget(rep, "vms");
	size_t n = json_object_array_length(vms);
	const char *sep = "plot ";

	fprintf(gp, "set title \"cluster %s: %s, phases per VM (red: MPI job blackout)\"\n",
		kwm_jstr(rep, "cluster"), kwm_jstr(rep, "result"));
	fprintf(gp, "set yrange [%f:-0.6]\nset ytics (", n - 0.4);
	for (size_t i = 0; i < n; i++)
		fprintf(gp, "%s\"%s\" %zu", i ? ", " : "",
			kwm_jstr(json_object_array_get_idx(vms, i), "name"), i);
	fprintf(gp, ")\nset xrange [0:%f]\nset grid xtics\n", x1);
	fprintf(gp, bottom ? "set xlabel 'seconds since the start'\n" : "unset xlabel\n");
	fprintf(gp, "set key outside right top\n");
	for (int p = 0; p < KWM_PH__COUNT; p++) {
		if (!(seen & 1 << p))
			continue;
		fprintf(gp, "%s'%s-phases.dat' index %d using (($2+$3)/2):1:(($3-$2)/2):(0.3) "
			"with boxxyerror fs solid 0.8 noborder lc rgb '%s' title '%s'", sep,
			leaf(base), p, phase_color(p), kwm_phase_name(p));
		sep = ", \\\n     ";
	}
	fprintf(gp, "%s'%s-blackout.dat' using (($2+$3)/2):1:(($3-$2)/2):(0.42) with boxxyerror "
		"fs transparent pattern 4 border lc rgb 'red' fc rgb 'red' lw 1.5 title 'blackout'\n", sep,
		leaf(base));
}

static void transfer_script(FILE *gp, json_object *vms, const char *base, double x1)
{
	static const char *const vm_color[] = { "#1f77b4", "#d62728", "#2ca02c", "#9467bd",
		"#ff7f0e", "#8c564b", "#e377c2", "#17becf" };
	size_t n = json_object_array_length(vms);

	fprintf(gp, "set title 'data copied per VM (solid: storage, dashed: memory)'\n"
		"set autoscale y\nset yrange [0:*]\nset ytics auto\nset xrange [0:%f]\n"
		"set xlabel 'seconds since the start'\nset ylabel 'MB'\nset grid\n", x1);
	for (size_t i = 0; i < n; i++) {
		const char *name = kwm_jstr(json_object_array_get_idx(vms, i), "name");
		const char *c = vm_color[i % (sizeof(vm_color) / sizeof(vm_color[0]))];

		fprintf(gp, "%s'%s-transfer.dat' index %zu using 1:2 with linespoints pt 7 ps 0.4 "
			"lw 2 lc rgb '%s' title '%s storage', \\\n     "
			"'%s-transfer.dat' index %zu using 1:3 with linespoints pt 7 ps 0.4 lw 2 "
			"dt 2 lc rgb '%s' title '%s memory'", i ? ", \\\n     " : "plot ",
			leaf(base), i, c, name, leaf(base), i, c, name);
	}
	fprintf(gp, "\n");
}

int kwm_plot_report(json_object *rep, const char *png, char *err, size_t errlen)
{
	json_object *vms = kwm_jget(rep, "vms");
	double t0 = kwm_jnum(rep, "started"), x1 = kwm_jnum(rep, "ended") - t0;
	char base[4096], path[4200];
	size_t n = json_object_array_length(vms);
	long samples;
	int seen, h;
	FILE *gp;

	if (kwm_plot_base(png, base, sizeof(base))) {
		snprintf(err, errlen, "--plot '%s': name a .png file", png);
		return -1;
	}
	if (!n) {
		snprintf(err, errlen, "the report lists no VM: nothing to draw");
		return -1;
	}
	seen = write_timeline(vms, t0, base);
	samples = seen < 0 ? -1 : write_transfer(vms, t0, base);
	if ((size_t)snprintf(path, sizeof(path), "%s.gp", base) >= sizeof(path))
		samples = -1;
	gp = samples < 0 ? NULL : fopen(path, "w");
	if (!gp) {
		snprintf(err, errlen, "cannot write the plot's files %s*: %s", base, strerror(errno));
		return -1;
	}
	if (x1 <= 0)
		x1 = 1;
	h = 160 + 45 * (int)n + (samples ? 380 : 0);
	fprintf(gp, "# kawarimi report --plot: restyle and run `gnuplot %s.gp` here.\n"
		"# Data: %s-phases.dat, %s-blackout.dat, %s-transfer.dat (times in seconds "
		"after %.6f).\n", leaf(base), leaf(base), leaf(base), leaf(base), t0);
	fprintf(gp, "set terminal pngcairo size 1100,%d font 'sans,10'\nset output '%s'\n", h,
		leaf(png));
	fprintf(gp, samples ? "set multiplot layout 2,1 margins 0.1,0.78,0.08,0.95 "
		"spacing 0,0.12\n" : "set lmargin at screen 0.1\nset rmargin at screen 0.78\n");
	timeline_script(gp, rep, base, seen, x1, !samples);
	if (samples) {
		transfer_script(gp, vms, base, x1);
		fprintf(gp, "unset multiplot\n");
	}
	if (fclose(gp)) {
		snprintf(err, errlen, "cannot write %s: %s", path, strerror(errno));
		return -1;
	}
	return kwm_plot_render(base, err, errlen);
}

/* ---- kawarimi-pingpong's pictures ---------------------------------------- */

/* "2026-12-02T15:00:18.123456Z" -> seconds since the epoch, or -1. */
static double iso_time(const char *s)
{
	struct tm tm = { 0 };
	const char *rest = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
	double frac = 0;

	if (!rest)
		return -1;
	if (*rest == '.')
		frac = strtod(rest, NULL);
	return (double)timegm(&tm) + frac;
}

/*
 * Reads kawarimi-pingpong's output: the IMB table (bytes, repetitions,
 * t[usec], Mbytes/sec) or continuous rounds (timestamp, round, exchanges,
 * t_avg, t_max, Mbytes/sec), and writes base-pingpong.dat with the numbers
 * gnuplot needs.  Returns the rows, 0 for none, -1 when it cannot read
 * or write; *continuous and *t0 (first round's time) are set.
 */
static long pingpong_dat(const char *saved, const char *base, bool *continuous, double *t0)
{
	char line[512], path[4096];
	FILE *in = fopen(saved, "r"), *out;
	long n = 0;

	if (!in)
		return -1;
	out = open_dat(base, "pingpong", path, sizeof(path));
	if (!out) {
		fclose(in);
		return -1;
	}
	*continuous = false;
	*t0 = 0;
	while (fgets(line, sizeof(line), in)) {
		char ts[64];
		double a, b, c, d, e;
		long r;

		if (sscanf(line, "%63s %ld %lf %lf %lf %lf", ts, &r, &a, &b, &c, &d) == 6 &&
		    (e = iso_time(ts)) > 0) {
			if (!n) {
				*t0 = e;
				fprintf(out, "# seconds-after-%.6f round exchanges t_avg[usec] "
					"t_max[usec] Mbytes/sec\n", e);
			}
			*continuous = true;
			fprintf(out, "%.6f %ld %.0f %.2f %.2f %.2f\n", e - *t0, r, a, b, c, d);
			n++;
		} else if (!*continuous && line[0] == ' ' &&
			   sscanf(line, "%lf %lf %lf %lf", &a, &b, &c, &d) == 4) {
			if (!n)
				fprintf(out, "# bytes repetitions t[usec] Mbytes/sec\n");
			fprintf(out, "%.0f %.0f %.2f %.2f\n", a, b, c, d);
			n++;
		}
	}
	fclose(in);
	return fclose(out) ? -1 : n;
}

int kwm_plot_pingpong(const char *saved, json_object *rep, const char *png, char *err,
		      size_t errlen)
{
	char base[4096], path[4200], legend[2048] = "";
	bool continuous;
	double t0;
	long n;
	FILE *gp;

	if (kwm_plot_base(png, base, sizeof(base))) {
		snprintf(err, errlen, "--plot '%s': name a .png file", png);
		return -1;
	}
	n = pingpong_dat(saved, base, &continuous, &t0);
	if (n < 0) {
		snprintf(err, errlen, "cannot read %s or write %s-pingpong.dat: %s", saved, base,
			 strerror(errno));
		return -1;
	}
	if (!n) {
		snprintf(err, errlen, "%s holds no PingPong result (neither the table nor "
			 "--continuous rounds)", saved);
		return -1;
	}
	if (rep && !continuous) {
		snprintf(err, errlen, "a report marks phases on a time axis: give the output of "
			 "--continuous");
		return -1;
	}
	if ((size_t)snprintf(path, sizeof(path), "%s.gp", base) >= sizeof(path) ||
	    !(gp = fopen(path, "w"))) {
		snprintf(err, errlen, "cannot write %s.gp: %s", base, strerror(errno));
		return -1;
	}
	fprintf(gp, "# kawarimi-pingpong --plot: restyle and run `gnuplot %s.gp` here.\n"
		"# Data: %s-pingpong.dat (from %s)%s\n", leaf(base), leaf(base), saved,
		rep ? ", phases and blackouts: -cluster-phases.dat" : "");
	fprintf(gp, "set terminal pngcairo size 1100,500 font 'sans,10'\nset output '%s'\n"
		"set grid\nset key outside right top\nset ylabel 'Mbytes/sec (10^6 B/s)'\n", leaf(png));
	if (continuous) {
		fprintf(gp, "set title 'PingPong bandwidth over time%s'\n"
			"set xlabel 'seconds since the first round'\n"
			"set y2label 'slowest exchange per round [usec]'\nset logscale y2\n"
			"set y2tics\nset yrange [0:*]\n",
			rep ? " during the migration (phases shaded, blackouts hatched red)" : "");
		if (rep && kwm_plot_mark_phases(rep, t0, base, gp, legend, sizeof(legend))) {
			fclose(gp);
			snprintf(err, errlen, "cannot write %s-cluster-phases.dat", base);
			return -1;
		}
		fprintf(gp, "plot '%s-pingpong.dat' using 1:6 with lines lw 2 lc rgb '#1f77b4' "
			"title 'Mbytes/sec', \\\n     '%s-pingpong.dat' using 1:5 axes x1y2 with "
			"points pt 7 ps 0.4 lc rgb '#d62728' title 'slowest exchange [usec]'%s\n",
			leaf(base), leaf(base), legend);
	} else {
		fprintf(gp, "set title 'PingPong bandwidth against message size'\n"
			"set xlabel 'message size [bytes]'\nset logscale x 2\n"
			"set format x '2^{%%L}'\nset yrange [0:*]\n"
			"plot '%s-pingpong.dat' using ($1 > 0 ? $1 : NaN):4 with linespoints pt 7 "
			"lw 2 lc rgb '#1f77b4' title 'Mbytes/sec'\n", leaf(base));
	}
	if (fclose(gp)) {
		snprintf(err, errlen, "cannot write %s.gp: %s", base, strerror(errno));
		return -1;
	}
	return kwm_plot_render(base, err, errlen);
}
