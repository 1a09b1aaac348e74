/* SPDX-License-Identifier: MIT */
/*
 * What the operator sees while it runs: on a TTY one live line per VM and
 * a cluster line, redrawn in place; with --json one JSON object per line
 * per phase change, message and progress tick; otherwise one plain line
 * per phase change.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "report.h"
#include "run.h"

static void emit(json_object *o)
{
	printf("%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
	fflush(stdout);
	json_object_put(o);
}

static json_object *event(const char *name, const struct kwm_vm *vm)
{
	json_object *o = json_object_new_object();

	json_object_object_add(o, "event", json_object_new_string(name));
	json_object_object_add(o, "time", json_object_new_double(kwm_wall()));
	if (vm)
		json_object_object_add(o, "vm", json_object_new_string(vm->conf->name));
	return o;
}

/* The terminal's size now: read at every redraw, so a resize is followed. */
static void term_size(int *cols, int *rows)
{
	struct winsize ws;

	*cols = 80;
	*rows = 24;
	if (!ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) && ws.ws_col && ws.ws_row) {
		*cols = ws.ws_col;
		*rows = ws.ws_row;
	}
}

/*
 * Moves back to the first line of the block and clears to the end of the
 * screen.  A line drawn at the old width takes more than one row once the
 * terminal was made narrower (terminals that reflow wrap it), so the rows
 * are counted at the width of now.
 */
static void clear_block(struct kwm_run *r)
{
	int cols, rows, up = 0;

	if (r->opt.output != KWM_OUT_TTY || !r->drawn_lines)
		return;
	term_size(&cols, &rows);
	for (int i = 0; i < r->drawn_lines; i++)
		up += r->drawn_len[i] > cols ? (r->drawn_len[i] + cols - 1) / cols : 1;
	printf("\r\033[%dA\033[J", up);
	/* Before a message goes to stderr, which is not buffered. */
	fflush(stdout);
	r->drawn_lines = 0;
}

static double since(struct kwm_run *r)
{
	return kwm_wall() - r->started;
}

/* Appends a point to vm's transfer curves; past KWM_MAX_SAMPLES every
 * other point is dropped, so a long run keeps its whole shape. */
static void sample(struct kwm_vm *vm)
{
	struct kwm_sample *s;

	/* Grown as needed: a VM that moves for a second needs a few points,
	 * not the 128 KiB of a full curve (1000 VMs: 128 MB). */
	if (vm->nsamples == vm->samples_cap && vm->samples_cap < KWM_MAX_SAMPLES) {
		size_t cap = vm->samples_cap ? vm->samples_cap * 4 : 16;
		struct kwm_sample *n;

		if (cap > KWM_MAX_SAMPLES)
			cap = KWM_MAX_SAMPLES;
		n = realloc(vm->samples, cap * sizeof(*n));
		if (!n)
			return;
		vm->samples = n;
		vm->samples_cap = cap;
	}
	if (vm->nsamples == KWM_MAX_SAMPLES) {
		for (size_t i = 1; i < KWM_MAX_SAMPLES / 2; i++)
			vm->samples[i] = vm->samples[2 * i];
		vm->nsamples = KWM_MAX_SAMPLES / 2;
	}
	s = &vm->samples[vm->nsamples++];
	s->t = kwm_wall();
	s->disk = vm->storage_bytes;
	s->mem = vm->mem_bytes;
	s->mem_remaining = vm->mem_remaining;
}

void kwm_progress_phase(struct kwm_run *r, const struct kwm_vm *vm, enum kwm_phase p,
			bool end)
{
	json_object *o;

	if (vm && kwm_phase_info[p].limited)	/* a transfer starts or ends */
		sample(&r->vms[vm->idx]);
	switch (r->opt.output) {
	case KWM_OUT_JSON:
		o = event("phase", vm);
		json_object_object_add(o, "phase", json_object_new_string(kwm_phase_name(p)));
		json_object_object_add(o, "state", json_object_new_string(end ? "end" : "start"));
		if (end)
			json_object_object_add(o, "duration-ms", json_object_new_int64(
				(int64_t)llround((vm->phases[p].end - vm->phases[p].start) * 1000)));
		emit(o);
		break;
	case KWM_OUT_PLAIN:
		if (r->opt.quiet)
			break;
		if (end)
			printf("%8.3f  %-12s %-13s done in %.3f s\n", since(r), vm->conf->name,
			       kwm_phase_name(p), vm->phases[p].end - vm->phases[p].start);
		else
			printf("%8.3f  %-12s %-13s started\n", since(r), vm->conf->name,
			       kwm_phase_name(p));
		fflush(stdout);
		break;
	case KWM_OUT_TTY:
		/* Redrawn by the loop, at most every 100 ms: a thousand VMs
		 * changing phase in one turn draw once, not a thousand times. */
		r->redraw_due = true;
		break;
	}
}

static void draw(struct kwm_run *r);

void kwm_progress_message(struct kwm_run *r, const struct kwm_vm *vm, const char *level,
			  const char *msg)
{
	json_object *o;
	char *safe;
	bool had_block;

	if (r->opt.output == KWM_OUT_JSON) {
		o = event("message", vm);
		json_object_object_add(o, "level", json_object_new_string(level));
		if (vm)
			json_object_object_add(o, "phase",
					       json_object_new_string(kwm_phase_name(vm->phase)));
		json_object_object_add(o, "message", json_object_new_string(msg));
		emit(o);
		return;
	}
	had_block = r->drawn_lines > 0;
	clear_block(r);
	/* msg may quote a guest (an agent's error, a rank's note). */
	safe = kwm_printable(msg);
	fprintf(stderr, "kawarimi: %s%s%s [%s]: %s\n", vm ? vm->conf->name : "",
		vm ? ": " : "", level, vm ? kwm_phase_name(vm->phase) : "-",
		safe ? safe : "(out of memory)");
	free(safe);
	fflush(stderr);
	/* The block comes back under the message at once: left for the
	 * next redraw, the screen showed no progress for up to 100 ms. */
	if (r->opt.output != KWM_OUT_TTY)
		return;
	if (had_block)
		draw(r);
	else
		r->redraw_due = true;
}

static void update_rates(struct kwm_vm *vm)
{
	double now = kwm_wall();

	if (vm->last_storage_t && now > vm->last_storage_t + 0.2) {
		vm->storage_rate = (double)(vm->storage_bytes - vm->last_storage) /
				   (now - vm->last_storage_t);
		vm->last_storage = vm->storage_bytes;
		vm->last_storage_t = now;
	} else if (!vm->last_storage_t) {
		vm->last_storage = vm->storage_bytes;
		vm->last_storage_t = now;
	}
}

static double pct(uint64_t done, uint64_t total)
{
	return total ? 100.0 * (double)done / (double)total : 0;
}

/* A VM idle when the run has ended has nothing left to do (its last
 * phase was not finish: --keep-source, a plan). */
static bool vm_over(const struct kwm_vm *vm)
{
	return vm->state == KWM_VM_DONE || (vm->state == KWM_VM_IDLE && vm->run->ended);
}

static const char *vm_state_word(const struct kwm_vm *vm)
{
	switch (vm->state) {
	case KWM_VM_BUSY: return "";
	case KWM_VM_FAILED: return " FAILED";
	default:
		if (!vm_over(vm))
			return " waiting";
		return vm->rolled_back ? " rolled back" : " done";
	}
}

/*
 * One line of the block, never as wide as the terminal: a line that wraps
 * would take two rows and the next redraw would climb one row short.  A
 * VM's line has a short form for narrow terminals; anything still too
 * long is cut.
 */
static void put_line(struct kwm_run *r, int cols, const char *full, const char *brief)
{
	const char *l = (int)strlen(full) < cols ? full : brief;
	int len = (int)strlen(l);

	if (len > cols - 1)
		len = cols > 1 ? cols - 1 : 0;
	printf("%.*s\n", len, l);
	r->drawn_len[r->drawn_lines++] = len;
}

static void vm_line(struct kwm_run *r, int cols, const struct kwm_vm *vm)
{
	char full[256], brief[128];
	uint64_t mem_done = vm->mem_total - vm->mem_remaining;
	double sp = pct(vm->storage_bytes, vm->storage_total);
	double mp = pct(vm->mem_total ? mem_done : 0, vm->mem_total);

	snprintf(full, sizeof(full),
		 "  %-12s %-13s%-13s storage %5.1f%% %8.1f MB/s   memory %5.1f%% %8.1f MB/s",
		 vm->conf->name, kwm_phase_name(vm->phase), vm_state_word(vm), sp,
		 vm->storage_rate / 1e6, mp, vm->mem_rate / 1e6);
	snprintf(brief, sizeof(brief), "  %s %s%s st %.0f%% mem %.0f%%", vm->conf->name,
		 kwm_phase_name(vm->phase), vm_state_word(vm), sp, mp);
	put_line(r, cols, full, brief);
}

/* Which VMs get a line of their own when not all fit: the ones moving
 * data first, then the failed ones, then the others at work, in the
 * file's order. */
static int line_rank(const struct kwm_vm *vm)
{
	if (kwm_vm_inflight(vm))
		return 0;
	if (vm->state == KWM_VM_FAILED)
		return 1;
	return vm->state == KWM_VM_BUSY ? 2 : 3;
}

/* More VMs than rows: the VMs most worth watching, then one line that
 * counts the rest by what they are doing. */
static void draw_summary(struct kwm_run *r, int cols, size_t shown)
{
	size_t n = 0, rest[4] = { 0 };
	char full[256], brief[128];

	for (int rank = 0; rank < 3 && n < shown; rank++)
		for (size_t i = 0; i < r->nvms && n < shown; i++)
			if (line_rank(&r->vms[i]) == rank) {
				vm_line(r, cols, &r->vms[i]);
				n++;
			}
	for (size_t i = 0; i < r->nvms; i++)
		rest[line_rank(&r->vms[i])]++;
	snprintf(full, sizeof(full), "  (%zu more VMs; of all %zu: %zu moving data, %zu at "
		 "other steps, %zu waiting or done, %zu failed)", r->nvms - n, r->nvms, rest[0],
		 rest[2], rest[3], rest[1]);
	snprintf(brief, sizeof(brief), "  (%zu more VMs)", r->nvms - n);
	put_line(r, cols, full, brief);
}

static void draw(struct kwm_run *r)
{
	char full[256], brief[128];
	size_t done = 0;
	int moving = 0, cols, rows;

	clear_block(r);
	term_size(&cols, &rows);
	r->redraw_due = false;
	r->last_draw = kwm_now_ms();
	if (!r->drawn_len)
		r->drawn_len = calloc(r->nvms + 2, sizeof(*r->drawn_len));
	if (!r->drawn_len)
		return;
	for (size_t i = 0; i < r->nvms; i++) {
		done += vm_over(&r->vms[i]);
		moving += kwm_vm_inflight(&r->vms[i]);
	}
	/* A block taller than the screen could not be climbed back over. */
	if ((int)r->nvms + 2 > rows)
		draw_summary(r, cols, rows > 3 ? (size_t)rows - 3 : 0);
	else
		for (size_t i = 0; i < r->nvms; i++)
			vm_line(r, cols, &r->vms[i]);
	snprintf(full, sizeof(full), "  cluster %s: %zu/%zu VMs done, %d migrating, %.1f s%s",
		 r->c->name, done, r->nvms, moving, since(r),
		 r->rolling_back ? ", ROLLING BACK" : "");
	snprintf(brief, sizeof(brief), "  %s: %zu/%zu done, %.0f s%s", r->c->name, done,
		 r->nvms, since(r), r->rolling_back ? ", ROLLING BACK" : "");
	put_line(r, cols, full, brief);
	fflush(stdout);
}

void kwm_progress_redraw(struct kwm_run *r)
{
	if (r->opt.output != KWM_OUT_TTY || !r->redraw_due ||
	    kwm_now_ms() - r->last_draw < 100)
		return;
	draw(r);
}

/* The job statistics as libvirt names them (virDomainGetJobStats). */
void kwm_job_stats(json_object *o, const struct kwm_vm *vm)
{
	uint64_t disk_left = vm->storage_total > vm->storage_bytes ?
			     vm->storage_total - vm->storage_bytes : 0;

	json_object_object_add(o, "disk_total", json_object_new_int64((int64_t)vm->storage_total));
	json_object_object_add(o, "disk_processed", json_object_new_int64((int64_t)vm->storage_bytes));
	json_object_object_add(o, "disk_remaining", json_object_new_int64((int64_t)disk_left));
	json_object_object_add(o, "memory_total", json_object_new_int64((int64_t)vm->mem_total));
	json_object_object_add(o, "memory_processed", json_object_new_int64((int64_t)vm->mem_bytes));
	json_object_object_add(o, "memory_remaining",
			       json_object_new_int64((int64_t)vm->mem_remaining));
	json_object_object_add(o, "data_total",
			       json_object_new_int64((int64_t)(vm->storage_total + vm->mem_total)));
	json_object_object_add(o, "data_processed",
			       json_object_new_int64((int64_t)(vm->storage_bytes + vm->mem_bytes)));
	json_object_object_add(o, "data_remaining",
			       json_object_new_int64((int64_t)(disk_left + vm->mem_remaining)));
	json_object_object_add(o, "memory_dirty_rate", json_object_new_int64((int64_t)vm->dirty_rate));
	json_object_object_add(o, "memory_page_size", json_object_new_int64((int64_t)vm->page_size));
}

void kwm_progress_tick(struct kwm_run *r, bool force)
{
	int64_t now = kwm_now_ms();

	for (size_t i = 0; i < r->nvms; i++) {
		update_rates(&r->vms[i]);
		if (!force && kwm_vm_inflight(&r->vms[i]))
			sample(&r->vms[i]);
	}
	if (r->opt.output == KWM_OUT_TTY) {
		if (force || now - r->last_draw >= 200)
			draw(r);
		return;
	}
	if (r->opt.output != KWM_OUT_JSON || force)
		return;
	for (size_t i = 0; i < r->nvms; i++) {
		struct kwm_vm *vm = &r->vms[i];
		json_object *o;

		if (!kwm_vm_inflight(vm))
			continue;
		o = event("progress", vm);
		json_object_object_add(o, "phase", json_object_new_string(kwm_phase_name(vm->phase)));
		json_object_object_add(o, "time_elapsed",
				       json_object_new_int64((int64_t)llround(since(r) * 1000)));
		kwm_job_stats(o, vm);
		json_object_object_add(o, "disk_bps", json_object_new_int64(llround(vm->storage_rate)));
		json_object_object_add(o, "memory_bps", json_object_new_int64(llround(vm->mem_rate)));
		emit(o);
	}
}

void kwm_progress_done(struct kwm_run *r)
{
	if (r->opt.output == KWM_OUT_TTY)
		draw(r);
	r->drawn_lines = 0;
	free(r->drawn_len);
	r->drawn_len = NULL;
}
