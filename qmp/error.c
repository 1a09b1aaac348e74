/* SPDX-License-Identifier: MIT */
/* Errors as values, and quoting bad input for them. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "jconn.h"
#include "kqmp-internal.h"

const char *kqmp_err_kind_name(enum kqmp_err_kind kind)
{
	switch (kind) {
	case KQMP_OK:		return "ok";
	case KQMP_E_QMP:	return "qmp-error";
	case KQMP_E_CONNECT:	return "connect";
	case KQMP_E_IO:		return "io";
	case KQMP_E_PROTOCOL:	return "protocol";
	case KQMP_E_TIMEOUT:	return "timeout";
	case KQMP_E_CLOSED:	return "closed";
	case KQMP_E_NOMEM:	return "out-of-memory";
	case KQMP_E_INVAL:	return "invalid-argument";
	}
	return "unknown";
}

void kjconn_vseterr(struct kqmp_error *err, enum kqmp_err_kind kind,
		    const char *fmt, va_list ap)
{
	if (!err)
		return;
	err->kind = kind;
	err->cls[0] = '\0';
	vsnprintf(err->desc, sizeof(err->desc), fmt, ap);
	kq_one_line(err->desc);
}

void kq_seterr(struct kqmp_error *err, enum kqmp_err_kind kind,
	       const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	kjconn_vseterr(err, kind, fmt, ap);
	va_end(ap);
}

char *kq_one_line(char *s)
{
	for (char *p = s; *p; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			*p = ' ';
	return s;
}

const char *kq_quote(char *dst, size_t size, const char *src, size_t len)
{
	static const char hex[] = "0123456789abcdef";
	size_t o = 0;

	if (size < 8) {
		if (size)
			dst[0] = '\0';
		return dst;
	}
	dst[o++] = '\'';
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)src[i];
		char esc[4];
		size_t n = 0;

		if (c == '\n' || c == '\r' || c == '\t' || c == '\\' || c == '\'') {
			esc[n++] = '\\';
			esc[n++] = c == '\n' ? 'n' : c == '\r' ? 'r' : c == '\t' ? 't' : (char)c;
		} else if (c < 0x20 || c >= 0x7f) {
			esc[n++] = '\\';
			esc[n++] = 'x';
			esc[n++] = hex[c >> 4];
			esc[n++] = hex[c & 15];
		} else {
			esc[n++] = (char)c;
		}
		/* Keep room for this char, the closing quote, "..." and NUL. */
		if (o + n + 5 > size) {
			memcpy(dst + o, "...", 3);
			o += 3;
			break;
		}
		memcpy(dst + o, esc, n);
		o += n;
	}
	dst[o++] = '\'';
	dst[o] = '\0';
	return dst;
}

const char *kq_quote_json(char *dst, size_t size, json_object *obj)
{
	const char *s = json_object_to_json_string_ext(obj,
			JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);

	if (!s)
		s = "(out of memory)";
	return kq_quote(dst, size, s, strlen(s));
}
