/* SPDX-License-Identifier: MIT */
/*
 * The report read back: load a --report document or a --json stream, and
 * print it as the table (what `kawarimi migrate` prints at the end),
 * markdown or JSON.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "kawarimi-qmp.h"
#include "phase.h"
#include "report.h"

json_object *kwm_jget(json_object *o, const char *key)
{
	json_object *v;

	return o && json_object_is_type(o, json_type_object) &&
	       json_object_object_get_ex(o, key, &v) ? v : NULL;
}

double kwm_jnum(json_object *o, const char *key)
{
	json_object *v = kwm_jget(o, key);

	return v && (json_object_is_type(v, json_type_int) ||
		     json_object_is_type(v, json_type_double)) ? json_object_get_double(v) : 0;
}

char *kwm_printable(const char *s)
{
	size_t n = strlen(s) + 1;
	char *p = malloc(n);

	if (p)
		kqmp_printable(p, n, s);
	return p;
}

const char *kwm_jstr(json_object *o, const char *key)
{
	json_object *v = kwm_jget(o, key);

	return v && json_object_is_type(v, json_type_string) ? json_object_get_string(v) : "";
}

int kwm_report_format_parse(const char *name, enum kwm_report_format *out)
{
	static const char *const names[] = { "table", "json", "markdown" };

	for (int i = 0; i < 3; i++)
		if (!strcmp(name, names[i])) {
			*out = (enum kwm_report_format)i;
			return 0;
		}
	return -1;
}

/* ---- the table, as text or markdown ------------------------------------ */

/* The phase columns, in the order they run (phase.h). */
#define NCOLS ((size_t)KWM_PH__COUNT)
#define cols(i) ((enum kwm_phase)(i))

struct view {
	FILE *out;
	bool md;
};

/*
 * One row; text: the first two cells left-aligned at 12 and 20, the rest
 * right-aligned at width w; markdown: "| a | b |".
 */
static void row(struct view *v, int n, const char *const *cell, int w)
{
	for (int i = 0; i < n; i++) {
		char c[256];

		/* A report file carries guest texts (VM names, phases) as they were. */
		kqmp_printable(c, sizeof(c), cell[i]);
		if (v->md)
			fprintf(v->out, "| %s ", c);
		else if (i == 0)
			fprintf(v->out, "%-12s", c);
		else if (i == 1 && w > 9)
			fprintf(v->out, " %-20s", c);
		else
			fprintf(v->out, " %*.*s", w, w, c);
	}
	fprintf(v->out, v->md ? "|\n" : "\n");
	if (v->md && n && !strcmp(cell[0], "VM")) {
		for (int i = 0; i < n; i++)
			fprintf(v->out, i < 2 ? "|---" : "|---:");
		fprintf(v->out, "|\n");
	}
}

static json_object *phase_of(json_object *vm, const char *name)
{
	json_object *ph = kwm_jget(vm, "phases");

	for (size_t i = 0; ph && i < json_object_array_length(ph); i++) {
		json_object *p = json_object_array_get_idx(ph, i);

		if (!strcmp(kwm_jstr(p, "phase"), name))
			return p;
	}
	return NULL;
}

static void totals_table(struct view *v, json_object *rep, json_object *vms)
{
	static const char *const head[] = { "VM", "result", "storage MB", "memory MB",
					    "downtime", "blackout" };
	char c[6][32];
	const char *cell[6];
	double sb = 0, mb = 0;

	if (v->md) {
		char name[256], result[64];

		kqmp_printable(name, sizeof(name), kwm_jstr(rep, "cluster"));
		kqmp_printable(result, sizeof(result), kwm_jstr(rep, "result"));
		fprintf(v->out, "## Cluster %s: %s\n\n", name, result);
	} else
		fprintf(v->out, "\n");
	row(v, 6, head, 11);
	for (size_t i = 0; i < json_object_array_length(vms); i++) {
		json_object *vm = json_object_array_get_idx(vms, i);
		double s = kwm_jnum(kwm_jget(vm, "storage"), "bytes");
		double m = kwm_jnum(kwm_jget(vm, "memory"), "bytes");

		sb += s;
		mb += m;
		snprintf(c[2], sizeof(c[2]), "%.1f", s / 1e6);
		snprintf(c[3], sizeof(c[3]), "%.1f", m / 1e6);
		snprintf(c[4], sizeof(c[4]), "%.0fms", kwm_jnum(kwm_jget(vm, "memory"), "downtime-ms"));
		snprintf(c[5], sizeof(c[5]), "%.0fms", kwm_jnum(kwm_jget(vm, "blackout"), "total-ms"));
		cell[0] = kwm_jstr(vm, "name");
		cell[1] = kwm_jstr(vm, "result");
		for (int k = 2; k < 6; k++)
			cell[k] = c[k];
		row(v, 6, cell, 11);
	}
	snprintf(c[2], sizeof(c[2]), "%.1f", sb / 1e6);
	snprintf(c[3], sizeof(c[3]), "%.1f", mb / 1e6);
	cell[0] = "total";
	cell[1] = kwm_jstr(rep, "result");
	cell[2] = c[2];
	cell[3] = c[3];
	row(v, 4, cell, 11);
}

static void phase_table(struct view *v, json_object *vms)
{
	const char *cell[NCOLS + 1];
	char c[NCOLS + 1][16];

	fprintf(v->out, v->md ? "\n### Phase durations [s]\n\n" : "\nphase durations [s]\n");
	cell[0] = "VM";
	for (size_t k = 0; k < NCOLS; k++)
		cell[k + 1] = kwm_phase_name(cols(k));
	row(v, NCOLS + 1, cell, 9);
	for (size_t i = 0; i < json_object_array_length(vms); i++) {
		json_object *vm = json_object_array_get_idx(vms, i);

		cell[0] = kwm_jstr(vm, "name");
		for (size_t k = 0; k < NCOLS; k++) {
			json_object *p = phase_of(vm, kwm_phase_name(cols(k)));

			if (!p)
				snprintf(c[k], sizeof(c[k]), "-");
			else
				snprintf(c[k], sizeof(c[k]), "%.3f",
					 kwm_jnum(p, "end") ? kwm_jnum(p, "end") - kwm_jnum(p, "start") : 0);
			cell[k + 1] = c[k];
		}
		row(v, NCOLS + 1, cell, 9);
	}
}

void kwm_report_print(json_object *rep, enum kwm_report_format f, FILE *out)
{
	struct view v = { .out = out, .md = f == KWM_FMT_MARKDOWN };
	json_object *vms = kwm_jget(rep, "vms"), *e = kwm_jget(rep, "error");

	if (f == KWM_FMT_JSON) {
		fprintf(out, "%s\n", json_object_to_json_string_ext(rep, JSON_C_TO_STRING_PRETTY |
								 JSON_C_TO_STRING_NOSLASHESCAPE));
		return;
	}
	if (!vms || !json_object_is_type(vms, json_type_array))
		return;
	totals_table(&v, rep, vms);
	phase_table(&v, vms);
	if (v.md && e) {
		char *vm = kwm_printable(kwm_jstr(e, "vm")),
		     *phase = kwm_printable(kwm_jstr(e, "phase")),
		     *msg = kwm_printable(kwm_jstr(e, "message"));

		fprintf(out, "\nFirst failure: VM %s in phase %s: %s\n", vm ? vm : "?",
			phase ? phase : "?", msg ? msg : "(out of memory)");
		free(vm);
		free(phase);
		free(msg);
	}
	fprintf(out, v.md ? "\nWall time %.3f s.\n" : "\nwall time %.3f s\n",
		kwm_jnum(rep, "ended") - kwm_jnum(rep, "started"));
}

/* ---- loading ---------------------------------------------------------------- */

static char *slurp(const char *path, size_t *len, char *err, size_t errlen)
{
	FILE *f = fopen(path, "r");
	char *buf = NULL;
	size_t cap = 0, n = 0, got;

	if (!f) {
		snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
		return NULL;
	}
	do {
		if (n + 65536 + 1 > cap) {
			char *nb = realloc(buf, cap = cap * 2 + 65536 + 1);

			if (!nb) {
				free(buf);
				fclose(f);
				snprintf(err, errlen, "%s: out of memory", path);
				return NULL;
			}
			buf = nb;
		}
		got = fread(buf + n, 1, cap - n - 1, f);
		n += got;
	} while (got);
	fclose(f);
	buf[n] = 0;
	*len = n;
	return buf;
}

/* Progress events become the samples of their VM in rep, if it has none. */
static void samples_from_stream(json_object *rep, json_object *progress)
{
	json_object *vms = kwm_jget(rep, "vms");

	for (size_t i = 0; vms && i < json_object_array_length(vms); i++) {
		json_object *vm = json_object_array_get_idx(vms, i), *a;
		json_object *old = kwm_jget(vm, "samples");

		if (old && json_object_array_length(old))
			continue;
		a = json_object_new_array();
		for (size_t k = 0; k < json_object_array_length(progress); k++) {
			json_object *ev = json_object_array_get_idx(progress, k), *s;

			if (strcmp(kwm_jstr(ev, "vm"), kwm_jstr(vm, "name")))
				continue;
			s = json_object_new_object();
			json_object_object_add(s, "time", json_object_new_double(kwm_jnum(ev, "time")));
			json_object_object_add(s, "disk_processed", json_object_get(
				kwm_jget(ev, "disk_processed")));
			json_object_object_add(s, "memory_processed", json_object_get(
				kwm_jget(ev, "memory_processed")));
			json_object_array_add(a, s);
		}
		json_object_object_add(vm, "samples", a);
	}
}

static json_object *from_stream(const char *path, char *buf, char *err, size_t errlen)
{
	json_object *rep = NULL, *progress = json_object_new_array();
	int line = 0;

	for (char *l = strtok(buf, "\n"); l; l = strtok(NULL, "\n")) {
		json_object *ev;

		line++;
		if (!*l)
			continue;
		ev = json_tokener_parse(l);
		if (!ev || !json_object_is_type(ev, json_type_object)) {
			snprintf(err, errlen, "%s:%d: not a JSON object; give a --report file or "
				 "the output of `kawarimi migrate --json`", path, line);
			json_object_put(ev);
			goto fail;
		}
		if (!strcmp(kwm_jstr(ev, "event"), "report")) {
			json_object_put(rep);
			rep = json_object_get(kwm_jget(ev, "report"));
		} else if (!strcmp(kwm_jstr(ev, "event"), "progress")) {
			json_object_array_add(progress, json_object_get(ev));
		}
		json_object_put(ev);
	}
	if (!rep) {
		snprintf(err, errlen, "%s: no \"report\" event in this stream (did the run end?); "
			 "its last line is the report", path);
		goto fail;
	}
	samples_from_stream(rep, progress);
	json_object_put(progress);
	return rep;
fail:
	json_object_put(rep);
	json_object_put(progress);
	return NULL;
}

json_object *kwm_report_load(const char *path, char *err, size_t errlen)
{
	json_tokener *tok;
	json_object *o, *rep = NULL;
	size_t len;
	char *buf = slurp(path, &len, err, errlen);

	if (!buf)
		return NULL;
	/* A report is one document; a stream is one per line. */
	tok = json_tokener_new();
	o = json_tokener_parse_ex(tok, buf, (int)len);
	if (o && json_object_is_type(o, json_type_object) &&
	    !kwm_jget(o, "event") && (size_t)json_tokener_get_parse_end(tok) <= len) {
		const char *rest = buf + json_tokener_get_parse_end(tok);

		rest += strspn(rest, " \t\r\n");
		if (!*rest)
			rep = json_object_get(o);
	}
	json_object_put(o);
	json_tokener_free(tok);
	if (!rep)
		rep = from_stream(path, buf, err, errlen);
	free(buf);
	if (rep && strcmp(kwm_jstr(rep, "report"), "kawarimi-migration")) {
		snprintf(err, errlen, "%s: not a kawarimi migration report (\"report\" is '%s', "
			 "expected 'kawarimi-migration')", path, kwm_jstr(rep, "report"));
		json_object_put(rep);
		return NULL;
	}
	if (rep && kwm_jnum(rep, "version") != 1) {
		snprintf(err, errlen, "%s: report version %g; this kawarimi reads version 1",
			 path, kwm_jnum(rep, "version"));
		json_object_put(rep);
		return NULL;
	}
	if (rep && !json_object_is_type(kwm_jget(rep, "vms"), json_type_array)) {
		snprintf(err, errlen, "%s: the report has no \"vms\" list", path);
		json_object_put(rep);
		return NULL;
	}
	return rep;
}
