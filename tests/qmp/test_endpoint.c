/* SPDX-License-Identifier: MIT */
/*
 * The endpoint parser (kqmp_conn_parse_endpoint, qmp/ssh.c): what each form
 * gives, and that each malformed one is refused with a message that
 * quotes it, before anything could reach ssh's command line.
 */
#include <stdio.h>
#include <string.h>

#include "conn.h"

static int failures;

#define CHECK(cond, ...) do { if (!(cond)) { failures++; \
	fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
	fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); } } while (0)

static void good(const char *uri, bool ssh, const char *user, const char *host,
		 int port, const char *path)
{
	struct kqmp_conn_endpoint ep;
	char err[400] = "";

	if (kqmp_conn_parse_endpoint(uri, &ep, err, sizeof(err)) < 0) {
		CHECK(0, "'%s' refused: %s", uri, err);
		return;
	}
	CHECK(ep.ssh == ssh && !strcmp(ep.user, user) && !strcmp(ep.host, host) &&
	      ep.port == port && !strcmp(ep.path, path),
	      "'%s': ssh %d user '%s' host '%s' port %d path '%s'", uri, ep.ssh,
	      ep.user, ep.host, ep.port, ep.path);
}

static void bad(const char *uri, const char *want)
{
	struct kqmp_conn_endpoint ep;
	char err[400] = "";

	if (kqmp_conn_parse_endpoint(uri, &ep, err, sizeof(err)) == 0) {
		CHECK(0, "'%s' accepted", uri);
		return;
	}
	CHECK(strstr(err, want) != NULL, "'%s': want '%s' in: %s", uri, want, err);
	CHECK(!*uri || strstr(err, uri) != NULL, "'%s': the message does not quote it: %s",
	      uri, err);
}

int main(void)
{
	char longpath[200];

	good("/run/kawarimi/n1.qmp", false, "", "", 0, "/run/kawarimi/n1.qmp");
	good("unix:/run/n1.qmp", false, "", "", 0, "/run/n1.qmp");
	good("n1.qmp", false, "", "", 0, "n1.qmp");
	good("ssh://siteb/run/n1.qmp", true, "", "siteb", 0, "/run/n1.qmp");
	good("ssh://root@siteb.example.org:2222/run/n1.qmp", true, "root",
	     "siteb.example.org", 2222, "/run/n1.qmp");
	good("ssh://kw_op@10.0.0.2/var/lib/q/n1.sv", true, "kw_op", "10.0.0.2", 0,
	     "/var/lib/q/n1.sv");
	good("ssh://[fd00::2]/run/n1.qmp", true, "", "fd00::2", 0, "/run/n1.qmp");
	good("ssh://u@[::1]:22/run/n1.qmp", true, "u", "::1", 22, "/run/n1.qmp");
	good("ssh://h:65535/a", true, "", "h", 65535, "/a");

	bad("", "no socket given");
	bad("tcp://10.0.0.2:4444", "neither a unix socket path nor an ssh:// endpoint");
	bad("ssh://siteb", "no socket path after the host");
	bad("ssh://siteb/", "the remote socket path must be");
	bad("ssh:///run/n1.qmp", "is not a host name");
	bad("ssh://-oProxyCommand=sh/run/n1.qmp", "'-oProxyCommand=sh' is not a host name");
	bad("ssh://-l@h/run/n1.qmp", "'-l' is not a user name");
	bad("ssh://@h/run/n1.qmp", "is not a user name");
	bad("ssh://a b/run/n1.qmp", "is not a host name");
	bad("ssh://h:0/run/n1.qmp", "'0' is not a port");
	bad("ssh://h:65536/run/n1.qmp", "'65536' is not a port");
	bad("ssh://h:22x/run/n1.qmp", "'22x' is not a port");
	bad("ssh://h:/run/n1.qmp", "is not a port");
	bad("ssh://[fd00::2/run/n1.qmp", "not an IPv6 address in brackets");
	bad("ssh://[]/run/n1.qmp", "not an IPv6 address in brackets");
	bad("ssh://[::1]x/run/n1.qmp", "junk after ']'");
	bad("ssh://h/run/n1 x.qmp", "may only hold");
	bad("ssh://h/run/n1;rm.qmp", "may only hold");
	bad("ssh://h/run/$(id).qmp", "may only hold");
	bad("ssh://h/run/a:b.qmp", "may only hold");
	bad("ssh://h/run/a,fork.qmp", "may only hold");
	bad("ssh://h/run/'q'.qmp", "may only hold");
	memset(longpath, 'a', sizeof(longpath) - 1);
	longpath[0] = '/';
	longpath[sizeof(longpath) - 1] = '\0';
	bad(longpath, "unix sockets allow at most 107");
	{
		char uri[sizeof(longpath) + 16];

		snprintf(uri, sizeof(uri), "ssh://h%s", longpath);
		bad(uri, "the remote socket path must be 1 to 107 bytes");
	}
	if (failures)
		return 1;
	printf("PASS\n");
	return 0;
}
