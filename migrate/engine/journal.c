/* SPDX-License-Identifier: MIT */
/*
 * The journal: what a migration did, written before it does it, so that
 * `kawarimi recover` can finish the job after the coordinator itself died
 * (docs/reliability.md).  One JSON object per line:
 *
 *   {"t":..., "journal":1, "cluster":..., "file":..., "pid":..., ...}   header
 *   {"t":..., "vm":..., "phase":..., "side":..., "execute":..., "fact":N}  a step
 *   {"t":..., "vm":..., "fact":"memory-complete", ...}                    what became true
 *   {"t":..., "end":"completed", "where":{"vm1":"destination", ...}}      the end
 *
 * A step line is written and fsync'd before its command is sent, a fact
 * line as soon as its reply or event is in: a journal never claims less
 * than what happened.  A run without an "end" line did not finish.
 *
 * Every migrate journals; the file and a lock live in the state directory
 * (KAWARIMI_STATE_DIR, else /var/lib/kawarimi for root, else
 * $XDG_STATE_HOME/kawarimi or ~/.local/state/kawarimi), named after the
 * cluster.  The lock (flock, holding the owner's pid) keeps a second
 * migrate or recover of the same cluster away while one runs.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "journal.h"
#include "run.h"

static int mkdirs(const char *path)
{
	char buf[4096];

	if (snprintf(buf, sizeof(buf), "%s", path) >= (int)sizeof(buf))
		return -1;
	for (char *p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = 0;
		if (mkdir(buf, 0700) && errno != EEXIST)
			return -1;
		*p = '/';
	}
	return mkdir(buf, 0700) && errno != EEXIST ? -1 : 0;
}

int kwm_state_dir(char *buf, size_t len)
{
	const char *env = getenv("KAWARIMI_STATE_DIR"), *home;
	int n;

	if (env && *env)
		n = snprintf(buf, len, "%s", env);
	else if (geteuid() == 0)
		n = snprintf(buf, len, "/var/lib/kawarimi");
	else if ((env = getenv("XDG_STATE_HOME")) && *env)
		n = snprintf(buf, len, "%s/kawarimi", env);
	else if ((home = getenv("HOME")) && *home)
		n = snprintf(buf, len, "%s/.local/state/kawarimi", home);
	else
		return -1;
	return n > 0 && (size_t)n < len ? 0 : -1;
}

/* The cluster's name as a file name: anything but [A-Za-z0-9._-] is '_'. */
static void file_name(const char *name, char *out, size_t len)
{
	size_t i;

	for (i = 0; name[i] && i + 1 < len; i++) {
		char ch = name[i];

		out[i] = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
			 (ch >= '0' && ch <= '9') || ch == '-' || ch == '_' ||
			 (ch == '.' && i) ? ch : '_';
	}
	out[i] = 0;
}

int kwm_journal_default(const char *cluster, char *buf, size_t len)
{
	char dir[3072], name[256];

	if (kwm_state_dir(dir, sizeof(dir)))
		return -1;
	file_name(cluster, name, sizeof(name));
	return snprintf(buf, len, "%s/%s.journal", dir, name) < (int)len ? 0 : -1;
}

int kwm_lock_cluster(const char *cluster, int *fd_out, char *err, size_t errlen)
{
	char dir[3072], name[256], path[4096], pid[32] = "";
	int fd;
	ssize_t n;

	if (kwm_state_dir(dir, sizeof(dir)) || mkdirs(dir)) {
		snprintf(err, errlen, "cannot create the state directory '%s': %s; set "
			 "KAWARIMI_STATE_DIR to a writable directory", dir, strerror(errno));
		return -1;
	}
	file_name(cluster, name, sizeof(name));
	snprintf(path, sizeof(path), "%s/%s.lock", dir, name);
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0) {
		snprintf(err, errlen, "cannot open the lock %s: %s", path, strerror(errno));
		return -1;
	}
	if (flock(fd, LOCK_EX | LOCK_NB)) {
		n = pread(fd, pid, sizeof(pid) - 1, 0);
		pid[n > 0 ? n : 0] = 0;
		pid[strcspn(pid, "\n")] = 0;
		snprintf(err, errlen, "cluster '%s' is being migrated or recovered by pid %s "
			 "(lock %s); wait for it, or stop it first", cluster, *pid ? pid : "?",
			 path);
		close(fd);
		return -1;
	}
	n = snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());
	if (ftruncate(fd, 0) || pwrite(fd, pid, (size_t)n, 0) != n) {
		snprintf(err, errlen, "cannot write the lock %s: %s", path, strerror(errno));
		close(fd);
		return -1;
	}
	*fd_out = fd;
	return 0;
}

/* ---- writing --------------------------------------------------------------- */

/* The loop's latency includes the disk's: each fsync is counted. */
static int timed_fsync(struct kwm_run *r)
{
	int64_t t0 = kwm_now_us(), d;
	int rc = fsync(fileno(r->journal));

	d = kwm_now_us() - t0;
	r->stats.journal_syncs++;
	r->stats.sync_us += d;
	kwm_hist_add(r->stats.sync_hist, &r->stats.sync_max_us, d);
	return rc;
}

static void put_line(struct kwm_run *r, json_object *o, bool sync)
{
	if (!r->journal) {
		json_object_put(o);
		return;
	}
	json_object_object_add(o, "t", json_object_new_double(kwm_wall()));
	fprintf(r->journal, "%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
	json_object_put(o);
	r->stats.journal_lines++;
	if (r->journal_batch) {
		/* The loop syncs before anything leaves the process. */
		r->journal_dirty |= sync;
		return;
	}
	if (fflush(r->journal) || (sync && timed_fsync(r)))
		r->journal_error = errno ? errno : EIO;
}

void kwm_journal_sync(struct kwm_run *r)
{
	if (!r->journal)
		return;
	errno = 0;
	if (fflush(r->journal) || (r->journal_dirty && timed_fsync(r)))
		r->journal_error = errno ? errno : EIO;
	r->journal_dirty = false;
}

/* A journal left by a run that did not end: its header, or NULL. */
static json_object *unfinished(const char *path)
{
	struct kwm_jrun j;
	json_object *h = NULL;

	if (kwm_journal_read(path, &j, NULL, 0))
		return NULL;
	if (!j.ended && j.header)
		h = json_object_get(j.header);
	kwm_journal_read_free(&j);
	return h;
}

int kwm_journal_open(struct kwm_run *r, char *err, size_t errlen)
{
	const char *path = r->opt.journal_file;
	json_object *h, *v;
	int fd;

	if (!path) {
		if (kwm_journal_default(r->c->name, r->journal_path, sizeof(r->journal_path))) {
			snprintf(err, errlen, "no state directory for the journal (set "
				 "KAWARIMI_STATE_DIR or HOME)");
			return -1;
		}
	} else {
		snprintf(r->journal_path, sizeof(r->journal_path), "%s", path);
	}
	h = unfinished(r->journal_path);
	if (h) {
		snprintf(err, errlen, "the journal %s holds a run of cluster '%s' (pid %s) that "
			 "did not finish; run `kawarimi recover %s` first: it finishes or undoes "
			 "that run", r->journal_path, r->c->name,
			 json_object_object_get_ex(h, "pid", &v) ? json_object_get_string(v) : "?",
			 r->c->file);
		json_object_put(h);
		return -1;
	}
	/* The previous run's journal is kept, one generation. */
	if (!access(r->journal_path, F_OK)) {
		char old[sizeof(r->journal_path) + 8];

		snprintf(old, sizeof(old), "%s.prev", r->journal_path);
		rename(r->journal_path, old);
	}
	fd = open(r->journal_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0 || !(r->journal = fdopen(fd, "w"))) {
		snprintf(err, errlen, "cannot create the journal %s: %s", r->journal_path,
			 strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	kwm_journal_header(r, "migrate");
	return r->journal_error ? -1 : 0;
}

void kwm_journal_header(struct kwm_run *r, const char *command)
{
	json_object *o = json_object_new_object(), *names = json_object_new_array();
	char cwd[2048];

	for (size_t i = 0; i < r->nvms; i++)
		json_object_array_add(names, json_object_new_string(r->vms[i].conf->name));
	json_object_object_add(o, "journal", json_object_new_int(1));
	json_object_object_add(o, "command", json_object_new_string(command));
	json_object_object_add(o, "kawarimi", json_object_new_string(KAWARIMI_VERSION));
	json_object_object_add(o, "cluster", json_object_new_string(r->c->name));
	json_object_object_add(o, "file", json_object_new_string(r->c->file));
	if (getcwd(cwd, sizeof(cwd)))
		json_object_object_add(o, "cwd", json_object_new_string(cwd));
	json_object_object_add(o, "pid", json_object_new_int64(getpid()));
	json_object_object_add(o, "storage", json_object_new_string(kwm_storage_name(r->storage)));
	json_object_object_add(o, "keep-source", json_object_new_boolean(r->opt.keep_source));
	json_object_object_add(o, "vms", names);
	put_line(r, o, true);
}

void kwm_journal(struct kwm_run *r, const struct kwm_vm *vm, const char *side,
		 const char *cmd, json_object *args, unsigned fact)
{
	json_object *o = json_object_new_object();

	json_object_object_add(o, "vm", json_object_new_string(vm->conf->name));
	json_object_object_add(o, "phase", json_object_new_string(kwm_phase_name(vm->phase)));
	json_object_object_add(o, "side", json_object_new_string(side));
	json_object_object_add(o, "execute", json_object_new_string(cmd));
	if (args)
		json_object_object_add(o, "arguments", json_object_get(args));
	if (fact)
		json_object_object_add(o, "fact", json_object_new_int64(fact));
	/* Queries change nothing: no need to wait for the disk. */
	put_line(r, o, strncmp(cmd, "query-", 6) && strcmp(cmd, "hello") && strcmp(cmd, "renew"));
}

void kwm_journal_fact(struct kwm_vm *vm, const char *fact, json_object *data)
{
	json_object *o = json_object_new_object();

	json_object_object_add(o, "vm", json_object_new_string(vm->conf->name));
	json_object_object_add(o, "fact", json_object_new_string(fact));
	if (data)
		json_object_object_add(o, "data", data);
	put_line(vm->run, o, true);
}

void kwm_journal_end(struct kwm_run *r, const char *result)
{
	json_object *o = json_object_new_object(), *where = json_object_new_object();

	for (size_t i = 0; i < r->nvms; i++)
		json_object_object_add(where, r->vms[i].conf->name,
				       json_object_new_string(kwm_vm_where(&r->vms[i])));
	json_object_object_add(o, "end", json_object_new_string(result));
	json_object_object_add(o, "where", where);
	put_line(r, o, true);
}

/* ---- reading ------------------------------------------------------------------ */

static struct kwm_jvm *jvm(struct kwm_jrun *j, const char *name)
{
	struct kwm_jvm *n;

	for (size_t i = 0; i < j->nvms; i++)
		if (!strcmp(j->vms[i].name, name))
			return &j->vms[i];
	if (j->nvms == KWM_JOURNAL_MAX_VMS)
		return NULL;
	n = &j->vms[j->nvms++];
	memset(n, 0, sizeof(*n));
	snprintf(n->name, sizeof(n->name), "%s", name);
	return n;
}

static const char *get_str(json_object *o, const char *key)
{
	json_object *v;

	return json_object_object_get_ex(o, key, &v) && json_object_is_type(v, json_type_string) ?
	       json_object_get_string(v) : NULL;
}

/* What one step line says was started. */
static void step_line(struct kwm_jvm *v, json_object *o)
{
	const char *phase = get_str(o, "phase"), *side = get_str(o, "side"),
		   *cmd = get_str(o, "execute");
	json_object *f;

	if (!phase || !side || !cmd)
		return;
	if (!strcmp(phase, "rollback") || !strcmp(phase, "recover")) {
		v->undo_steps++;
		return;
	}
	if (json_object_object_get_ex(o, "fact", &f) && json_object_is_type(f, json_type_int))
		v->facts |= (unsigned)json_object_get_int64(f);
	if (!strcmp(cmd, "quiesce"))
		v->quiesce_sent[!strcmp(side, "destination-agent")] = v->lease_open = true;
	if (!strcmp(cmd, "resume"))
		v->resume_sent[!strcmp(side, "destination-agent")] = true;
	snprintf(v->last_phase, sizeof(v->last_phase), "%s", phase);
}

static void fact_line(struct kwm_jvm *v, const char *fact, json_object *o)
{
	json_object *d = NULL, *s;

	json_object_object_get_ex(o, "data", &d);
	if (!strcmp(fact, "memory-complete"))
		v->memory_complete = true;
	else if (!strcmp(fact, "cont-answered"))
		v->cont_answered = true;
	else if (!strcmp(fact, "source-status") && d &&
		 json_object_object_get_ex(d, "status", &s))
		v->src_was_running = !strcmp(json_object_get_string(s), "running");
	else if (!strcmp(fact, "resumed"))
		v->lease_open = false;
	else if (!strcmp(fact, "source-gone"))
		v->source_gone = true;
}

static int parse_line(struct kwm_jrun *j, json_object *o, char *err, size_t errlen)
{
	const char *vm = get_str(o, "vm"), *fact = get_str(o, "fact"), *end = get_str(o, "end");
	struct kwm_jvm *v;

	if (json_object_object_get_ex(o, "journal", NULL)) {
		if (j->header)
			json_object_put(j->header);
		j->header = json_object_get(o);
		j->ended = false;
		return 0;
	}
	if (end) {
		j->ended = true;
		snprintf(j->result, sizeof(j->result), "%s", end);
		return 0;
	}
	if (!vm)
		return 0;
	v = jvm(j, vm);
	if (!v) {
		snprintf(err, errlen, "more than %d VMs", KWM_JOURNAL_MAX_VMS);
		return -1;
	}
	if (fact)
		fact_line(v, fact, o);
	else
		step_line(v, o);
	return 0;
}

int kwm_journal_read(const char *path, struct kwm_jrun *j, char *err, size_t errlen)
{
	char *line = NULL, dummy[8];
	size_t cap = 0;
	ssize_t n;
	FILE *f = fopen(path, "r");
	int rc = 0;

	memset(j, 0, sizeof(*j));
	if (!err) {
		err = dummy;
		errlen = sizeof(dummy);
	}
	if (!f) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return -1;
	}
	j->vms = calloc(KWM_JOURNAL_MAX_VMS, sizeof(*j->vms));
	if (!j->vms) {
		fclose(f);
		return -1;
	}
	while (!rc && (n = getline(&line, &cap, f)) > 0) {
		json_object *o = json_tokener_parse(line);

		/* A torn last line (the coordinator died writing it) is what a
		 * crash leaves: everything before it stands. */
		if (!o || !json_object_is_type(o, json_type_object))
			j->torn_lines++;
		else
			rc = parse_line(j, o, err, errlen);
		json_object_put(o);
	}
	free(line);
	fclose(f);
	return rc;
}

void kwm_journal_read_free(struct kwm_jrun *j)
{
	if (j->header)
		json_object_put(j->header);
	free(j->vms);
	memset(j, 0, sizeof(*j));
}

const struct kwm_jvm *kwm_journal_vm(const struct kwm_jrun *j, const char *name)
{
	for (size_t i = 0; i < j->nvms; i++)
		if (!strcmp(j->vms[i].name, name))
			return &j->vms[i];
	return NULL;
}
