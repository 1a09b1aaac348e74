/* SPDX-License-Identifier: MIT */
/* The journal (journal.c): written by every migrate, read by recover. */
#ifndef KWM_JOURNAL_H
#define KWM_JOURNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <json-c/json.h>

struct kwm_run;
struct kwm_vm;

#define KWM_JOURNAL_MAX_VMS 4096

/* What the journal says about one VM. */
struct kwm_jvm {
	char name[128];
	unsigned facts;			/* enum kwm_fact of the steps sent */
	bool quiesce_sent[2], resume_sent[2];	/* per side: source, destination */
	bool lease_open;		/* a quiesce sent and no resume answered since */
	bool memory_complete;		/* the destination had it all */
	bool cont_answered;
	bool src_was_running;
	bool source_gone;
	unsigned undo_steps;		/* steps of a rollback or recover */
	char last_phase[32];
};

struct kwm_jrun {
	json_object *header;		/* the last run's header line */
	bool ended;
	char result[64];
	struct kwm_jvm *vms;
	size_t nvms;
	unsigned torn_lines;
};

/* The state directory and the cluster's default journal in it. */
int kwm_state_dir(char *buf, size_t len);
int kwm_journal_default(const char *cluster, char *buf, size_t len);
/* Takes the cluster's lock (flock, our pid written in it): 0 and *fd, or
 * -1 with err naming the pid that holds it. */
int kwm_lock_cluster(const char *cluster, int *fd, char *err, size_t errlen);

/* Opens r's journal (r->opt.journal_file or the default), refusing one
 * left unfinished, and writes the header. */
int kwm_journal_open(struct kwm_run *r, char *err, size_t errlen);
void kwm_journal_header(struct kwm_run *r, const char *command);
void kwm_journal(struct kwm_run *r, const struct kwm_vm *vm, const char *side,
		 const char *cmd, json_object *args, unsigned fact);
/* Something became true (data consumed); fsync'd. */
void kwm_journal_fact(struct kwm_vm *vm, const char *fact, json_object *data);
void kwm_journal_end(struct kwm_run *r, const char *result);
/* Flushes and fsyncs the lines written since the last sync (the loop's
 * grouped commit: r->journal_batch). */
void kwm_journal_sync(struct kwm_run *r);

int kwm_journal_read(const char *path, struct kwm_jrun *j, char *err, size_t errlen);
void kwm_journal_read_free(struct kwm_jrun *j);
const struct kwm_jvm *kwm_journal_vm(const struct kwm_jrun *j, const char *name);

#endif
