/* SPDX-License-Identifier: MIT */
/*
 * The step interpreter: runs one VM's program for the current phase,
 * a step at a time, never blocking.  Replies come back through callbacks
 * that carry a generation number, so a reply that arrives after its step
 * timed out (and was skipped by a tolerant rollback) is recognised and
 * dropped instead of being taken for the answer to a later step.
 */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "run.h"

/* Reply contexts live until the run ends: a late reply may still arrive
 * after its step was given up, and must find valid memory. */
struct kwm_ctx {
	struct kwm_vm *vm;
	uint64_t gen;
	enum kwm_side_id side;
	kwm_reply_fn fn;	/* fire-and-forget commands */
	struct kwm_ctx *next;
};

static struct kwm_ctx *ctx_list;
static uint64_t gen_counter;
bool kwm_closing;


static struct kwm_ctx *ctx_new(struct kwm_vm *vm, enum kwm_side_id side)
{
	struct kwm_ctx *c = calloc(1, sizeof(*c));

	if (!c)
		abort();	/* a few dozen bytes; nothing sensible to do */
	c->vm = vm;
	c->side = side;
	c->gen = ++gen_counter;
	c->next = ctx_list;
	ctx_list = c;
	return c;
}

void kwm_ctx_free_all(void)
{
	while (ctx_list) {
		struct kwm_ctx *n = ctx_list->next;

		free(ctx_list);
		ctx_list = n;
	}
}

int64_t kwm_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

double kwm_wall(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

const char *kwm_side_name(enum kwm_side_id s)
{
	return s == KWM_SRC ? "source" : "destination";
}

struct kwm_op *kwm_op_add(struct kwm_vm *vm, enum kwm_op_kind kind,
			  enum kwm_side_id side, const char *cmd, json_object *args)
{
	struct kwm_op *op;

	if (vm->nops == vm->cap) {
		size_t cap = vm->cap ? vm->cap * 2 : 16;
		struct kwm_op *n = realloc(vm->ops, cap * sizeof(*n));

		if (!n)
			abort();
		vm->ops = n;
		vm->cap = cap;
	}
	op = &vm->ops[vm->nops++];
	memset(op, 0, sizeof(*op));
	op->kind = kind;
	op->side = side;
	op->cmd = cmd ? strdup(cmd) : NULL;
	op->args = args;
	return op;
}

void kwm_ops_clear(struct kwm_vm *vm)
{
	for (size_t i = 0; i < vm->nops; i++) {
		free(vm->ops[i].cmd);
		free(vm->ops[i].what);
		if (vm->ops[i].args)
			json_object_put(vm->ops[i].args);
	}
	vm->nops = 0;
	vm->pc = 0;
	vm->op_pending = false;
	vm->op_deadline = 0;
}

/* Appends as much of s as fits. */
static void append(char *dst, size_t size, const char *s)
{
	size_t l = strlen(dst);

	while (*s && l + 1 < size)
		dst[l++] = *s++;
	dst[l] = 0;
}

void kwm_vm_note(struct kwm_vm *vm, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	size_t l;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (vm->phase == KWM_PH_ROLLBACK) {
		l = strlen(vm->rollback_notes);
		if (l)
			append(vm->rollback_notes, sizeof(vm->rollback_notes), "; ");
		append(vm->rollback_notes, sizeof(vm->rollback_notes), msg);
	}
	kwm_progress_message(vm->run, vm, "note", msg);
}

void kwm_vm_fail(struct kwm_vm *vm, const char *fmt, ...)
{
	struct kwm_run *r = vm->run;
	va_list ap;
	char msg[600];

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (vm->phase == KWM_PH_ROLLBACK) {
		/* A rollback goes on as far as it can; what failed is noted. */
		vm->rollback_incomplete = true;
		kwm_vm_note(vm, "%s", msg);
		return;
	}
	if (vm->state == KWM_VM_FAILED || vm->state == KWM_VM_DONE)
		return;
	vm->has_error = true;
	vm->error_phase = vm->phase;
	snprintf(vm->error, sizeof(vm->error), "%s", msg);
	if (vm->state == KWM_VM_BUSY)	/* an idle VM's last phase had ended well */
		vm->phases[vm->phase].end = kwm_wall();
	vm->state = KWM_VM_FAILED;
	vm->op_pending = false;
	vm->op_gen = 0;
	if (!r->first_failure)
		r->first_failure = vm;
	if (vm->facts & KWM_F_SWITCHED)
		r->failed_after_switchover = true;
	kwm_progress_message(r, vm, "error", msg);
}

static void phase_end(struct kwm_vm *vm)
{
	vm->phases[vm->phase].end = kwm_wall();
	kwm_progress_phase(vm->run, vm, vm->phase, true);
	kwm_ops_clear(vm);
	/* After its last phase a VM stays idle until the run ends (finish
	 * is not the last one: resume follows it). */
	vm->state = vm->phase == KWM_PH_ROLLBACK ? KWM_VM_DONE : KWM_VM_IDLE;
}

void kwm_phase_begin(struct kwm_vm *vm, enum kwm_phase p)
{
	vm->phase = p;
	vm->phases[p].start = kwm_wall();
	vm->phases[p].end = 0;
	vm->phase_ran[p] = true;
	vm->phase_deadline = kwm_now_ms() + vm->run->c->timeout_ms[p];
	vm->state = KWM_VM_BUSY;
	vm->pc = 0;
	vm->op_pending = false;
	vm->op_deadline = 0;
	kwm_progress_phase(vm->run, vm, p, false);
	kwm_vm_step(vm);
}

static void op_done(struct kwm_vm *vm)
{
	vm->op_pending = false;
	vm->op_deadline = 0;
	vm->pc++;
}

static bool op_current(struct kwm_ctx *c)
{
	struct kwm_vm *vm = c->vm;

	return !kwm_closing && vm->state == KWM_VM_BUSY && vm->op_pending &&
	       c->gen == vm->op_gen && vm->pc < vm->nops;
}

static void op_error(struct kwm_vm *vm, struct kwm_op *op, const char *cls,
		     const char *desc)
{
	if (op->error_ok) {
		op_done(vm);
		return;
	}
	if (op->what && !op->tolerant) {
		kwm_vm_fail(vm, "%s: %s at the %s failed: %s%s%s", op->what, op->cmd,
			    kwm_side_name(op->side), cls, *cls ? ": " : "", desc);
		return;
	}
	if (op->tolerant) {
		if (op->essential)
			vm->rollback_incomplete = true;
		kwm_vm_note(vm, "%s at the %s: %s%s%s (going on)", op->cmd,
			    kwm_side_name(op->side), cls, *cls ? ": " : "", desc);
		op_done(vm);
		return;
	}
	kwm_vm_fail(vm, "%s at the %s failed: %s%s%s", op->cmd, kwm_side_name(op->side),
		    cls, *cls ? ": " : "", desc);
}

static void qmp_reply(struct kqmp *q, json_object *ret, const struct kqmp_error *err,
		      void *arg)
{
	struct kwm_ctx *c = arg;
	struct kwm_vm *vm = c->vm;
	struct kwm_op *op;

	(void)q;
	if (c->fn) {		/* fire-and-forget */
		if (ret && !kwm_closing)
			c->fn(vm, NULL, ret);
		if (c->fn == kwm_poll_progress_done)
			vm->poll_pending = false;
		return;
	}
	if (!op_current(c))
		return;
	op = &vm->ops[vm->pc];
	if (err) {
		op_error(vm, op, err->kind == KQMP_E_QMP ? err->cls : kqmp_err_kind_name(err->kind),
			 err->desc);
		return;
	}
	if (op->on_reply)
		op->on_reply(vm, op, ret);
	if (vm->state == KWM_VM_BUSY)
		op_done(vm);
}

static void agent_reply(struct symvirt *s, json_object *ret,
			const struct kqmp_error *err, void *arg)
{
	struct kwm_ctx *c = arg;
	struct kwm_vm *vm = c->vm;
	struct kwm_op *op;

	(void)s;
	if (!op_current(c))
		return;
	op = &vm->ops[vm->pc];
	if (err) {
		op_error(vm, op, err->kind == KQMP_E_QMP ? err->cls :
			 symvirt_err_kind_name(err->kind), err->desc);
		return;
	}
	if (op->on_reply)
		op->on_reply(vm, op, ret);
	if (vm->state == KWM_VM_BUSY)
		op_done(vm);
}

void kwm_qmp_async(struct kwm_vm *vm, enum kwm_side_id side, const char *cmd,
		   json_object *args, kwm_reply_fn on_reply)
{
	struct kwm_ctx *c;

	if (!vm->qmp[side] || vm->qmp_lost[side]) {
		if (args)
			json_object_put(args);
		if (on_reply == kwm_poll_progress_done)
			vm->poll_pending = false;
		return;
	}
	c = ctx_new(vm, side);
	c->fn = on_reply ? on_reply : kwm_ignore_reply;
	if (strncmp(cmd, "query-", 6))
		kwm_journal(vm->run, vm, side == KWM_SRC ? "source" : "destination", cmd, args, 0);
	if (!kqmp_send(vm->qmp[side], cmd, args, qmp_reply, c) &&
	    on_reply == kwm_poll_progress_done)
		vm->poll_pending = false;
	kwm_io_dirty(vm);
}

void kwm_agent_async(struct kwm_vm *vm, enum kwm_side_id side, const char *cmd,
		     json_object *args)
{
	struct kwm_ctx *c;

	if (!vm->agent[side] || vm->agent_lost[side]) {
		if (args)
			json_object_put(args);
		return;
	}
	/* A context no step waits for: agent_reply() drops the answer. */
	c = ctx_new(vm, side);
	c->fn = kwm_ignore_reply;
	symvirt_send(vm->agent[side], cmd, args, agent_reply, c);
	kwm_io_dirty(vm);
}

void kwm_ignore_reply(struct kwm_vm *vm, struct kwm_op *op, json_object *ret)
{
	(void)vm;
	(void)op;
	(void)ret;
}

int kwm_qemu_version(json_object *v, int *major, int *minor, int *micro)
{
	json_object *q, *maj, *min, *mic;

	if (!v || !json_object_object_get_ex(v, "qemu", &q) ||
	    !json_object_object_get_ex(q, "major", &maj) ||
	    !json_object_object_get_ex(q, "minor", &min) ||
	    !json_object_object_get_ex(q, "micro", &mic))
		return -1;
	*major = json_object_get_int(maj);
	*minor = json_object_get_int(min);
	*micro = json_object_get_int(mic);
	return 0;
}

json_object *kwm_obj(const char *spec, ...)
{
	json_object *o = json_object_new_object();
	char key[64];
	va_list ap;

	va_start(ap, spec);
	while (*spec) {
		const char *eq = strchr(spec, '=');
		size_t kl = (size_t)(eq - spec);

		if (!eq || kl >= sizeof(key))
			abort();	/* a bug in a spec literal */
		memcpy(key, spec, kl);
		key[kl] = 0;
		switch (eq[1]) {
		case 's':
			json_object_object_add(o, key, json_object_new_string(va_arg(ap, const char *)));
			break;
		case 'i':
			json_object_object_add(o, key, json_object_new_int64(va_arg(ap, int64_t)));
			break;
		case 'b':
			json_object_object_add(o, key, json_object_new_boolean(va_arg(ap, int)));
			break;
		case 'o':
			json_object_object_add(o, key, va_arg(ap, json_object *));
			break;
		default:
			abort();
		}
		spec = eq + 2;
		while (*spec == ' ')
			spec++;
	}
	va_end(ap);
	return o;
}

static int64_t op_timeout(struct kwm_vm *vm, const struct kwm_op *op)
{
	if (op->timeout_ms)
		return kwm_now_ms() + op->timeout_ms;
	/* Tolerant steps belong to a rollback: each gets a short leash so one
	 * dead peer cannot eat the whole rollback. */
	if (op->tolerant)
		return kwm_now_ms() + 15000;
	return vm->phase_deadline;
}

/* The bookkeeping every command shares, QMP or symvirt: journal it before
 * it is taken, note what it changes, and wait for one reply at a time. */
static struct kwm_ctx *op_begin(struct kwm_vm *vm, struct kwm_op *op, const char *who)
{
	struct kwm_ctx *c;

	kwm_journal(vm->run, vm, who, op->cmd, op->args, op->fact);
	vm->facts |= op->fact;
	c = ctx_new(vm, op->side);
	vm->op_gen = c->gen;
	vm->op_pending = true;
	vm->op_deadline = op_timeout(vm, op);
	return c;
}

/* The send consumed op->args either way; a refused send fails the op. */
static void op_sent(struct kwm_vm *vm, struct kwm_op *op, bool ok, const char *why)
{
	op->args = NULL;
	if (!ok) {
		vm->op_pending = false;
		op_error(vm, op, "", why);
	}
}

static void send_qmp(struct kwm_vm *vm, struct kwm_op *op)
{
	struct kqmp *q = vm->qmp[op->side];
	struct kwm_ctx *c;

	if (!q || vm->qmp_lost[op->side]) {
		op_error(vm, op, "", vm->qmp_lost[op->side] ? "the QMP connection is lost" :
			 "not connected");
		return;
	}
	c = op_begin(vm, op, op->side == KWM_SRC ? "source" : "destination");
	op_sent(vm, op, kqmp_send(q, op->cmd, op->args, qmp_reply, c) != 0,
		"the QMP connection has failed");
	kwm_io_dirty(vm);
}

static void send_agent(struct kwm_vm *vm, struct kwm_op *op)
{
	struct symvirt *s = vm->agent[op->side];
	struct kwm_ctx *c;

	if (!s || vm->agent_lost[op->side]) {
		op_error(vm, op, "", s ? "the symvirt connection is lost" : "no symvirt agent");
		return;
	}
	c = op_begin(vm, op, op->side == KWM_SRC ? "source-agent" : "destination-agent");
	op_sent(vm, op, symvirt_send(s, op->cmd, op->args, agent_reply, c) != 0,
		"the symvirt connection has failed");
	kwm_io_dirty(vm);
}

void kwm_vm_step(struct kwm_vm *vm)
{
	while (vm->state == KWM_VM_BUSY && !vm->op_pending) {
		struct kwm_op *op;

		if (vm->pc >= vm->nops) {
			phase_end(vm);
			return;
		}
		op = &vm->ops[vm->pc];
		if (op->cond && !op->cond(vm, op)) {
			op_done(vm);
			continue;
		}
		switch (op->kind) {
		case KWM_OP_CALL: {
			/* fn may add steps (and move vm->ops): read op first. */
			bool tolerant = op->tolerant;
			char what[96];

			snprintf(what, sizeof(what), "%s", op->what ? op->what : "a step");
			vm->facts |= op->fact;
			if (op->fn(vm) && !tolerant && vm->state == KWM_VM_BUSY)
				kwm_vm_fail(vm, "%s failed", what);
			if (vm->state == KWM_VM_BUSY)
				op_done(vm);
			break;
		}
		case KWM_OP_WAIT:
			if (op->until(vm)) {
				op_done(vm);
				break;
			}
			if (!vm->op_deadline)
				vm->op_deadline = op_timeout(vm, op);
			return;
		case KWM_OP_QMP:
			send_qmp(vm, op);
			break;
		case KWM_OP_AGENT:
			send_agent(vm, op);
			break;
		}
	}
}

/* QEMU serves one client per QMP socket; a second one connects but is
 * never greeted, which looks like a hang. */
static const char *silent_monitor_hint(struct kwm_vm *vm, const struct kwm_op *op)
{
	if (vm->phase != KWM_PH_PREFLIGHT || !op || op->kind != KWM_OP_QMP ||
	    !vm->qmp[op->side] || kqmp_get_state(vm->qmp[op->side]) != KQMP_HANDSHAKE)
		return "";
	return " (QEMU never greeted us: is another client connected to that QMP socket? "
	       "QEMU serves one at a time)";
}

void kwm_vm_check_timeouts(struct kwm_vm *vm, int64_t now)
{
	struct kwm_op *op;

	if (vm->state != KWM_VM_BUSY)
		return;
	if (vm->phase_deadline && now >= vm->phase_deadline) {
		if (vm->phase == KWM_PH_ROLLBACK) {
			kwm_vm_note(vm, "rollback did not finish within %lld ms "
				    "(limits.timeouts.rollback)",
				    (long long)vm->run->c->timeout_ms[KWM_PH_ROLLBACK]);
			vm->rollback_incomplete = true;
			phase_end(vm);
			return;
		}
		op = vm->pc < vm->nops ? &vm->ops[vm->pc] : NULL;
		kwm_vm_fail(vm, "%s did not finish within %lld ms (limits.timeouts.%s)%s%s%s%s",
			    kwm_phase_name(vm->phase),
			    (long long)vm->run->c->timeout_ms[vm->phase],
			    kwm_phase_info[vm->phase].timeout_key,
			    op ? "; it was " : "",
			    op ? (op->what ? op->what : "waiting for the reply to ") : "",
			    op && !op->what && op->cmd ? op->cmd : "",
			    silent_monitor_hint(vm, op));
		return;
	}
	if (!vm->op_deadline || now < vm->op_deadline || vm->pc >= vm->nops)
		return;
	op = &vm->ops[vm->pc];
	if (op->tolerant) {
		if (op->essential)
			vm->rollback_incomplete = true;
		kwm_vm_note(vm, "%s%s at the %s: no answer in time (going on)",
			    op->what ? op->what : "", op->what ? "" : op->cmd,
			    kwm_side_name(op->side));
		vm->op_gen = 0;		/* its late reply is dropped */
		op_done(vm);
		kwm_vm_step(vm);
		return;
	}
	kwm_vm_fail(vm, "%s%s at the %s: timed out", op->what ? op->what : "",
		    op->what ? "" : op->cmd, kwm_side_name(op->side));
}
