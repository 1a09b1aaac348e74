#!/usr/bin/env bash
# The man pages as built: each renders with man(1) without a groff
# warning, and kawarimi(8) names every subcommand of `kawarimi help` and
# every option each subcommand's --help lists.
set -u
KAWARIMI=${KAWARIMI:?set by meson}
MANDIR=${MANDIR:?set by meson}
SRC=${SRC:?set by meson}
command -v man >/dev/null || { echo "SKIP: man not installed"; exit 77; }
fail() { echo "FAIL: $*" >&2; exit 1; }

for p in kawarimi.8 kawarimi-cluster.5 kawarimi-agent.8 kawarimi-btl.7 kawarimi-pingpong.1; do
	[ -s "$MANDIR/$p" ] || fail "$p was not built"
	out=$(MANWIDTH=80 man --warnings -l "$MANDIR/$p" 2>&1 >/dev/null)
	[ -z "$out" ] || fail "$p: man warns: $out"
	MANWIDTH=80 man -l "$MANDIR/$p" 2>/dev/null | grep -q '^NAME' || fail "$p has no NAME section"
done

page=$SRC/man/kawarimi.8.scd
subs=$("$KAWARIMI" help | awk '/^Subcommands:/ { f = 1; next } f && /^  [a-z]/ { print $1 }')
[ "$(wc -w <<<"$subs")" -ge 8 ] || fail "kawarimi help lists only: $subs"
for s in $subs; do
	grep -q "^\*kawarimi $s\*" "$page" || fail "kawarimi.8 has no entry for the subcommand '$s'"
	grep -q "^\*kawarimi $s\*" <(sed -n '/^# SYNOPSIS/,/^# DESCRIPTION/p' "$page") ||
		fail "kawarimi.8's synopsis lacks '$s'"
	[ "$s" = lab ] && continue	# its --help needs the source tree's lab
	for o in $("$KAWARIMI" "$s" --help 2>&1 | grep -o -- '--[a-z][a-z-]*' | sort -u); do
		grep -qF -- "*$o*" "$page" || fail "kawarimi.8 does not document '$s $o'"
	done
done
for v in $(grep -oE '^[a-z]+\)' "$SRC/lab/lab.sh" | tr -d ')'); do
	grep -qF "*$v*" "$page" || fail "kawarimi.8 does not name the lab verb '$v'"
done
# kawarimi-pingpong(1): every option its usage line names.
for o in $(grep -A3 '^static void usage' "$SRC/bench/kawarimi_pingpong.c" | grep -o -- '--[a-z][a-z-]*' | sort -u); do
	grep -qF -- "*$o*" "$SRC/man/kawarimi-pingpong.1.scd" || fail "kawarimi-pingpong.1 does not document '$o'"
done
echo PASS
