/* SPDX-License-Identifier: MIT */
/*
 * The report: one JSON document (--report FILE; shape in docs/migrate.md)
 * and a summary table on stdout.
 */
#include <errno.h>
#include <math.h>
#include <string.h>

#include "report.h"
#include "run.h"

static int64_t ms(double a, double b)
{
	return (a && b) ? (int64_t)llround((b - a) * 1000) : 0;
}

static const char *vm_result(const struct kwm_vm *vm)
{
	const struct kwm_run *r = vm->run;

	if (vm->where == KWM_AT_LOST)
		return "lost";
	if (vm->rolled_forward)
		return vm->where == KWM_AT_DEST ? "rolled-forward" : "roll-forward-incomplete";
	if (vm->rolled_back)
		return vm->rollback_incomplete ? "rollback-incomplete" : "rolled-back";
	if (vm->has_error)
		return vm->error_phase == KWM_PH_PREFLIGHT ? "refused" : "failed";
	if (r->opt.plan_only)
		return "planned";
	if (vm->facts & KWM_F_SWITCHED)
		return "migrated";
	return "not-migrated";	/* another VM failed before this one changed */
}

const char *kwm_run_result(const struct kwm_run *r);
const char *kwm_run_result(const struct kwm_run *r)
{
	bool incomplete = false, lost = false, here = false, there = false;

	for (size_t i = 0; i < r->nvms; i++) {
		const struct kwm_vm *vm = &r->vms[i];

		incomplete |= vm->rollback_incomplete;
		lost |= vm->where == KWM_AT_LOST;
		here |= vm->where == KWM_AT_SOURCE;
		there |= vm->where == KWM_AT_DEST;
	}
	if (r->opt.recover)	/* no failure of its own: where the VMs are says it */
		return lost ? "vm-lost" : incomplete ? "rollback-incomplete" :
		       here && there ? "partial" : there ? "rolled-forward" :
		       "rolled-back";
	if (!r->first_failure)
		return r->opt.plan_only ? "planned" : "completed";
	if (lost)
		return "vm-lost";
	if (r->failed_after_switchover)
		return "failed-after-switchover";
	if (r->first_failure->error_phase == KWM_PH_PREFLIGHT)
		return "refused";
	if (incomplete)
		return "rollback-incomplete";
	return here && there ? "partial" : there ? "rolled-forward" : "rolled-back";
}

static json_object *version_string(json_object *v)
{
	int maj, min, mic;
	char buf[48];

	if (kwm_qemu_version(v, &maj, &min, &mic))
		return NULL;
	snprintf(buf, sizeof(buf), "%d.%d.%d", maj, min, mic);
	return json_object_new_string(buf);
}

static json_object *side_json(const struct kwm_vm *vm, enum kwm_side_id s)
{
	const struct kwm_side *side = s == KWM_SRC ? &vm->conf->src : &vm->conf->dst;
	json_object *o = json_object_new_object();
	const char *st = s == KWM_SRC ? vm->src_status : vm->dst_status;

	json_object_object_add(o, "qmp", json_object_new_string(side->qmp));
	json_object_object_add(o, "symvirt", side->symvirt ?
			       json_object_new_string(side->symvirt) : NULL);
	json_object_object_add(o, "hca", side->hca_id ? json_object_new_string(side->hca_id) : NULL);
	json_object_object_add(o, "status", *st ? json_object_new_string(st) : NULL);
	json_object_object_add(o, "qemu", version_string(s == KWM_SRC ? vm->src_version :
							 vm->dst_version));
	return o;
}

static json_object *phases_json(const struct kwm_vm *vm)
{
	json_object *a = json_object_new_array();

	for (int p = 0; p < KWM_PH__COUNT; p++) {
		json_object *o;

		if (!vm->phase_ran[p])
			continue;
		o = json_object_new_object();
		json_object_object_add(o, "phase", json_object_new_string(kwm_phase_name(p)));
		json_object_object_add(o, "start", json_object_new_double(vm->phases[p].start));
		json_object_object_add(o, "end", vm->phases[p].end ?
				       json_object_new_double(vm->phases[p].end) : NULL);
		json_object_object_add(o, "duration-ms", vm->phases[p].end ?
				       json_object_new_int64(ms(vm->phases[p].start,
								vm->phases[p].end)) : NULL);
		json_object_array_add(a, o);
	}
	return a;
}

static json_object *storage_json(const struct kwm_vm *vm)
{
	json_object *o = json_object_new_object(), *disks = json_object_new_array();

	json_object_object_add(o, "mode", json_object_new_string(kwm_storage_name(vm->run->storage)));
	json_object_object_add(o, "bytes", json_object_new_int64((int64_t)vm->storage_bytes));
	json_object_object_add(o, "length", json_object_new_int64((int64_t)vm->storage_total));
	for (size_t d = 0; d < vm->conf->ndisks; d++) {
		json_object *dj = json_object_new_object();

		json_object_object_add(dj, "source", json_object_new_string(vm->conf->disks[d].src_node));
		json_object_object_add(dj, "destination",
				       json_object_new_string(vm->conf->disks[d].dst_node));
		json_object_object_add(dj, "bytes", json_object_new_int64((int64_t)vm->disks[d].offset));
		json_object_object_add(dj, "length", json_object_new_int64((int64_t)vm->disks[d].len));
		json_object_array_add(disks, dj);
	}
	json_object_object_add(o, "disks", disks);
	return o;
}

static json_object *memory_json(const struct kwm_vm *vm)
{
	json_object *o = json_object_new_object();

	json_object_object_add(o, "bytes", json_object_new_int64((int64_t)vm->mem_bytes));
	json_object_object_add(o, "ram-size", json_object_new_int64((int64_t)vm->mem_total));
	json_object_object_add(o, "total-time-ms", json_object_new_int64(vm->mem_total_ms));
	json_object_object_add(o, "setup-time-ms", json_object_new_int64(vm->setup_ms));
	json_object_object_add(o, "downtime-ms", json_object_new_int64(vm->downtime_ms));
	return o;
}

static int64_t blackout_ms(const struct kwm_vm *vm)
{
	int64_t t = 0;

	for (int i = 0; i < vm->nblackout; i++)
		t += ms(vm->blackout[i].start, vm->blackout[i].end);
	return t;
}

static json_object *blackout_json(const struct kwm_vm *vm)
{
	json_object *o, *spans;

	if (!vm->conf->src.symvirt)
		return NULL;	/* no agent: the coordinator cannot know */
	o = json_object_new_object();
	spans = json_object_new_array();
	for (int i = 0; i < vm->nblackout; i++) {
		json_object *s = json_object_new_object();

		json_object_object_add(s, "why", json_object_new_string(vm->blackout_why[i]));
		json_object_object_add(s, "start", json_object_new_double(vm->blackout[i].start));
		json_object_object_add(s, "end", vm->blackout[i].end ?
				       json_object_new_double(vm->blackout[i].end) : NULL);
		json_object_object_add(s, "duration-ms", json_object_new_int64(
			ms(vm->blackout[i].start, vm->blackout[i].end)));
		json_object_array_add(spans, s);
	}
	json_object_object_add(o, "spans", spans);
	json_object_object_add(o, "total-ms", json_object_new_int64(blackout_ms(vm)));
	json_object_object_add(o, "includes-memory-migration",
			       json_object_new_boolean(vm->run->opt.hold_job));
	return o;
}

/* The totals under libvirt's job-statistics names (virsh domjobinfo). */
static json_object *job_json(const struct kwm_vm *vm)
{
	json_object *o = json_object_new_object();
	double first = 0, last = 0, st = 0;

	for (int p = 0; p < KWM_PH__COUNT; p++) {
		if (!vm->phase_ran[p])
			continue;
		if (!first || vm->phases[p].start < first)
			first = vm->phases[p].start;
		if (vm->phases[p].end > last)
			last = vm->phases[p].end;
	}
	if (vm->phase_ran[KWM_PH_STORAGE] && vm->phases[KWM_PH_STORAGE].end)
		st = vm->phases[KWM_PH_STORAGE].end - vm->phases[KWM_PH_STORAGE].start;
	json_object_object_add(o, "time_elapsed", json_object_new_int64(ms(first, last)));
	json_object_object_add(o, "setup_time", json_object_new_int64(vm->setup_ms));
	json_object_object_add(o, "downtime", json_object_new_int64(vm->downtime_ms));
	kwm_job_stats(o, vm);
	json_object_object_add(o, "disk_bps", json_object_new_int64(
		st > 0 ? llround((double)vm->storage_bytes / st) : 0));
	json_object_object_add(o, "memory_bps", json_object_new_int64(llround(vm->mem_rate)));
	return o;
}

static json_object *samples_json(const struct kwm_vm *vm)
{
	json_object *a = json_object_new_array();

	for (size_t i = 0; i < vm->nsamples; i++) {
		const struct kwm_sample *s = &vm->samples[i];
		json_object *o = kwm_obj("disk_processed=i memory_processed=i memory_remaining=i",
					 (int64_t)s->disk, (int64_t)s->mem,
					 (int64_t)s->mem_remaining);

		json_object_object_add(o, "time", json_object_new_double(s->t));
		json_object_array_add(a, o);
	}
	return a;
}

/* How the VM's streams crossed: "x509", "none" (tls: none), or "local"
 * (no tls key: unix sockets and loopback only). */
static const char *tls_name(const struct kwm_vm *vm)
{
	switch (vm->conf->tls.mode) {
	case KWM_TLS_X509: return "x509";
	case KWM_TLS_NONE: return "none";
	default: return "local";
	}
}

static json_object *vm_json(const struct kwm_vm *vm)
{
	json_object *o = json_object_new_object(), *e = NULL, *rb = NULL;

	json_object_object_add(o, "name", json_object_new_string(vm->conf->name));
	json_object_object_add(o, "result", json_object_new_string(vm_result(vm)));
	if (vm->has_error) {
		e = json_object_new_object();
		json_object_object_add(e, "phase", json_object_new_string(kwm_phase_name(vm->error_phase)));
		json_object_object_add(e, "message", json_object_new_string(vm->error));
	}
	json_object_object_add(o, "error", e);
	json_object_object_add(o, "source", side_json(vm, KWM_SRC));
	json_object_object_add(o, "destination", side_json(vm, KWM_DST));
	json_object_object_add(o, "phases", phases_json(vm));
	json_object_object_add(o, "storage", storage_json(vm));
	json_object_object_add(o, "tls", json_object_new_string(tls_name(vm)));
	json_object_object_add(o, "memory", memory_json(vm));
	json_object_object_add(o, "blackout", blackout_json(vm));
	json_object_object_add(o, "job", job_json(vm));
	json_object_object_add(o, "samples", samples_json(vm));
	if (vm->rolled_back) {
		rb = json_object_new_object();
		json_object_object_add(rb, "complete", json_object_new_boolean(!vm->rollback_incomplete));
		json_object_object_add(rb, "source-status", json_object_new_string(vm->src_status));
		json_object_object_add(rb, "hca-restored", json_object_new_boolean(
			vm->hca_readded || vm->hca_present));
		json_object_object_add(rb, "notes", json_object_new_string(vm->rollback_notes));
	}
	json_object_object_add(o, "rollback", rb);
	json_object_object_add(o, "where", json_object_new_string(kwm_vm_where(vm)));
	json_object_object_add(o, "lost", *vm->lost_note ? json_object_new_string(vm->lost_note) :
			       NULL);
	json_object_object_add(o, "warning", *vm->warning ? json_object_new_string(vm->warning) : NULL);
	return o;
}

json_object *kwm_report_json(struct kwm_run *r)
{
	json_object *o = json_object_new_object(), *opt = json_object_new_object();
	json_object *vms = json_object_new_array(), *tot = json_object_new_object(), *e = NULL;
	uint64_t sb = 0, mb = 0;
	int64_t maxdown = 0, maxblack = 0;

	json_object_object_add(o, "report", json_object_new_string("kawarimi-migration"));
	json_object_object_add(o, "version", json_object_new_int(1));
	json_object_object_add(o, "cluster", json_object_new_string(r->c->name));
	json_object_object_add(o, "file", json_object_new_string(r->c->file));
	json_object_object_add(o, "storage", json_object_new_string(kwm_storage_name(r->storage)));
	json_object_object_add(opt, "hold-job", json_object_new_boolean(r->opt.hold_job));
	json_object_object_add(opt, "keep-source", json_object_new_boolean(r->opt.keep_source));
	json_object_object_add(opt, "bandwidth", json_object_new_int64((int64_t)r->c->bandwidth));
	json_object_object_add(opt, "parallel", json_object_new_int(r->c->parallel));
	json_object_object_add(opt, "downtime-limit-ms", json_object_new_int64(r->c->downtime_ms));
	json_object_object_add(o, "options", opt);
	json_object_object_add(o, "result", json_object_new_string(kwm_run_result(r)));
	if (r->first_failure) {
		const struct kwm_vm *f = r->first_failure;

		e = json_object_new_object();
		json_object_object_add(e, "vm", json_object_new_string(f->conf->name));
		json_object_object_add(e, "phase", json_object_new_string(kwm_phase_name(f->error_phase)));
		json_object_object_add(e, "message", json_object_new_string(f->error));
	}
	json_object_object_add(o, "error", e);
	json_object_object_add(o, "started", json_object_new_double(r->started));
	json_object_object_add(o, "ended", json_object_new_double(r->ended));
	json_object_object_add(o, "duration-ms", json_object_new_int64(ms(r->started, r->ended)));
	json_object_object_add(o, "max-parallel-seen", json_object_new_int(r->max_inflight_seen));
	for (size_t i = 0; i < r->nvms; i++) {
		const struct kwm_vm *vm = &r->vms[i];

		json_object_array_add(vms, vm_json(vm));
		sb += vm->storage_bytes;
		mb += vm->mem_bytes;
		if (vm->downtime_ms > maxdown)
			maxdown = vm->downtime_ms;
		if (blackout_ms(vm) > maxblack)
			maxblack = blackout_ms(vm);
	}
	json_object_object_add(o, "vms", vms);
	json_object_object_add(tot, "storage-bytes", json_object_new_int64((int64_t)sb));
	json_object_object_add(tot, "memory-bytes", json_object_new_int64((int64_t)mb));
	json_object_object_add(tot, "bytes", json_object_new_int64((int64_t)(sb + mb)));
	json_object_object_add(tot, "max-downtime-ms", json_object_new_int64(maxdown));
	json_object_object_add(tot, "max-blackout-ms", json_object_new_int64(maxblack));
	json_object_object_add(o, "totals", tot);
	json_object_object_add(o, "coordinator", kwm_coordinator_json(r));
	return o;
}

void kwm_report_table(struct kwm_run *r, FILE *out)
{
	json_object *o = kwm_report_json(r);

	kwm_report_print(o, KWM_FMT_TABLE, out);
	json_object_put(o);
}

int kwm_report_write(struct kwm_run *r, const char *path, char *err, size_t errlen)
{
	json_object *o = kwm_report_json(r);
	FILE *f = fopen(path, "w");
	int rc = 0;

	if (!f) {
		snprintf(err, errlen, "cannot write the report to %s: %s", path, strerror(errno));
		json_object_put(o);
		return -1;
	}
	fprintf(f, "%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY |
							   JSON_C_TO_STRING_NOSLASHESCAPE));
	if (fclose(f)) {
		snprintf(err, errlen, "cannot write the report to %s: %s", path, strerror(errno));
		rc = -1;
	}
	json_object_put(o);
	return rc;
}
