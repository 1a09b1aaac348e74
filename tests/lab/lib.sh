# shellcheck shell=bash
# Common part of the lab tests: each boots its own small lab instance
# (own prefix, namespaces, sockets), drives the guests through their serial
# consoles and QEMU through QMP, and tears everything down on exit, also
# when it fails.  Sourced by tests/lab/*.sh; meson sets KAWARIMI_SOURCE and
# KAWARIMI_BUILD.
set -u

if [ "${KAWARIMI_SANITIZE:-0}" = 1 ]; then
	# The guests run the plain build's binaries (ASan ones would need the
	# sanitizer runtime inside the guest image); the lab is tested once.
	echo "SKIP: lab tests run in the plain build only (guests use its binaries)"
	exit 77
fi
if [ "$(id -u)" != 0 ]; then
	echo "SKIP: the lab needs root (network namespaces)"
	exit 77
fi

SRC=${KAWARIMI_SOURCE:?}
BUILD=${KAWARIMI_BUILD:?}
LAB=$SRC/lab/lab.sh
KAWARIMI=$BUILD/migrate/kawarimi
QMPW=$SRC/lab/kwl-qmp.py
export KAWARIMI_BUILD=$BUILD
# Each test sets TEST_PREFIX (fixed, so a leftover of a killed run of the
# same test is taken down first); names start with kwt.
export KWL_PREFIX=${TEST_PREFIX:?set TEST_PREFIX before sourcing lib.sh}
export KWL_STATE=/run/kawarimi-lab/$KWL_PREFIX
# The coordinator's journals and locks go with the lab they belong to.
export KAWARIMI_STATE_DIR=$KWL_STATE/kawarimi
S=$KWL_STATE
failures=0

log() { echo "[$(date +%T)] $*"; }
fail() {
	echo "FAIL: $*"
	failures=$((failures + 1))
}
die() {
	echo "FAIL: $*"
	exit 1
}

cleanup() {
	local rc=$?
	if [ $rc != 0 ] && [ -d "$S" ]; then
		for f in "$S"/*-node*.log; do
			[ -f "$f" ] && { echo "---- tail of $f"; tail -n 30 "$f"; }
		done
	fi
	"$LAB" down >/dev/null 2>&1
	exit $rc
}
trap cleanup EXIT

# A leftover instance of this test from a killed run goes first.
"$LAB" down >/dev/null 2>&1

lab_up() {
	log "lab up $*"
	"$LAB" up "$@" || die "lab up $* failed"
}

# gexec NODE [--timeout S] -- CMD: runs CMD in the guest, prints its output.
gexec() { "$LAB" exec "$@"; }

qmp() { "$KAWARIMI" qmp "$@"; }

finish() {
	if [ $failures -gt 0 ]; then
		echo "$failures check(s) failed"
		exit 1
	fi
	echo "all checks passed"
	exit 0
}
