/* SPDX-License-Identifier: MIT */
/* What a message from a QMP server is: greeting, reply, error or event. */
#include <string.h>

#include "kqmp_internal.h"

static json_object *member(json_object *obj, const char *key)
{
	json_object *v = NULL;

	return json_object_object_get_ex(obj, key, &v) ? v : NULL;
}

static int bad_shape(struct kqmp_error *err, const char *what, json_object *msg)
{
	char q[200];

	kqmp_seterr(err, KQMP_E_PROTOCOL, "malformed QMP %s: %s", what,
		  kqmp_quote_json(q, sizeof(q), msg));
	return -1;
}

static int classify_error(json_object *msg, json_object *e, struct kqmp_msg *m,
			  struct kqmp_error *err)
{
	json_object *cls = member(e, "class");
	json_object *desc = member(e, "desc");

	if (!json_object_is_type(e, json_type_object) ||
	    !json_object_is_type(cls, json_type_string) ||
	    !json_object_is_type(desc, json_type_string))
		return bad_shape(err, "error (wants {\"class\": STRING, \"desc\": STRING})", msg);
	m->type = KQMP_MSG_ERROR;
	m->cls = json_object_get_string(cls);
	m->desc = json_object_get_string(desc);
	return 0;
}

static int classify_event(json_object *msg, json_object *ev, struct kqmp_msg *m,
			  struct kqmp_error *err)
{
	json_object *ts = member(msg, "timestamp");

	if (!json_object_is_type(ev, json_type_string))
		return bad_shape(err, "event (its name is not a string)", msg);
	m->type = KQMP_MSG_EVENT;
	m->event = json_object_get_string(ev);
	m->data = member(msg, "data");
	m->sec = -1;
	m->usec = -1;
	if (ts) {
		json_object *s = member(ts, "seconds");
		json_object *u = member(ts, "microseconds");

		if (!json_object_is_type(s, json_type_int) ||
		    !json_object_is_type(u, json_type_int))
			return bad_shape(err, "event timestamp", msg);
		m->sec = json_object_get_int64(s);
		m->usec = json_object_get_int64(u);
	}
	return 0;
}

static int classify_greeting(json_object *msg, json_object *g, struct kqmp_msg *m,
			     struct kqmp_error *err)
{
	json_object *ver = member(g, "version");
	json_object *caps = member(g, "capabilities");

	if (!json_object_is_type(g, json_type_object) ||
	    !json_object_is_type(ver, json_type_object) ||
	    !json_object_is_type(caps, json_type_array))
		return bad_shape(err, "greeting", msg);
	m->type = KQMP_MSG_GREETING;
	m->version = ver;
	m->caps = caps;
	return 0;
}

int kqmp_classify(json_object *msg, struct kqmp_msg *m, struct kqmp_error *err)
{
	json_object *v;

	memset(m, 0, sizeof(*m));
	if (!json_object_is_type(msg, json_type_object))
		return bad_shape(err, "message (not an object)", msg);
	m->id = member(msg, "id");
	if ((v = member(msg, "return"))) {
		m->type = KQMP_MSG_RETURN;
		m->ret = v;
		return 0;
	}
	/* "return": null is legal JSON; json-c stores it as a NULL member. */
	if (json_object_object_get_ex(msg, "return", NULL)) {
		m->type = KQMP_MSG_RETURN;
		return 0;
	}
	if ((v = member(msg, "error")))
		return classify_error(msg, v, m, err);
	if ((v = member(msg, "event")))
		return classify_event(msg, v, m, err);
	if ((v = member(msg, "QMP")))
		return classify_greeting(msg, v, m, err);
	m->type = KQMP_MSG_UNKNOWN;
	return 0;
}

uint64_t kqmp_msg_id(const struct kqmp_msg *m)
{
	int64_t id;

	if (!json_object_is_type(m->id, json_type_int))
		return 0;
	id = json_object_get_int64(m->id);
	return id > 0 ? (uint64_t)id : 0;
}
