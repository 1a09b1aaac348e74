/* SPDX-License-Identifier: MIT */
/*
 * Reading a migration report back (docs/migrate.md, "The report"): the
 * table, markdown and JSON views of `kawarimi report` and of the table
 * `kawarimi migrate` prints, and the gnuplot pictures (docs/report.md).
 * Works on the JSON document alone, so a saved report and a live run
 * print the same; depends on json-c only (kawarimi-pingpong links it too).
 */
#ifndef KWM_REPORT_H
#define KWM_REPORT_H

#include <stdbool.h>
#include <stdio.h>
#include <json-c/json.h>

enum kwm_report_format { KWM_FMT_TABLE, KWM_FMT_JSON, KWM_FMT_MARKDOWN };

/* 0 and *out set, or -1 for a name that is not table, json or markdown. */
int kwm_report_format_parse(const char *name, enum kwm_report_format *out);
void kwm_report_print(json_object *rep, enum kwm_report_format f, FILE *out);

/*
 * Loads FILE, a --report document or a saved --json event stream (the
 * "report" event; progress events fill in the samples of a report that
 * has none).  Returns the report (caller puts it) or NULL with a message
 * naming the file, the line and the fix in err.
 */
json_object *kwm_report_load(const char *path, char *err, size_t errlen);

/* A copy of s (caller frees; NULL on ENOMEM) safe for a terminal: guest
 * texts (agent errors, rank notes, device names) reach messages, reports
 * and progress lines, and their control characters must not act there
 * (kqmp_printable: '?' instead).  JSON output keeps the raw, escaped text. */
char *kwm_printable(const char *s);

/* Members by name; NULL, 0 or "" when absent or of another type. */
json_object *kwm_jget(json_object *o, const char *key);
double kwm_jnum(json_object *o, const char *key);
const char *kwm_jstr(json_object *o, const char *key);

/* ---- plot.c: gnuplot pictures, the data and script left beside them --- */

/*
 * The files of one picture: for "out.png" the script "out.gp" and the
 * data "out-NAME.dat".  Returns 0, or -1 when png does not end in .png.
 */
int kwm_plot_base(const char *png, char *base, size_t len);
/* Runs gnuplot on base.gp; 0, or -1 with a message in err. */
int kwm_plot_render(const char *base, char *err, size_t errlen);
/*
 * base-cluster-phases.dat: per phase the span over all VMs (earliest
 * start, latest end) and per blackout span its VM, seconds after t0;
 * gnuplot lines that shade them on a time axis go to gp, and the plot
 * clauses that name them in the key to legend.  Returns 0 or -1 (cannot
 * write).
 */
int kwm_plot_mark_phases(json_object *rep, double t0, const char *base, FILE *gp,
			 char *legend, size_t len);
/* The migration picture: per VM the phase timeline with blackouts, and
 * the storage and memory transfer curves.  0, or -1 with err. */
int kwm_plot_report(json_object *rep, const char *png, char *err, size_t errlen);

/*
 * kawarimi-pingpong's picture from its saved output: bandwidth against
 * message size (the IMB table) or against time (--continuous), with the
 * migration's phases and blackouts of rep marked (rep may be NULL).
 */
int kwm_plot_pingpong(const char *saved, json_object *rep, const char *png, char *err,
		      size_t errlen);

#endif
