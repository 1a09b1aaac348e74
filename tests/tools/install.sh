#!/usr/bin/env bash
# `meson install` into the system, as a site admin would, then the tools
# used as installed, with nothing pointing at the build tree: kawarimi and
# kawarimi-agent from PATH, `man kawarimi` and `man kawarimi-cluster`,
# bash completion loaded by bash-completion itself, libkawarimi-qmp through
# pkg-config (only its public header), the agent's unit verified by
# systemd, and the BTL found by Open MPI with no MCA path set: ompi_info
# lists it and a 2-rank job runs over it.  Everything installed is removed
# on exit, even on failure, and files that were there before are put back.
#
# Usage: install.sh BUILD-DIR (root; run alone: is_parallel false)
set -u
BUILD=${1:?usage: install.sh BUILD-DIR}
[ "$(id -u)" -eq 0 ] || { echo "SKIP: installing into the system needs root"; exit 77; }
for t in ompi_info mpirun pkg-config cc; do
	command -v $t >/dev/null || { echo "SKIP: $t not installed"; exit 77; }
done
fail() { echo "FAIL: $*" >&2; exit 1; }

T=$(mktemp -d /tmp/kw-install.XXXXXX)
meson introspect --installed "$BUILD" |
	python3 -c 'import json, sys; print("\n".join(json.load(sys.stdin).values()))' >"$T/files" ||
	fail "meson introspect --installed"
[ "$(wc -l <"$T/files")" -ge 10 ] || fail "meson would install only: $(cat "$T/files")"

# What is there already (a package, another install) is kept aside.
mkdir "$T/saved"
while read -r f; do
	if [ -e "$f" ] || [ -L "$f" ]; then
		mkdir -p "$T/saved$(dirname "$f")" && cp -a "$f" "$T/saved$f" || fail "cannot save $f"
	fi
done <"$T/files"
cleanup() {
	local f
	while read -r f; do
		rm -f "$f"
		[ -e "$T/saved$f" ] || [ -L "$T/saved$f" ] && cp -a "$T/saved$f" "$f"
	done <"$T/files"
	ldconfig
	while read -r f; do
		if { [ -e "$f" ] || [ -L "$f" ]; } && ! { [ -e "$T/saved$f" ] || [ -L "$T/saved$f" ]; }; then
			echo "FAIL: $f is still installed" >&2
			exit 1
		fi
	done <"$T/files"
	rm -rf "$T"
}
trap cleanup EXIT

meson install -C "$BUILD" --no-rebuild --quiet >"$T/install.log" 2>&1 ||
	{ cat "$T/install.log"; fail "meson install"; }
ldconfig
# Nothing from the build tree or the tests' environment from here on.
unset OMPI_MCA_mca_base_component_path LD_LIBRARY_PATH LD_PRELOAD MANPATH
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
hash -r

kw=$(command -v kawarimi) && [ "$(grep -c "^$kw\$" "$T/files")" = 1 ] ||
	fail "kawarimi from PATH is '$kw', not the installed one"
kawarimi version | grep -qx "kawarimi [0-9.]*" || fail "kawarimi version: $(kawarimi version 2>&1)"
agent=$(grep '/kawarimi-agent$' "$T/files")
"$agent" --help | grep -q -- '--channel' || fail "$agent --help"

for p in kawarimi kawarimi-cluster kawarimi-agent kawarimi-btl; do
	[ "$(readlink -f "$(man -w "$p")")" = "$(grep "/$p\.[0-9]$" "$T/files")" ] ||
		fail "man -w $p: $(man -w "$p" 2>&1)"
done
MANWIDTH=80 man kawarimi 2>/dev/null | grep -q 'kawarimi migrate' || fail "man kawarimi"
MANWIDTH=80 man 5 kawarimi-cluster 2>/dev/null | grep -q 'limits.bandwidth' || fail "man kawarimi-cluster"

# bash-completion finds the script on its own (its dynamic loader).
got=$(bash -c '. /usr/share/bash-completion/bash_completion
	_completion_loader kawarimi
	COMP_WORDS=(kawarimi mi); COMP_CWORD=1; COMP_LINE="kawarimi mi"; COMP_POINT=11
	$(complete -p kawarimi | sed "s/.*-F \([^ ]*\) .*/\1/") kawarimi mi kawarimi
	echo "${COMPREPLY[*]}"')
[ "$got" = migrate ] || fail "kawarimi mi<TAB> offers '$got' after install"

# libkawarimi-qmp: pkg-config, the public header, the shared library.
[ "$(grep -c '/include/' "$T/files")" = 1 ] || fail "headers installed: $(grep /include/ "$T/files")"
cat >"$T/q.c" <<'C'
#include <stdio.h>
#include <string.h>
#include <kawarimi-qmp.h>
int main(void)
{
	struct kqmp_error e;
	struct kqmp *q = kqmp_open("/nonexistent/q.sock", 0, 100, &e);

	printf("%s\n", q ? "connected?" : kqmp_err_kind_name(e.kind));
	return q != NULL || !strlen(e.desc);
}
C
cc -o "$T/q" "$T/q.c" $(pkg-config --cflags --libs kawarimi-qmp) || fail "building against kawarimi-qmp.pc"
"$T/q" || fail "a program linked with the installed libkawarimi-qmp"

if command -v systemd-analyze >/dev/null; then
	unit=$(grep '/kawarimi-agent.service$' "$T/files")
	out=$(systemd-analyze verify --man=no "$unit" 2>&1) || fail "systemd-analyze verify $unit: $out"
	[ -z "$out" ] || fail "systemd-analyze verify $unit: $out"
fi

# Open MPI finds the component by itself.
ompi_info | grep -q "MCA btl: kawarimi" || fail "ompi_info does not list the kawarimi BTL"
if command -v kawarimi-pingpong >/dev/null; then
	out=$(timeout 120 mpirun -np 2 --mca pml ob1 --mca btl self,kawarimi \
		--mca btl_kawarimi_if_include lo kawarimi-pingpong --max-log 12 --check 2>&1)
	echo "$out" | tail -4
	echo "$out" | grep -q '# check: all payloads verified' || fail "2-rank job over the installed BTL"
fi
echo PASS
