/* SPDX-License-Identifier: MIT */
/*
 * What `kawarimi plan` prints after preflight: what the migration would
 * do, VM by VM and phase by phase.
 */
#include <string.h>

#include "run.h"

static const char *str_member(json_object *o, const char *key)
{
	json_object *v;

	if (!o || !json_object_object_get_ex(o, key, &v))
		return "?";
	return json_object_get_string(v);
}

static json_object *node_image(json_object *nodes, const char *name)
{
	for (size_t i = 0; nodes && i < json_object_array_length(nodes); i++) {
		json_object *n = json_object_array_get_idx(nodes, i), *img;

		if (!strcmp(str_member(n, "node-name"), name) &&
		    json_object_object_get_ex(n, "image", &img))
			return img;
	}
	return NULL;
}

static void print_chain(const char *label, json_object *img)
{
	printf("        %-12s", label);
	for (int first = 1; img; first = 0) {
		json_object *b;

		printf("%s%s", first ? "" : " <- ", str_member(img, "filename"));
		img = json_object_object_get_ex(img, "backing-image", &b) ? b : NULL;
	}
	printf("\n");
}

/* What crosses the network how, and who may connect. */
static void print_streams(struct kwm_run *r, const struct kwm_vm_conf *c)
{
	const struct kwm_tls *t = &c->tls;
	bool nbd = r->storage != KWM_STORAGE_SHARED;
	char host[256];
	const char *mig = c->mig_connect ? c->mig_connect : c->mig_listen;
	const char *name = kwm_tls_hostname(c, mig, host, sizeof(host));

	printf("    memory: destination listens on %s, source dials %s\n", c->mig_listen, mig);
	if (nbd)
		printf("    disks: NBD server on %s, at most %zu connection(s), each export "
		       "removed once its mirror is done; source dials %s\n", c->nbd_listen,
		       c->ndisks, c->nbd_connect ? c->nbd_connect : c->nbd_listen);
	if (t->mode == KWM_TLS_X509)
		printf("    encrypted: TLS (x509 from %s) on the memory%s stream%s; the "
		       "destination accepts only the client certificate '%s', the source "
		       "checks the destination's for '%s'%s\n", t->dir, nbd ? " and NBD" : "",
		       nbd ? "s" : "", t->source_dn, name ? name : "?",
		       t->hostname ? "" : " (each stream's connect host)");
	else if (t->mode == KWM_TLS_NONE)
		printf("    NOT encrypted (tls: none): guest memory%s in clear text%s\n",
		       nbd ? " and disk" : "", kwm_vm_remote_uri(c) ? " across the network" : "");
	else
		printf("    not encrypted: the streams stay on this host (unix sockets, loopback)\n");
}

static void print_vm(struct kwm_run *r, struct kwm_vm *vm)
{
	const struct kwm_vm_conf *c = vm->conf;

	printf("  %s: source %s (%s), destination %s (%s)\n", c->name, c->src.qmp,
	       *vm->src_status ? vm->src_status : "?", c->dst.qmp,
	       *vm->dst_status ? vm->dst_status : "?");
	for (size_t d = 0; d < c->ndisks && r->storage != KWM_STORAGE_SHARED; d++) {
		printf("    disk %s -> %s (%s)\n", c->disks[d].src_node, c->disks[d].dst_node,
		       r->storage == KWM_STORAGE_FULL ? "whole disk" : "top overlay only");
		print_chain("source:", node_image(vm->nodes[KWM_SRC], c->disks[d].src_node));
		print_chain("destination:", node_image(vm->nodes[KWM_DST], c->disks[d].dst_node));
	}
	if (r->storage != KWM_STORAGE_SHARED)
		printf("    about %.1f MB to copy (allocated in the images; VMs with more go first)\n",
		       vm->expect_bytes / 1e6);
	print_streams(r, c);
	printf("    phases:");
	for (int p = KWM_PH_PREFLIGHT + 1; p < KWM_PH_ROLLBACK; p++)
		if (kwm_phase_applies(vm, (enum kwm_phase)p))
			printf(" %s", kwm_phase_name((enum kwm_phase)p));
	printf("\n");
	if (c->src.hca)
		printf("    unplug HCA '%s' at the source before the memory migration\n",
		       c->src.hca_id);
	if (c->dst.hca)
		printf("    device_add '%s' (%s) at the destination at switchover\n", c->dst.hca_id,
		       json_object_to_json_string_ext(c->dst.hca, JSON_C_TO_STRING_PLAIN));
	if (!c->src.symvirt)
		printf("    no symvirt agent: quiesce and resume are skipped\n");
	if (*vm->warning)
		printf("    warning: %s\n", vm->warning);
	if (vm->has_error)
		printf("    REFUSED: %s\n", vm->error);
}

void kwm_plan_print(struct kwm_run *r)
{
	if (r->opt.output == KWM_OUT_JSON)
		return;		/* the report event says it all */
	printf("cluster %s: %zu VM(s), storage %s, bandwidth %s, parallel %d, downtime limit "
	       "%lld ms\n", r->c->name, r->nvms, kwm_storage_name(r->storage),
	       r->c->bandwidth ? "capped" : "unlimited", r->c->parallel,
	       (long long)r->c->downtime_ms);
	if (r->c->bandwidth)
		printf("  WAN cap %.1f Mbit/s, shared by up to %d migrations\n",
		       r->c->bandwidth * 8 / 1e6, r->c->parallel);
	for (size_t i = 0; i < r->nvms; i++)
		print_vm(r, &r->vms[i]);
	printf("%s\n", r->first_failure ? "plan: REFUSED (nothing was changed)" :
	       "plan: OK (nothing was changed)");
}
