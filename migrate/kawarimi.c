/* SPDX-License-Identifier: MIT */
/*
 * kawarimi: the operator's command.  One table of subcommands, one file per
 * subcommand (cmd_*.c), as in wireguard-tools.
 */
#include <stdio.h>
#include <string.h>

#include "subcommands.h"

const char *prog;

static int cmd_help(int argc, char *argv[]);
static int cmd_version(int argc, char *argv[]);

static const struct {
	const char *name;
	int (*fn)(int argc, char *argv[]);
	const char *args;
	const char *description;
} subcommands[] = {
	{ "plan", cmd_plan, "CLUSTER.yaml", "validate a cluster file against the live QEMUs and print the plan" },
	{ "migrate", cmd_migrate, "CLUSTER.yaml [OPTIONS]", "move every node VM of the cluster, with its MPI job running" },
	{ "recover", cmd_recover, "CLUSTER.yaml [--journal FILE]", "finish, forward or back, a migration whose coordinator died" },
	{ "report", cmd_report, "FILE [--plot OUT.png] [--format table|json|markdown]", "print (and plot) a migration's report" },
	{ "qmp", cmd_qmp, "SOCKET COMMAND [ARGS-JSON] | SOCKET --events SECONDS", "run one QMP command, or print events" },
	{ "agent", cmd_agent, "SOCKET COMMAND [ARGS-JSON]", "run one symvirt command against a guest agent" },
	{ "lab", cmd_lab, "up|status|down|console ...", "the one-machine two-site lab" },
	{ "version", cmd_version, "", "print the version" },
	{ "help", cmd_help, "", "show this help" },
};

static int cmd_help(int argc, char *argv[])
{
	(void)argc;
	(void)argv;
	printf("Usage: %s <subcommand> [arguments]\n\n", prog);
	printf("kawarimi moves a running virtual HPC cluster between sites with\n"
	       "different interconnects while its MPI jobs keep running.\n\n");
	printf("Subcommands:\n");
	for (size_t i = 0; i < sizeof(subcommands) / sizeof(subcommands[0]); i++)
		printf("  %-8s %s\n  %-8s   %s\n", subcommands[i].name,
		       subcommands[i].args, "", subcommands[i].description);
	printf("\n`%s SUBCOMMAND --help` says more about one of them.\n", prog);
	return 0;
}

static int cmd_version(int argc, char *argv[])
{
	(void)argc;
	(void)argv;
	printf("kawarimi %s\n", KAWARIMI_VERSION);
	return 0;
}

int main(int argc, char *argv[])
{
	prog = argv[0];
	if (argc < 2) {
		cmd_help(argc, argv);
		return 1;
	}
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))
		return cmd_help(argc, argv);
	if (!strcmp(argv[1], "--version"))
		return cmd_version(argc, argv);
	for (size_t i = 0; i < sizeof(subcommands) / sizeof(subcommands[0]); i++)
		if (!strcmp(argv[1], subcommands[i].name))
			return subcommands[i].fn(argc - 1, argv + 1);
	fprintf(stderr, "%s: unknown subcommand '%s'; try `%s help`\n", prog, argv[1], prog);
	return 1;
}
