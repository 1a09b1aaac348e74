#!/usr/bin/env bash
# vm1's source QEMU dies (kill -9) right after vm1's memory arrived at its
# destination, which then holds the only whole copy.  That destination
# must not be quit: vm1 goes forward and runs there, and so does vm2;
# nothing is left behind.
. "$(dirname "$0")/lib.sh"

kwm_vms 2 24
STORAGE=incremental BANDWIDTH=8MB/s PARALLEL=1 kwm_cluster "$T/c.yaml" 2
J=$KAWARIMI_STATE_DIR/test.journal

timeout 150 "$KAWARIMI" migrate "$T/c.yaml" --keep-source --json --report "$T/r.json" \
	>"$T/out" 2>"$T/err" &
kpid=$!
kwm_wait_line "$J" '"vm":"vm1","fact":"memory-complete"'
kill -9 "$SRC_PID_1"
wait $kpid
rc=$?
cat "$T/err"
[ $rc -eq 0 ] || fail "exit status $rc, expected 0"
[ "$(kwm_json "$T/r.json" 'r["vms"][0]["where"]')" = destination ] || fail "vm1 not at the destination"
[ "$(kwm_json "$T/r.json" 'r["vms"][1]["where"]')" = destination ] || fail "vm2 not at the destination"
for i in 1 2; do
	[ "$(kwm_status "$T/d$i.qmp")" = running ] || fail "vm$i destination not running"
	kwm_qmp "$T/d$i.qmp" query-block-exports | grep -q '"return": \[\]' || fail "vm$i: NBD export left"
done
kwm_qmp "$T/s2.qmp" query-block-jobs | grep -q '"return": \[\]' || fail "vm2: a block job is left"
[ "$(kwm_status "$T/s2.qmp")" = running ] && fail "vm2 runs on both sides"
grep -q 'source-gone' "$J" || fail "the journal does not record the source's death"
grep -q '"end":"completed"' "$J" || fail "the journal has no end line"
echo PASS
