#!/usr/bin/env bash
# One round trip of the real thing, as README's first command does it:
# lab/demo --cycles 1 on its own lab instance (two node VMs, the MPI jobs
# on the kawarimi BTL, A->B over the shaped WAN, back to A onto the
# replugged HCA), short dwell times.  Passes only on the demo's
# "RESULT: OK": both jobs verified, both migrations completed, the paths
# where they belong, no guest panic, nothing left behind.
TEST_PREFIX=kwtrt
. "$(dirname "$0")/lib.sh"

out=$BUILD/roundtrip
KWL_PREFIX=$TEST_PREFIX KAWARIMI_DEMO_OUT=$out KAWARIMI_DEMO_DWELL=5 \
	"$SRC/lab/demo" --cycles 1 >"$BUILD/roundtrip.log" 2>&1
rc=$?
# The demo's own account; its summary is at the end.
cat "$BUILD/roundtrip.log"
[ $rc -eq 0 ] || fail "lab/demo --cycles 1 exited $rc"
grep -q '^RESULT: OK' "$BUILD/roundtrip.log" || fail "no RESULT: OK from lab/demo"
grep -q 'round trips passed: 1 of 1' "$BUILD/roundtrip.log" || fail "the round trip is not counted as passed"
ip netns list | grep -q "^$TEST_PREFIX-" && fail "namespaces left: $(ip netns list | grep "^$TEST_PREFIX-")"
finish
