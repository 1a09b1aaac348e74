/* SPDX-License-Identifier: MIT */
/*
 * kawarimi-agent: command line, daemonizing, logging set-up.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <syslog.h>
#include <unistd.h>

#include "agent.h"

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: kawarimi-agent [OPTIONS]\n"
		"The kawarimi guest agent: quiesces and resumes the MPI ranks of this VM\n"
		"on the coordinator's word and reports its hardware (docs/symvirt-protocol.md).\n\n"
		"  --channel PATH     host channel: a virtio-serial port (default\n"
		"                     " AGENT_DEFAULT_CHANNEL "),\n"
		"                     unix:PATH to connect to, listen:PATH to listen on\n"
		"  --socket PATH      the ranks' unix socket (default " AGENT_DEFAULT_SOCKET ")\n"
		"  --group NAME       group owning the socket (mode 0660)\n"
		"  --foreground       do not detach; log to stderr unless --syslog\n"
		"  --syslog           log to syslog (the default when detached)\n"
		"  -v, --verbose      more log lines (twice: every message)\n"
		"  --adopt-lease-ms MS  lease held for ranks that register quiesced, as\n"
		"                     after a restart of this agent: unless the\n"
		"                     coordinator renews or resumes, they are resumed\n"
		"                     after MS (1000-3600000, default 60000)\n"
		"  --proc-root DIR    where uverbs holders are looked for (default /proc)\n"
		"  --dev-root DIR     uverbs nodes are DIR/infiniband/uverbs* (default /dev)\n"
		"  --sys-root DIR     sysfs for PCI rescan and device links (default /sys)\n"
		"  --pci-dump FILE    read PCI devices from an `lspci -x` dump (tests)\n"
		"  --version, --help\n"
		"Environment: KAWARIMI_AGENT_PROC_ROOT, _DEV_ROOT, _SYS_ROOT set the roots too.\n");
}

static const char *env_or(const char *name, const char *dflt)
{
	const char *v = getenv(name);

	return v && *v ? v : dflt;
}

/* --adopt-lease-ms: the bounds of a coordinator's lease-ms.  No "never":
 * with nobody to renew it, an adopted quiesce would last for ever. */
static int parse_lease_ms(const char *text, int64_t *out)
{
	char *end;
	long long v;

	errno = 0;
	v = strtoll(text, &end, 10);
	if (errno || end == text || *end || v < AGENT_LEASE_MIN_MS || v > AGENT_LEASE_MAX_MS) {
		fprintf(stderr, "kawarimi-agent: --adopt-lease-ms '%s' is not a number of milliseconds "
			"between %d and %d\n", text, AGENT_LEASE_MIN_MS, AGENT_LEASE_MAX_MS);
		return -1;
	}
	*out = v;
	return 0;
}

static int parse(int argc, char *argv[], struct agent_opts *o)
{
	enum { O_CHANNEL = 256, O_SOCKET, O_GROUP, O_FG, O_SYSLOG, O_PROC, O_DEV, O_SYS, O_DUMP, O_VERSION,
	       O_ADOPT };
	static const struct option opts[] = {
		{ "channel", required_argument, NULL, O_CHANNEL },
		{ "socket", required_argument, NULL, O_SOCKET },
		{ "group", required_argument, NULL, O_GROUP },
		{ "foreground", no_argument, NULL, O_FG },
		{ "syslog", no_argument, NULL, O_SYSLOG },
		{ "verbose", no_argument, NULL, 'v' },
		{ "proc-root", required_argument, NULL, O_PROC },
		{ "dev-root", required_argument, NULL, O_DEV },
		{ "sys-root", required_argument, NULL, O_SYS },
		{ "pci-dump", required_argument, NULL, O_DUMP },
		{ "adopt-lease-ms", required_argument, NULL, O_ADOPT },
		{ "version", no_argument, NULL, O_VERSION },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 }
	};
	int c;

	*o = (struct agent_opts){
		.channel = AGENT_DEFAULT_CHANNEL,
		.socket = AGENT_DEFAULT_SOCKET,
		.proc_root = env_or("KAWARIMI_AGENT_PROC_ROOT", "/proc"),
		.dev_root = env_or("KAWARIMI_AGENT_DEV_ROOT", "/dev"),
		.sys_root = env_or("KAWARIMI_AGENT_SYS_ROOT", "/sys"),
		.adopt_lease_ms = AGENT_DEFAULT_ADOPT_LEASE_MS,
	};
	while ((c = getopt_long(argc, argv, "vh", opts, NULL)) != -1) {
		switch (c) {
		case O_CHANNEL: o->channel = optarg; break;
		case O_SOCKET: o->socket = optarg; break;
		case O_GROUP: o->group = optarg; break;
		case O_FG: o->foreground = true; break;
		case O_SYSLOG: o->syslog = true; break;
		case 'v': o->verbose++; break;
		case O_PROC: o->proc_root = optarg; break;
		case O_DEV: o->dev_root = optarg; break;
		case O_SYS: o->sys_root = optarg; break;
		case O_DUMP: o->pci_dump = optarg; break;
		case O_ADOPT:
			if (parse_lease_ms(optarg, &o->adopt_lease_ms) < 0)
				return -1;
			break;
		case O_VERSION:
			printf("kawarimi-agent %s (symvirt protocol %d)\n", KAWARIMI_VERSION,
			       SYMVIRT_PROTOCOL_VERSION);
			exit(0);
		case 'h':
		default:	/* getopt has said what was wrong */
			usage(c == 'h' ? stdout : stderr);
			if (c == 'h')
				exit(0);
			return -1;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "kawarimi-agent: unexpected argument '%s'\n", argv[optind]);
		usage(stderr);
		return -1;
	}
	return 0;
}

/* Creates the socket's directory (e.g. /run/kawarimi) if it is missing. */
static void make_parent(const char *path)
{
	char dir[4096];
	char *slash;

	snprintf(dir, sizeof(dir), "%s", path);
	slash = strrchr(dir, '/');
	if (!slash || slash == dir)
		return;
	*slash = '\0';
	if (mkdir(dir, 0755) < 0 && errno != EEXIST)
		fprintf(stderr, "kawarimi-agent: cannot create %s: %s\n", dir, strerror(errno));
}

static int detach(void)
{
	pid_t pid = fork();
	int null;

	if (pid < 0)
		return -1;
	if (pid > 0)
		_exit(0);
	setsid();
	if (chdir("/") < 0)
		return -1;
	null = open("/dev/null", O_RDWR);
	if (null >= 0) {
		dup2(null, 0);
		dup2(null, 1);
		dup2(null, 2);
		if (null > 2)
			close(null);
	}
	return 0;
}

int main(int argc, char *argv[])
{
	struct agent_opts o;
	struct agent *a;
	int rc;

	if (parse(argc, argv, &o) < 0)
		return 2;
	if (!o.foreground)
		o.syslog = true;
	if (o.syslog)
		openlog("kawarimi-agent", LOG_PID, LOG_DAEMON);
	make_parent(o.socket);
	a = agent_new(&o);
	if (!a) {
		if (!o.syslog)
			fprintf(stderr, "kawarimi-agent: cannot start (see above)\n");
		return 1;
	}
	if (!o.foreground && detach() < 0) {
		agent_log(a, LOG_ERR, "cannot detach: %s", strerror(errno));
		agent_free(a);
		return 1;
	}
	rc = agent_run(a);
	agent_free(a);
	return rc < 0 ? 1 : 0;
}
