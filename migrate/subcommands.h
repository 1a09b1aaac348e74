/* SPDX-License-Identifier: MIT */
/* One function per `kawarimi` subcommand, one file each (cmd_*.c). */
#ifndef KAWARIMI_SUBCOMMANDS_H
#define KAWARIMI_SUBCOMMANDS_H

extern const char *prog;

int cmd_qmp(int argc, char *argv[]);
int cmd_agent(int argc, char *argv[]);
int cmd_plan(int argc, char *argv[]);
int cmd_migrate(int argc, char *argv[]);
int cmd_recover(int argc, char *argv[]);
int cmd_lab(int argc, char *argv[]);
int cmd_report(int argc, char *argv[]);

#endif
