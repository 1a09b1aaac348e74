/* SPDX-License-Identifier: MIT */
/*
 * The phases of one VM's migration, each defined once, in the order the
 * scheduler runs them (docs/architecture.md, "One migration, phase by
 * phase").  Every column is read by one part of the coordinator:
 *
 *   ID          the enum constant (KWM_PH_ID)
 *   name        messages, progress, the report, the journal
 *   timeout     the key under limits.timeouts (cluster.c) ...
 *   default_ms  ... and its default
 *   limited     storage and memory: at most limits.parallel VMs at once,
 *               sharing the WAN cap (sched.c, phases.c)
 *   colour      the plot (plot.c)
 *   applies     does the phase run for this VM? (NULL: always)
 *   build       the phase's steps (phases.c, preflight.c)
 *   undo        its part of a rollback, run in reverse order (rollback.c)
 *
 * Every phase is a cluster-wide barrier (sched.c): no VM starts phase N+1
 * before every VM has ended phase N.  Rollback is not a phase of the
 * migration but a program of its own; it has a row for its name, timeout
 * and colour.  The table is an X-macro so that the parts that link only
 * the cluster file (the fuzz harness, `kawarimi report`) can read its
 * plain columns without the functions.
 */
#ifndef KWM_PHASE_H
#define KWM_PHASE_H

#define KWM_PHASES(X) \
	/* ID          name             timeout       default_ms limited colour */ \
	X(PREFLIGHT,  "preflight",     "preflight",  30000,     0, "#9e9e9e", \
	  NULL, kwm_build_preflight, NULL) \
	X(STORAGE,    "storage",       "storage",    3600000,   1, "#1f77b4", \
	  kwm_applies_storage, kwm_build_storage, kwm_undo_storage) \
	X(QUIESCE,    "quiesce",       "quiesce",    60000,     0, "#ff7f0e", \
	  kwm_applies_quiesce, kwm_build_quiesce, kwm_undo_quiesce) \
	X(UNPLUG,     "unplug",        "unplug",     20000,     0, "#8c564b", \
	  kwm_applies_unplug, kwm_build_unplug, kwm_undo_unplug) \
	X(RESUME_SRC, "resume-source", "resume",     120000,    0, "#17becf", \
	  kwm_applies_resume_src, kwm_build_resume_src, NULL) \
	X(MEMORY,     "memory",        "memory",     3600000,   1, "#2ca02c", \
	  NULL, kwm_build_memory, kwm_undo_memory) \
	X(SWITCHOVER, "switchover",    "switchover", 60000,     0, "#9467bd", \
	  NULL, kwm_build_switchover, NULL) \
	X(FINISH,     "finish",        "finish",     30000,     0, "#7f7f7f", \
	  kwm_applies_finish, kwm_build_finish, NULL) \
	X(RESUME,     "resume",        "resume",     120000,    0, "#bcbd22", \
	  kwm_applies_resume, kwm_build_resume, NULL) \
	X(ROLLBACK,   "rollback",      "rollback",   120000,    0, "#e377c2", \
	  NULL, NULL, NULL)

#define KWM_PH_ENUM(id, ...) KWM_PH_##id,
enum kwm_phase { KWM_PHASES(KWM_PH_ENUM) KWM_PH__COUNT };
#undef KWM_PH_ENUM

/* The plain columns (cluster.c). */
struct kwm_phase_info {
	const char *name, *timeout_key;
	long long default_ms;
	int limited;
	const char *colour;
};

extern const struct kwm_phase_info kwm_phase_info[KWM_PH__COUNT];

const char *kwm_phase_name(enum kwm_phase p);

#endif
