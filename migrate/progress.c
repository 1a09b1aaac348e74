/* SPDX-License-Identifier: MIT */
/*
 * What the operator sees while it runs: on a TTY one live line per VM and
 * a cluster line, redrawn in place; with --json one JSON object per line
 * per phase change, message and progress tick; otherwise one plain line
 * per phase change.
 */
#include <math.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

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

static void clear_block(struct kwm_run *r)
{
	if (r->opt.output != KWM_OUT_TTY || !r->drawn_lines)
		return;
	printf("\033[%dA", r->drawn_lines);
	for (int i = 0; i < r->drawn_lines; i++)
		printf("\033[2K\n");
	printf("\033[%dA", r->drawn_lines);
	r->drawn_lines = 0;
}

static double since(struct kwm_run *r)
{
	return kwm_wall() - r->started;
}

void kwm_progress_phase(struct kwm_run *r, const struct kwm_vm *vm, enum kwm_phase p,
			bool end)
{
	json_object *o;

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
		kwm_progress_tick(r, true);
		break;
	}
}

void kwm_progress_message(struct kwm_run *r, const struct kwm_vm *vm, const char *level,
			  const char *msg)
{
	json_object *o;

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
	clear_block(r);
	fprintf(stderr, "kawarimi: %s%s%s [%s]: %s\n", vm ? vm->conf->name : "",
		vm ? ": " : "", level, vm ? kwm_phase_name(vm->phase) : "-", msg);
	fflush(stderr);
	if (r->opt.output == KWM_OUT_TTY)
		kwm_progress_tick(r, true);
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

static const char *vm_state_word(const struct kwm_vm *vm)
{
	switch (vm->state) {
	case KWM_VM_BUSY: return "";
	case KWM_VM_FAILED: return " FAILED";
	case KWM_VM_DONE: return vm->rolled_back ? " rolled back" : " done";
	default: return " waiting";
	}
}

static void draw(struct kwm_run *r)
{
	size_t done = 0;
	int moving = 0;

	clear_block(r);
	for (size_t i = 0; i < r->nvms; i++) {
		struct kwm_vm *vm = &r->vms[i];
		uint64_t mem_done = vm->mem_total - vm->mem_remaining;

		if (vm->state == KWM_VM_DONE)
			done++;
		printf("  %-12s %-13s%-13s storage %5.1f%% %8.1f MB/s   memory %5.1f%% %8.1f MB/s\n",
		       vm->conf->name, kwm_phase_name(vm->phase), vm_state_word(vm),
		       pct(vm->storage_bytes, vm->storage_total), vm->storage_rate / 1e6,
		       pct(vm->mem_total ? mem_done : 0, vm->mem_total), vm->mem_rate / 1e6);
	}
	for (size_t i = 0; i < r->nvms; i++)
		moving += kwm_vm_inflight(&r->vms[i]);
	printf("  cluster %s: %zu/%zu VMs done, %d migrating, %.1f s%s\n", r->c->name, done,
	       r->nvms, moving, since(r), r->rolling_back ? ", ROLLING BACK" : "");
	fflush(stdout);
	r->drawn_lines = (int)r->nvms + 1;
}

void kwm_progress_tick(struct kwm_run *r, bool force)
{
	int64_t now = kwm_now_ms();

	for (size_t i = 0; i < r->nvms; i++)
		update_rates(&r->vms[i]);
	if (r->opt.output == KWM_OUT_TTY) {
		if (force || now - r->last_draw >= 200) {
			r->last_draw = now;
			draw(r);
		}
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
		json_object_object_add(o, "storage-bytes", json_object_new_int64((int64_t)vm->storage_bytes));
		json_object_object_add(o, "storage-total", json_object_new_int64((int64_t)vm->storage_total));
		json_object_object_add(o, "storage-rate", json_object_new_double(vm->storage_rate));
		json_object_object_add(o, "memory-bytes", json_object_new_int64((int64_t)vm->mem_bytes));
		json_object_object_add(o, "memory-total", json_object_new_int64((int64_t)vm->mem_total));
		json_object_object_add(o, "memory-remaining",
				       json_object_new_int64((int64_t)vm->mem_remaining));
		json_object_object_add(o, "memory-rate", json_object_new_double(vm->mem_rate));
		emit(o);
	}
}

void kwm_progress_done(struct kwm_run *r)
{
	if (r->opt.output == KWM_OUT_TTY)
		draw(r);
	r->drawn_lines = 0;
}
