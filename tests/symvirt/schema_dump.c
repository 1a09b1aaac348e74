/* SPDX-License-Identifier: MIT */
/*
 * Prints the protocol's table (symvirt/schema.c) as the markdown of the
 * "Bounds" section of docs/symvirt-protocol.md.  The test
 * symvirt-doc-commands compares the two; after a change to the table,
 * paste this output between the section's markers.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "schema.h"

static const char *leg_label(enum schema_leg leg)
{
	switch (leg) {
	case SCHEMA_HOST: return "coordinator → agent";
	case SCHEMA_RANK: return "rank → agent";
	case SCHEMA_TO_RANK: return "agent → rank";
	}
	return "?";
}

static void int_bounds(const struct schema_arg *s, char *buf, size_t n)
{
	if (s->min == INT64_MIN && s->max == INT64_MAX)
		snprintf(buf, n, "any");
	else if (s->max == INT64_MAX)
		snprintf(buf, n, "≥ %" PRId64, s->min);
	else
		snprintf(buf, n, "%" PRId64 "–%" PRId64, s->min, s->max);
}

static void bounds(const struct schema_arg *s, char *buf, size_t n)
{
	size_t off = 0;

	switch (s->type) {
	case SCHEMA_INT:
		int_bounds(s, buf, n);
		return;
	case SCHEMA_STR:
		snprintf(buf, n, "%" PRId64 "–%" PRId64 " bytes", s->min, s->max);
		return;
	case SCHEMA_ADDRS:
		snprintf(buf, n, "lowercase hex, even, %" PRId64 "–%" PRId64 " characters", s->min, s->max);
		return;
	case SCHEMA_ARRAY:
		snprintf(buf, n, "%" PRId64 "–%" PRId64 " items", s->min, s->max);
		return;
	case SCHEMA_ENUM:
		buf[0] = '\0';
		for (size_t i = 0; s->values[i] && off < n; i++)
			off += (size_t)snprintf(buf + off, n - off, "%s`\"%s\"`", i ? ", " : "", s->values[i]);
		return;
	case SCHEMA_OBJECT:
		snprintf(buf, n, "%s", s->open ? "other members ignored" : "no other members");
		return;
	case SCHEMA_BOOL:
		snprintf(buf, n, "true, false");
		return;
	}
}

/* One row per value, then one per item or member below it (an item is
 * neither required nor optional: "—"). */
static void rows(const char *lead, const char *path, const struct schema_arg *s)
{
	size_t n = strlen(path);
	char b[200], sub[200];

	bounds(s, b, sizeof(b));
	printf("| %s`%s` | %s | %s | %s |\n", lead, path, schema_type_name(s->type), b,
	       n > 2 && !strcmp(path + n - 2, "[]") ? "—" : s->required ? "yes" : "no");
	if (s->type == SCHEMA_ARRAY) {
		snprintf(sub, sizeof(sub), "%s[]", path);
		rows(lead, sub, s->item);
	} else if (s->type == SCHEMA_OBJECT) {
		for (const struct schema_arg *m = s->members; m->name; m++) {
			snprintf(sub, sizeof(sub), "%s.%s", path, m->name);
			rows(lead, sub, m);
		}
	}
}

static void list_rows(const char *lead, const struct schema_arg *list)
{
	if (!list[0].name)
		printf("| %s— | | | |\n", lead);
	for (const struct schema_arg *s = list; s->name; s++)
		rows(lead, s->name, s);
}

static void commands(void)
{
	char lead[160];

	printf("| leg | command | argument | type | bounds | required |\n");
	printf("|---|---|---|---|---|---|\n");
	for (const struct schema_command *c = schema_commands; c->name; c++) {
		snprintf(lead, sizeof(lead), "%s | `%s` | ", leg_label(c->leg), c->name);
		list_rows(lead, c->args);
	}
}

static void returns(void)
{
	char lead[160];

	printf("| leg | command | member | type | bounds | required |\n");
	printf("|---|---|---|---|---|---|\n");
	for (const struct schema_command *c = schema_commands; c->name; c++) {
		if (!c->ret)
			continue;
		snprintf(lead, sizeof(lead), "%s | `%s` | ", leg_label(c->leg), c->name);
		list_rows(lead, c->ret);
	}
}

static void events(void)
{
	char lead[160];

	printf("| event | member | type | bounds | required |\n");
	printf("|---|---|---|---|---|\n");
	for (const struct schema_event *e = schema_events; e->name; e++) {
		snprintf(lead, sizeof(lead), "`%s` | ", e->name);
		list_rows(lead, e->data);
	}
}

int main(void)
{
	printf("Limits: protocol version %d; a command or event at most %d bytes, a\n"
	       "reply at most %d; ADDRS at most %d characters; a lease %d–%d ms.\n\n",
	       SYMVIRT_PROTOCOL_VERSION, SYMVIRT_MAX_MSG, SYMVIRT_MAX_REPLY, SYMVIRT_ADDRS_MAX,
	       SCHEMA_LEASE_MIN_MS, SCHEMA_LEASE_MAX_MS);
	printf("Arguments (`a[]` is each item of the array `a`, `a[].b` a member of each):\n\n");
	commands();
	printf("\nWhat a return must have (other members are ignored):\n\n");
	returns();
	printf("\nEvents (receivers ignore other members of `data`):\n\n");
	events();
	printf("\nError classes:");
	for (size_t i = 0; schema_classes[i]; i++)
		printf("%s `%s`", i ? "," : "", schema_classes[i]);
	printf(".\n");
	return 0;
}
