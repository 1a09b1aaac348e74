/*
 * The BTL's reading of agent lines (kw_ctl_parse_msg): the classes a rank
 * answers with (docs/symvirt-protocol.md, "Rank leg: BTL behaviour") and
 * what it takes out of a valid command.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "btl_kawarimi_ctl.h"

static int failures;

#define CHECK(cond, ...) do { if (!(cond)) { failures++; printf("FAIL %s:%d: ", __FILE__, __LINE__); \
	printf(__VA_ARGS__); printf("\n"); } } while (0)

/* want: the class the line is refused with, or NULL (accepted). */
static void refused(const char *line, const char *want, int id_kept)
{
	struct kw_ctl_msg m;
	const char *cls;
	char err[300];
	int r = kw_ctl_parse_msg(line, strlen(line), &m, &cls, err, sizeof(err));

	if (!want)
		CHECK(r == 0, "%s refused: %s %s", line, cls, err);
	else
		CHECK(r < 0 && !strcmp(cls, want) && (m.id != NULL) == id_kept,
		      "%s: %d %s %s (id %s)", line, r, cls, err, m.id ? "kept" : "lost");
	kw_ctl_parse_clear(&m);
}

static void classes(void)
{
	refused("{\"execute\": \"status\", \"id\": 1}", NULL, 1);
	refused("{\"execute\": \"quiesce\", \"arguments\": {\"deadline-ms\": \"soon\"}, \"id\": 2}",
		"InvalidParameter", 1);
	refused("{\"execute\": \"quiesce\", \"arguments\": {\"bogus\": 1}, \"id\": 3}", "InvalidParameter", 1);
	refused("{\"execute\": \"frobnicate\", \"id\": 4}", "CommandNotFound", 1);
	refused("{\"execute\": \"register\", \"id\": 4}", "CommandNotFound", 1);
	refused("{\"execute\": \"peers\", \"arguments\": {\"ranks\": [{\"rank\": 1, \"addrs\": \"zz\"}]}, \"id\": 5}",
		"InvalidParameter", 1);
	/* Hex that is well formed but no address list. */
	refused("{\"execute\": \"peers\", \"arguments\": {\"ranks\": [{\"rank\": 1, \"addrs\": "
		"\"000000000000000000000000\"}]}, \"id\": 6}", "InvalidParameter", 1);
	refused("{\"execute\": \"peers\", \"id\": 6}", "InvalidParameter", 1);
	refused("{\"execute\": \"resume\", \"arguments\": {\"wait\": \"no\"}, \"id\": 7}", "InvalidParameter", 1);
	refused("{\"execute\": \"resume\", \"arguments\": {\"link-timeout-ms\": 86400001}, \"id\": 8}",
		"InvalidParameter", 1);
	refused("{\"execute\": \"resume\", \"arguments\": {\"fabrics\": [{\"name\": \"ib\", \"ifname\": \"a\", "
		"\"addr\": \"b\"}]}, \"id\": 9}", "InvalidParameter", 1);
	refused("{\"execute\": \"status\", \"id\": 1} x", "InvalidParameter", 0);
	refused("{\"execute\": \"status\"", "InvalidParameter", 0);
	refused("[1]", "InvalidParameter", 0);
	refused("{\"execute\": \"status\", \"id\": 1.5}", "InvalidParameter", 0);
	/* A reply without an id is taken, not answered: the agent would
	 * answer the answer. */
	refused("{\"return\": {}, \"id\": 1, \"x\": 2}", "InvalidParameter", 1);
	refused("{\"error\": {\"class\": \"ProtocolError\", \"desc\": \"not JSON\"}}", NULL, 0);
	refused("{\"return\": {}, \"id\": [1]}", "InvalidParameter", 0);
	refused("{\"hello\": 1}", "InvalidParameter", 0);
	refused("{\"event\": \"x\", \"data\": {\"anything\": 1}}", NULL, 0);
}

static void fields(void)
{
	const char *line = "{\"execute\": \"resume\", \"arguments\": {\"fabrics\": [{\"name\": \"verbs\", "
		"\"ifname\": \"eth1\", \"addr\": \"10.1.0.11\"}, {\"name\": \"tcp\", \"ifname\": \"eth0\", "
		"\"addr\": \"10.0.0.11\"}], \"link-timeout-ms\": 15000, \"wait\": false}, \"id\": \"r1\"}";
	struct kw_addrs a = { .port = 4242, .n = 1 };
	char hex[KW_ADDRS_HEX_MAX], peers[2 * KW_ADDRS_HEX_MAX + 200];
	struct kw_ctl_msg m;
	const char *cls;
	char err[300];

	CHECK(!kw_ctl_parse_msg(line, strlen(line), &m, &cls, err, sizeof(err)), "resume: %s", err);
	CHECK(m.kind == KW_CTL_RESUME && m.nfabrics == 2 && !strcmp(m.fabrics[0].name, "verbs") &&
	      !strcmp(m.fabrics[1].ifname, "eth0") && !strcmp(m.fabrics[1].addr, "10.0.0.11") &&
	      m.link_timeout_ms == 15000 && m.deadline_ms == -1 && m.wait == 0 &&
	      !strcmp(json_object_get_string(m.id), "r1"), "resume fields");
	kw_ctl_parse_clear(&m);

	a.a[0].ip = 0x0100000a;
	a.a[0].prefixlen = 8;
	snprintf(a.a[0].ifname, sizeof(a.a[0].ifname), "eth0");
	CHECK(!kw_ctl_parse_addrs_hex(&a, hex, sizeof(hex)), "encode");
	snprintf(peers, sizeof(peers), "{\"execute\": \"peers\", \"arguments\": {\"ranks\": [{\"rank\": 3, "
		 "\"addrs\": \"%s\"}], \"deadline-ms\": 0}, \"id\": 5}", hex);
	CHECK(!kw_ctl_parse_msg(peers, strlen(peers), &m, &cls, err, sizeof(err)), "peers: %s", err);
	CHECK(m.kind == KW_CTL_PEERS && m.npeers == 1 && m.peers[0].rank == 3 &&
	      m.peers[0].addrs.port == 4242 && m.peers[0].addrs.n == 1 && m.deadline_ms == 0 && m.wait == -1,
	      "peers fields");
	kw_ctl_parse_clear(&m);

	line = "{\"return\": {\"version\": 1}, \"id\": 1}";
	CHECK(!kw_ctl_parse_msg(line, strlen(line), &m, &cls, err, sizeof(err)) && m.kind == KW_CTL_REPLY &&
	      m.version == 1 && !m.is_error, "register reply");
	kw_ctl_parse_clear(&m);
	line = "{\"error\": {\"class\": \"InvalidState\", \"desc\": \"twice\"}, \"id\": 1}";
	CHECK(!kw_ctl_parse_msg(line, strlen(line), &m, &cls, err, sizeof(err)) && m.is_error &&
	      !strcmp(m.desc, "twice"), "register refused");
	kw_ctl_parse_clear(&m);
}

int main(void)
{
	classes();
	fields();
	if (failures)
		return 1;
	printf("PASS\n");
	return 0;
}
