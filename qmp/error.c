/* SPDX-License-Identifier: MIT */
/* Errors as values, and quoting bad input for them. */
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "conn.h"
#include "kqmp_internal.h"

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

void kqmp_conn_vseterr(struct kqmp_error *err, enum kqmp_err_kind kind,
		    const char *fmt, va_list ap)
{
	if (!err)
		return;
	err->kind = kind;
	err->cls[0] = '\0';
	vsnprintf(err->desc, sizeof(err->desc), fmt, ap);
	kqmp_one_line(err->desc);
}

void kqmp_seterr(struct kqmp_error *err, enum kqmp_err_kind kind,
	       const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	kqmp_conn_vseterr(err, kind, fmt, ap);
	va_end(ap);
}

/* Length of the well-formed UTF-8 sequence at s (RFC 3629: no overlong
 * forms, no surrogates, nothing above U+10FFFF) with its code point in
 * *cp, or 0 when s does not start one. */
static size_t u8_seq(const unsigned char *s, uint32_t *cp)
{
	uint32_t v, min;
	size_t n;

	if (s[0] < 0x80) {
		*cp = s[0];
		return 1;
	}
	if (s[0] >= 0xc2 && s[0] <= 0xdf) {
		n = 2, v = s[0] & 0x1f, min = 0x80;
	} else if (s[0] >= 0xe0 && s[0] <= 0xef) {
		n = 3, v = s[0] & 0x0f, min = 0x800;
	} else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
		n = 4, v = s[0] & 0x07, min = 0x10000;
	} else {
		return 0;
	}
	for (size_t i = 1; i < n; i++) {
		if ((s[i] & 0xc0) != 0x80)	/* the terminating NUL stops here too */
			return 0;
		v = v << 6 | (s[i] & 0x3f);
	}
	if (v < min || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff))
		return 0;
	*cp = v;
	return n;
}

/* A terminal acts on C0 controls (ESC starts a sequence, CR rewrites the
 * line), DEL and C1 controls (U+009B is a CSI of its own); a byte that is
 * not UTF-8 may be taken as one by a terminal in an 8-bit mode. */
static size_t sanitize(char *dst, size_t size, const char *src, char repl)
{
	const unsigned char *s = (const unsigned char *)src;
	size_t o = 0;

	if (!size)
		return 0;
	while (*s) {
		uint32_t cp = 0;
		size_t n = u8_seq(s, &cp);
		bool bad = !n || cp < 0x20 || cp == 0x7f || (cp >= 0x80 && cp <= 0x9f);

		if (o + (bad ? 1 : n) >= size)
			break;
		if (bad) {
			dst[o++] = repl;
		} else {
			memmove(dst + o, s, n);	/* dst may be src: o never passes s */
			o += n;
		}
		s += n ? n : 1;
	}
	dst[o] = '\0';
	return o;
}

size_t kqmp_printable(char *dst, size_t size, const char *src)
{
	return sanitize(dst, size, src, '?');
}

/* Not inlined: gcc 12's -Wformat-truncation, under -fsanitize=undefined,
 * took the inlined loop for a null format string in kqmp_conn_vseterr(). */
__attribute__((noinline))
char *kqmp_one_line(char *s)
{
	sanitize(s, strlen(s) + 1, s, ' ');
	return s;
}

const char *kqmp_quote(char *dst, size_t size, const char *src, size_t len)
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

const char *kqmp_quote_json(char *dst, size_t size, json_object *obj)
{
	const char *s = json_object_to_json_string_ext(obj,
			JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);

	if (!s)
		s = "(out of memory)";
	return kqmp_quote(dst, size, s, strlen(s));
}
