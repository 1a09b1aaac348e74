#!/usr/bin/env bash
# Two cells of the fault matrix on the real thing (docs/reliability.md):
# lab/demo --fault MODE --cycles 1 with the MPI jobs running, MODE being
# coordinator (kawarimi killed in node1's memory phase, then `kawarimi
# recover`) or source (node1's source QEMU killed once its memory arrived).
# Passes only on the demo's "RESULT: OK": the jobs verified their data
# after the fault and a whole round trip, nothing left behind.
MODE=${1:?coordinator or source}
TEST_PREFIX=kwtf${MODE:0:1}
. "$(dirname "$0")/lib.sh"

out=$BUILD/fault-$MODE
KWL_PREFIX=$TEST_PREFIX KAWARIMI_DEMO_OUT=$out KAWARIMI_DEMO_DWELL=5 \
	"$SRC/lab/demo" --fault "$MODE" --cycles 1 >"$BUILD/fault-$MODE.log" 2>&1
rc=$?
cat "$BUILD/fault-$MODE.log"
[ $rc -eq 0 ] || fail "lab/demo --fault $MODE exited $rc"
grep -q '^RESULT: OK' "$BUILD/fault-$MODE.log" || fail "no RESULT: OK from lab/demo"
if [ "$MODE" = coordinator ]; then
	grep -q 'recovered: rolled-back' "$BUILD/fault-$MODE.log" || fail "recover did not roll back"
else
	grep -q 'the VM goes forward' "$out/migrate-fault.json" ||
		fail "node1 did not go forward"
fi
ip netns list | grep -q "^$TEST_PREFIX-" && fail "namespaces left: $(ip netns list | grep "^$TEST_PREFIX-")"
finish
