/* SPDX-License-Identifier: MIT */
/*
 * Preflight: look at both ends of every VM and refuse, clearly, anything
 * that would make the migration fail half-way.  Nothing is changed here:
 * only query-* and qom-get are sent, and a symvirt hello.
 */
#include <libgen.h>
#include <string.h>

#include "run.h"

static struct kwm_op *query(struct kwm_vm *vm, enum kwm_side_id side, const char *cmd,
			    json_object *args, kwm_reply_fn fn, const char *what)
{
	struct kwm_op *op = kwm_op_add(vm, KWM_OP_QMP, side, cmd, args);

	op->on_reply = fn;
	op->what = strdup(what);
	return op;
}

static const char *str_member(json_object *o, const char *key)
{
	json_object *v;

	if (!o || !json_object_object_get_ex(o, key, &v))
		return NULL;
	return json_object_get_string(v);
}

static void src_status(struct kwm_vm *vm, struct kwm_op *op, json_object *ret)
{
	const char *s = str_member(ret, "status");

	(void)op;
	snprintf(vm->src_status, sizeof(vm->src_status), "%s", s ? s : "?");
	vm->src_was_running = s && !strcmp(s, "running");
	if (!s || (strcmp(s, "running") && strcmp(s, "paused")))
		kwm_vm_fail(vm, "the source QEMU (%s) is '%s'; only a running or paused VM "
			    "can be migrated", vm->conf->src.qmp, vm->src_status);
}

static void dst_status(struct kwm_vm *vm, struct kwm_op *op, json_object *ret)
{
	const char *s = str_member(ret, "status");

	(void)op;
	snprintf(vm->dst_status, sizeof(vm->dst_status), "%s", s ? s : "?");
	if (!s || strcmp(s, "inmigrate"))
		kwm_vm_fail(vm, "the destination QEMU (%s) is '%s', not waiting for a "
			    "migration; start it with -incoming defer -S", vm->conf->dst.qmp,
			    vm->dst_status);
}

static void src_hca_type(struct kwm_vm *vm, struct kwm_op *op, json_object *ret)
{
	json_object *drv;
	const char *want;

	(void)op;
	if (!json_object_object_get_ex(vm->conf->src.hca, "driver", &drv))
		return;
	want = json_object_get_string(drv);
	if (strcmp(json_object_get_string(ret), want))
		kwm_vm_fail(vm, "the source's device '%s' is a '%s', but the cluster file says "
			    "driver: %s; fix source.hca", vm->conf->src.hca_id,
			    json_object_get_string(ret), want);
}

static void dst_has_src_hca(struct kwm_vm *vm, struct kwm_op *op, json_object *ret)
{
	(void)op;
	(void)ret;
	kwm_vm_fail(vm, "the destination already has a device '%s' (the source's HCA id); "
		    "start the destination without it: the HCA is unplugged before the "
		    "memory migration", vm->conf->src.hca_id);
}

static void dst_has_dst_hca(struct kwm_vm *vm, struct kwm_op *op, json_object *ret)
{
	(void)op;
	(void)ret;
	kwm_vm_fail(vm, "the destination already has a device '%s'; destination.hca is "
		    "device_added at switchover, so start the destination without it",
		    vm->conf->dst.hca_id);
}

static void keep_nodes(struct kwm_vm *vm, struct kwm_op *op, json_object *ret)
{
	if (vm->nodes[op->side])
		json_object_put(vm->nodes[op->side]);
	vm->nodes[op->side] = json_object_get(ret);
}

static int record_versions(struct kwm_vm *vm)
{
	for (int s = 0; s < 2; s++) {
		json_object *v = vm->qmp[s] ? kqmp_version(vm->qmp[s]) : NULL;

		if (!v)
			continue;
		if (s == KWM_SRC)
			vm->src_version = json_object_get(v);
		else
			vm->dst_version = json_object_get(v);
	}
	return 0;
}

/* ---- disks: the node at each end and its backing chain ---------------- */

static json_object *find_node(json_object *nodes, const char *name)
{
	for (size_t i = 0; nodes && i < json_object_array_length(nodes); i++) {
		json_object *n = json_object_array_get_idx(nodes, i);
		const char *nn = str_member(n, "node-name");

		if (nn && !strcmp(nn, name))
			return n;
	}
	return NULL;
}

static void node_names(json_object *nodes, char *buf, size_t len)
{
	size_t off = 0;

	buf[0] = 0;
	for (size_t i = 0; nodes && i < json_object_array_length(nodes) && off < len; i++) {
		const char *nn = str_member(json_object_array_get_idx(nodes, i), "node-name");

		if (nn && strncmp(nn, "#block", 6))
			off += (size_t)snprintf(buf + off, len - off, "%s%s", off ? ", " : "", nn);
	}
	if (!buf[0])
		snprintf(buf, len, "none with a name");
}

static int64_t vsize(json_object *image)
{
	json_object *v;

	return image && json_object_object_get_ex(image, "virtual-size", &v) ?
	       json_object_get_int64(v) : -1;
}

static json_object *backing(json_object *image)
{
	json_object *b;

	return image && json_object_object_get_ex(image, "backing-image", &b) ? b : NULL;
}

static const char *base_name(const char *path, char *buf, size_t len)
{
	snprintf(buf, len, "%s", path ? path : "?");
	return basename(buf);
}

/* Incremental needs the same base below both tops: same depth, and each
 * level the same virtual size and format.  File names may differ per site;
 * a difference is only worth a warning. */
static int check_chain(struct kwm_vm *vm, const struct kwm_disk *d, json_object *si,
		       json_object *di)
{
	json_object *sb = backing(si), *db = backing(di);
	char a[256], b[256];
	int level = 1;

	if (!sb) {
		kwm_vm_fail(vm, "disk '%s' has no backing image at the source, so incremental "
			    "would move nothing the destination lacks; use --storage full",
			    d->src_node);
		return -1;
	}
	for (; sb; sb = backing(sb), db = backing(db), level++) {
		if (!db) {
			kwm_vm_fail(vm, "the base image of disk '%s' is missing at the destination: "
				    "node '%s' has %d backing level(s), the source has more; create "
				    "the destination's overlay on a copy of '%s' (qemu-img create -f "
				    "qcow2 -b BASE -F qcow2 ...) or use --storage full", d->src_node,
				    d->dst_node, level - 1, str_member(sb, "filename"));
			return -1;
		}
		if (vsize(sb) != vsize(db) ||
		    strcmp(str_member(sb, "format") ? str_member(sb, "format") : "",
			   str_member(db, "format") ? str_member(db, "format") : "")) {
			kwm_vm_fail(vm, "the base image of disk '%s' differs: source '%s' (%s, %lld "
				    "bytes), destination '%s' (%s, %lld bytes); the destination needs "
				    "a copy of the same base", d->src_node,
				    str_member(sb, "filename"), str_member(sb, "format"),
				    (long long)vsize(sb), str_member(db, "filename"),
				    str_member(db, "format"), (long long)vsize(db));
			return -1;
		}
		const char *an = base_name(str_member(sb, "filename"), a, sizeof(a));
		const char *bn = base_name(str_member(db, "filename"), b, sizeof(b));

		if (strcmp(an, bn))
			snprintf(vm->warning, sizeof(vm->warning), "disk '%s': the base is '%s' "
				 "at the source and '%s' at the destination (same size and format)",
				 d->src_node, an, bn);
	}
	if (db) {
		kwm_vm_fail(vm, "disk '%s' has a deeper backing chain at the destination than at "
			    "the source; its overlay must sit directly on the same base",
			    d->dst_node);
		return -1;
	}
	return 0;
}

/* A destination overlay that already holds data (an earlier attempt, say)
 * keeps whatever the source's overlay does not overwrite: worth a word. */
static void warn_if_not_empty(struct kwm_vm *vm, const struct kwm_disk *d, json_object *di)
{
	json_object *v;
	int64_t size;

	if (vm->run->storage != KWM_STORAGE_INCREMENTAL ||
	    !json_object_object_get_ex(di, "actual-size", &v))
		return;
	size = json_object_get_int64(v);
	if (size > (4 << 20))
		snprintf(vm->warning, sizeof(vm->warning), "disk '%s': the destination's overlay "
			 "already takes %.1f MB; blocks the source's overlay does not have stay as "
			 "they are there: start from an empty overlay unless this is a retry",
			 d->dst_node, size / 1e6);
}

/* What the mirror will copy, roughly: the allocated bytes of the top (and
 * with full, of the whole chain), from each image's actual-size. */
static uint64_t expected_copy(json_object *image, bool whole_chain)
{
	uint64_t sum = 0;
	json_object *v;

	for (; image; image = whole_chain ? backing(image) : NULL)
		if (json_object_object_get_ex(image, "actual-size", &v))
			sum += (uint64_t)json_object_get_int64(v);
	return sum;
}

static int check_disks(struct kwm_vm *vm)
{
	const struct kwm_vm_conf *c = vm->conf;
	char names[512];

	for (size_t i = 0; i < c->ndisks; i++) {
		const struct kwm_disk *d = &c->disks[i];
		json_object *sn = find_node(vm->nodes[KWM_SRC], d->src_node);
		json_object *dn = find_node(vm->nodes[KWM_DST], d->dst_node);
		json_object *si, *di;

		if (!sn) {
			node_names(vm->nodes[KWM_SRC], names, sizeof(names));
			kwm_vm_fail(vm, "no block node '%s' at the source; its nodes are: %s",
				    d->src_node, names);
			return -1;
		}
		if (!dn) {
			node_names(vm->nodes[KWM_DST], names, sizeof(names));
			kwm_vm_fail(vm, "no block node '%s' at the destination; its nodes are: %s "
				    "(set disks[].destination)", d->dst_node, names);
			return -1;
		}
		json_object_object_get_ex(sn, "image", &si);
		json_object_object_get_ex(dn, "image", &di);
		if (vsize(si) != vsize(di)) {
			kwm_vm_fail(vm, "disk '%s' is %lld bytes at the source but '%s' is %lld at "
				    "the destination; create the destination image with the same size",
				    d->src_node, (long long)vsize(si), d->dst_node,
				    (long long)vsize(di));
			return -1;
		}
		if (vm->run->storage == KWM_STORAGE_INCREMENTAL && check_chain(vm, d, si, di))
			return -1;
		warn_if_not_empty(vm, d, di);
		vm->expect_bytes += expected_copy(si, vm->run->storage == KWM_STORAGE_FULL);
	}
	if (*vm->warning && !vm->run->opt.plan_only)
		kwm_progress_message(vm->run, vm, "warning", vm->warning);
	return 0;
}

/* ---- a TCG source on QEMU before 9.0 ------------------------------------ */

static void src_kvm(struct kwm_vm *vm, struct kwm_op *op, json_object *ret)
{
	json_object *v;

	(void)op;
	vm->src_tcg = json_object_object_get_ex(ret, "enabled", &v) && !json_object_get_boolean(v);
}

static void src_ram(struct kwm_vm *vm, struct kwm_op *op, json_object *ret)
{
	json_object *v;

	(void)op;
	if (json_object_object_get_ex(ret, "base-memory", &v))
		vm->src_ram_bytes = json_object_get_int64(v);
}

/*
 * QEMU before 9.0 loses guest writes in a TCG live migration when a RAM
 * block is a whole number of 256 KiB: its fast dirty-bitmap sync cleared
 * dirty bits without re-arming the TCG TLB (fixed upstream in 2024 by
 * "physmem: ... cpu_physical_memory_dirty_bits_cleared"); the lab caught
 * it as a guest kernel fault after the move (docs/lab.md).  KVM keeps its
 * own dirty log and is not affected.  A warning, not a refusal: a lab may
 * know what it does.
 */
static int warn_tcg(struct kwm_vm *vm)
{
	int major, minor, micro;
	char msg[400];

	if (!vm->src_tcg || kwm_qemu_version(vm->src_version, &major, &minor, &micro) ||
	    major >= 9 || vm->src_ram_bytes <= 0 ||
	    vm->src_ram_bytes % (256 << 10))
		return 0;
	snprintf(msg, sizeof(msg), "the source QEMU (%d.%d.%d) runs the guest under TCG with %lld "
		 "bytes of RAM, a whole number of 256 KiB: before QEMU 9.0 such a live "
		 "migration can lose guest writes; use KVM, QEMU 9.0 or later, or a RAM size "
		 "that is not a multiple of 256 KiB (docs/migrate.md)", major, minor, micro,
		 (long long)vm->src_ram_bytes);
	kwm_progress_message(vm->run, vm, "warning", msg);
	return 0;
}

/* tls: none was written on purpose; say so at every run all the same. */
static int warn_clear_text(struct kwm_vm *vm)
{
	const char *uri = kwm_vm_remote_uri(vm->conf);

	if (vm->conf->tls.mode != KWM_TLS_NONE || !uri)
		return 0;
	snprintf(vm->warning, sizeof(vm->warning), "tls: none: the migration and NBD streams "
		 "cross the network in clear text (%s); guest memory and disk can be read "
		 "and changed on the way", uri);
	kwm_progress_message(vm->run, vm, "warning", vm->warning);
	return 0;
}

void kwm_build_preflight(struct kwm_vm *vm)
{
	const struct kwm_vm_conf *c = vm->conf;
	char what[200];
	struct kwm_op *op;

	query(vm, KWM_SRC, "query-status", NULL, src_status, "checking the source's run state");
	query(vm, KWM_DST, "query-status", NULL, dst_status,
	      "checking that the destination waits for a migration");
	kwm_op_add(vm, KWM_OP_CALL, KWM_SRC, NULL, NULL)->fn = record_versions;
	/* Answered by every QEMU since 1.x; an error (a simulator) is fine. */
	query(vm, KWM_SRC, "query-kvm", NULL, src_kvm, "asking the source's accelerator")->error_ok = true;
	query(vm, KWM_SRC, "query-memory-size-summary", NULL, src_ram,
	      "asking the source's RAM size")->error_ok = true;
	kwm_op_add(vm, KWM_OP_CALL, KWM_SRC, NULL, NULL)->fn = warn_tcg;
	if (c->src.hca) {
		char path[200];

		snprintf(path, sizeof(path), "/machine/peripheral/%s", c->src.hca_id);
		snprintf(what, sizeof(what), "looking for the HCA '%s' at the source "
			 "(source.hca.id)", c->src.hca_id);
		query(vm, KWM_SRC, "qom-get", kwm_obj("path=s property=s", path, "type"),
		      src_hca_type, what);
		op = query(vm, KWM_DST, "qom-get", kwm_obj("path=s property=s", path, "type"),
			   dst_has_src_hca, "checking the destination lacks the source's HCA");
		op->error_ok = true;
	}
	if (c->dst.hca) {
		char path[200];

		snprintf(path, sizeof(path), "/machine/peripheral/%s", c->dst.hca_id);
		op = query(vm, KWM_DST, "qom-get", kwm_obj("path=s property=s", path, "type"),
			   dst_has_dst_hca, "checking the destination's HCA id is free");
		op->error_ok = true;
	}
	if (vm->run->storage != KWM_STORAGE_SHARED) {
		query(vm, KWM_SRC, "query-named-block-nodes", NULL, keep_nodes,
		      "listing the source's block nodes");
		query(vm, KWM_DST, "query-named-block-nodes", NULL, keep_nodes,
		      "listing the destination's block nodes");
		op = kwm_op_add(vm, KWM_OP_CALL, KWM_SRC, NULL, NULL);
		op->fn = check_disks;
		op->what = strdup("comparing the disks");
	}
	if (c->src.symvirt)
		kwm_add_hello(vm, KWM_SRC);
	kwm_op_add(vm, KWM_OP_CALL, KWM_SRC, NULL, NULL)->fn = warn_clear_text;
}
