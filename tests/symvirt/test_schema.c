/* SPDX-License-Identifier: MIT */
/*
 * The protocol's table and validator (symvirt/schema.h): bounds at their
 * edges on each leg, errors that name the value, returns, the envelope,
 * and the line framing the BTL reads with.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "schema.h"

static int failures;

#define CHECK(cond, ...) do { if (!(cond)) { failures++; printf("FAIL %s:%d: ", __FILE__, __LINE__); \
	printf(__VA_ARGS__); printf("\n"); } } while (0)

/* Checks args (JSON text) for a command; want: NULL = accepted, else the
 * error must contain it. */
static void args(enum schema_leg leg, const char *cmd, const char *json, const char *want)
{
	const struct schema_command *c = schema_find(cmd, leg);
	json_object *o = json_tokener_parse(json);
	struct schema_err e = { .cls = "", .desc = "" };
	int r;

	if (!c || !o) {
		CHECK(0, "no command %s or bad JSON %s", cmd, json);
		return;
	}
	r = schema_check_args(o, c->args, &e);
	if (!want)
		CHECK(r == 0, "%s %s %s refused: %s", schema_leg_name(leg), cmd, json, e.desc);
	else
		CHECK(r < 0 && !strcmp(e.cls, "InvalidParameter") && strstr(e.desc, want),
		      "%s %s %s: got %d %s %s, want %s", schema_leg_name(leg), cmd, json, r, e.cls, e.desc, want);
	json_object_put(o);
}

static void host_leg(void)
{
	args(SCHEMA_HOST, "quiesce", "{\"deadline-ms\": 3600000, \"lease-ms\": 1000}", NULL);
	args(SCHEMA_HOST, "quiesce", "{\"deadline-ms\": 0}", "between 1 and 3600000, not 0");
	args(SCHEMA_HOST, "quiesce", "{\"lease-ms\": 999}", "999");
	args(SCHEMA_HOST, "quiesce", "{\"lease-ms\": 18446744073709551615}", "18446744073709551615");
	args(SCHEMA_HOST, "quiesce", "{\"lease\": 1500}", "unknown argument \"lease\"; this command takes: deadline-ms, lease-ms");
	args(SCHEMA_HOST, "inventory", "{\"x\": 1}", "this command takes: no arguments");
	args(SCHEMA_HOST, "resume", "{\"fabrics\": [\"verbs\", \"tcp\", \"tcp\", \"tcp\"]}", NULL);
	args(SCHEMA_HOST, "resume", "{\"fabrics\": [\"verbs\", \"tcp\", \"tcp\", \"tcp\", \"tcp\"]}", "has 5 items; at most 4");
	args(SCHEMA_HOST, "resume", "{\"fabrics\": [\"ib\"]}", "\"fabrics\"[0] must be \"verbs\" or \"tcp\", not \"ib\"");
	args(SCHEMA_HOST, "resume", "{\"hook\": \"\"}", "1 to 4096 bytes");
	args(SCHEMA_HOST, "peers", "{}", "missing argument \"ranks\"");
	args(SCHEMA_HOST, "peers", "{\"ranks\": [{\"jobid\": \"j\", \"rank\": 2147483647, \"addrs\": \"00ff\"}]}", NULL);
	args(SCHEMA_HOST, "peers", "{\"ranks\": [{\"jobid\": \"j\", \"rank\": 1, \"addrs\": \"00\"}, {\"rank\": 1, \"addrs\": \"00\"}]}",
	     "\"ranks\"[1] lacks \"jobid\"");
	args(SCHEMA_HOST, "peers", "{\"ranks\": [{\"jobid\": \"j\", \"rank\": 1, \"addrs\": \"0F\"}]}",
	     "\"ranks\"[0].\"addrs\" must be a rank's address list");
	args(SCHEMA_HOST, "peers", "{\"ranks\": [{\"jobid\": \"j\", \"rank\": 1, \"addrs\": \"00\", \"pid\": 3}]}",
	     "\"ranks\"[0] has an unknown member \"pid\"");
}

static void rank_legs(void)
{
	char big[300];

	args(SCHEMA_RANK, "register", "{\"pid\": 1, \"jobid\": \"j\", \"rank\": 0, \"paths\": [], \"state\": \"quiesced\"}", NULL);
	args(SCHEMA_RANK, "register", "{\"pid\": 1, \"jobid\": \"j\", \"rank\": 0, \"paths\": [], \"state\": 1}", "not 1");
	args(SCHEMA_RANK, "register", "{\"pid\": 1, \"jobid\": \"j\", \"rank\": 0, \"paths\": [\"a\",\"a\",\"a\",\"a\",\"a\",\"a\",\"a\",\"a\",\"a\"]}",
	     "has 9 items; at most 8");
	args(SCHEMA_RANK, "register", "{\"pid\": 0, \"jobid\": \"j\", \"rank\": 0, \"paths\": []}", "\"pid\" must be between 1");
	args(SCHEMA_TO_RANK, "quiesce", "{\"deadline-ms\": 86400000}", NULL);
	args(SCHEMA_TO_RANK, "quiesce", "{\"deadline-ms\": 86400001}", "between 0 and 86400000");
	args(SCHEMA_TO_RANK, "quiesce", "{\"deadline-ms\": \"soon\"}", "must be an integer, not \"soon\"");
	args(SCHEMA_TO_RANK, "resume", "{\"fabrics\": [{\"name\": \"tcp\", \"ifname\": \"\", \"addr\": \"\"}], \"wait\": false}", NULL);
	snprintf(big, sizeof(big), "{\"fabrics\": [{\"name\": \"tcp\", \"ifname\": \"%032d\", \"addr\": \"\"}]}", 0);
	args(SCHEMA_TO_RANK, "resume", big, "\"fabrics\"[0].\"ifname\" must be 0 to 31 bytes");
	args(SCHEMA_TO_RANK, "resume", "{\"wait\": \"no\"}", "true or false, not \"no\"");
	args(SCHEMA_TO_RANK, "status", "{\"x\": 1}", "unknown argument");
	args(SCHEMA_TO_RANK, "peers", "{\"ranks\": [{\"rank\": 1, \"addrs\": \"zz\"}]}", "address list");
}

static void returns(void)
{
	static const struct { const char *cmd, *json, *want; } cases[] = {
		{ "quiesce", "{\"state\": \"quiesced\", \"peers\": 3, \"new-member\": true}", NULL },
		{ "quiesce", "{\"state\": \"running\"}", "the rank's \"state\" must be \"quiesced\"" },
		{ "quiesce", "{\"peers\": 3}", "the rank's return lacks \"state\"" },
		{ "quiesce", "{\"state\": \"quiesced\", \"peers\": -1}", "the rank's \"peers\"" },
		{ "resume", "{\"state\": \"resumed\", \"paths\": [{\"peer\": 1, \"path\": \"tcp\", \"x\": 1}], \"addrs\": \"00\"}", NULL },
		{ "resume", "{\"state\": \"resumed\", \"paths\": [{\"path\": \"tcp\"}]}", "lacks \"peer\"" },
		{ "status", "{\"state\": \"resuming\", \"addrs\": \"0\"}", "the rank's \"addrs\"" },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		json_object *o = json_tokener_parse(cases[i].json);
		struct schema_err e = { .cls = "", .desc = "" };
		int r = schema_check_return(cases[i].cmd, o, &e);

		if (!cases[i].want)
			CHECK(r == 0, "%s return %s refused: %s", cases[i].cmd, cases[i].json, e.desc);
		else
			CHECK(r < 0 && !strcmp(e.cls, "ProtocolError") && strstr(e.desc, cases[i].want),
			      "%s return %s: %s %s", cases[i].cmd, cases[i].json, e.cls, e.desc);
		json_object_put(o);
	}
}

static void envelope(void)
{
	static const struct { const char *json, *cls; enum schema_kind kind; bool id; } cases[] = {
		{ "{\"execute\": \"status\", \"id\": 7}", NULL, SCHEMA_MSG_COMMAND, true },
		{ "{\"execute\": \"status\", \"id\": 7, \"x\": 1}", "InvalidParameter", SCHEMA_MSG_COMMAND, true },
		{ "{\"execute\": \"a b\"}", "InvalidParameter", SCHEMA_MSG_COMMAND, false },
		{ "{\"execute\": \"status\", \"id\": [1]}", "InvalidParameter", SCHEMA_MSG_COMMAND, false },
		{ "{\"return\": {}, \"id\": \"x\"}", NULL, SCHEMA_MSG_REPLY, true },
		{ "{\"return\": {}}", "ProtocolError", SCHEMA_MSG_REPLY, false },
		{ "{\"error\": {\"class\": \"Timeout\"}, \"id\": 1}", "ProtocolError", SCHEMA_MSG_REPLY, true },
		{ "{\"event\": \"lease-expired\", \"data\": {}}", NULL, SCHEMA_MSG_EVENT, false },
		{ "{\"hello\": 1}", "ProtocolError", SCHEMA_MSG_COMMAND, false },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		json_object *o = json_tokener_parse(cases[i].json), *id = NULL;
		struct schema_err e = { .cls = "", .desc = "" };
		enum schema_kind kind = SCHEMA_MSG_COMMAND;
		int r = schema_check_envelope(o, &kind, &id, &e);

		if (!cases[i].cls)
			CHECK(r == 0 && kind == cases[i].kind, "%s refused: %s", cases[i].json, e.desc);
		else
			CHECK(r < 0 && !strcmp(e.cls, cases[i].cls), "%s: %d %s", cases[i].json, r, e.cls);
		CHECK((id != NULL) == cases[i].id, "%s: id %s", cases[i].json, id ? "kept" : "lost");
		json_object_put(o);
	}
}

static void feed(struct schema_lines *l, const char *s)
{
	size_t room;
	char *at = schema_lines_space(l, &room);

	CHECK(strlen(s) <= room, "%zu bytes do not fit in %zu", strlen(s), room);
	memcpy(at, s, strlen(s));
	schema_lines_commit(l, strlen(s));
}

static void lines(void)
{
	struct schema_lines l;
	struct schema_err e;
	const char *line;
	json_object *o;
	size_t len;

	CHECK(schema_lines_init(&l, 16) == 0, "init");
	feed(&l, "{\"a\": 1}\n{\"b\"");
	CHECK(schema_lines_next(&l, &line, &len) == 1 && len == 8 && !memcmp(line, "{\"a\": 1}", 8), "first line");
	CHECK(schema_lines_next(&l, &line, &len) == 0, "a line in pieces is not complete yet");
	feed(&l, ": 2} \r\n");
	CHECK(schema_lines_next(&l, &line, &len) == 1, "second line");
	o = schema_parse_line(line, len, &e);
	CHECK(o && json_object_object_get_ex(o, "b", NULL), "blanks after the object");
	json_object_put(o);
	/* 16 bytes and the newline fit; 17 without one do not. */
	feed(&l, "{\"c\": 123456789}\n");
	CHECK(schema_lines_next(&l, &line, &len) == 1 && len == 16, "a line of exactly max");
	feed(&l, "{\"d\": 12345678901");
	CHECK(schema_lines_next(&l, &line, &len) == -1, "a line over max");
	schema_lines_free(&l);

	CHECK(!schema_parse_line("{} {}", 5, &e) && strstr(e.desc, "trailing bytes"), "two objects: %s", e.desc);
	CHECK(!schema_parse_line("[1]", 3, &e) && !strcmp(e.cls, "InvalidParameter"), "an array");
	CHECK(!schema_parse_line("{\"a\":", 5, &e) && strstr(e.desc, "not one JSON object"), "cut: %s", e.desc);
}

/* Every command the table has is reachable and every class named once. */
static void table(void)
{
	size_t n = 0;

	for (const struct schema_command *c = schema_commands; c->name; c++, n++)
		CHECK(schema_find(c->name, c->leg) == c, "%s %s shadowed", schema_leg_name(c->leg), c->name);
	CHECK(n == 14, "%zu commands", n);
	for (size_t i = 0; schema_classes[i]; i++)
		for (size_t k = 0; k < i; k++)
			CHECK(strcmp(schema_classes[i], schema_classes[k]), "class %s twice", schema_classes[i]);
}

int main(void)
{
	host_leg();
	rank_legs();
	returns();
	envelope();
	lines();
	table();
	if (failures)
		return 1;
	printf("PASS\n");
	return 0;
}
