#!/usr/bin/env bash
# A failure after switchover is not rolled back: vm2's agent refuses to
# resume onto the HCA plugged at its destination.  Both VMs run at their
# destinations and both sources are quit (finish comes right after the
# switchover, before the resume, once every destination runs); exit
# status 3 and the report say failed after switchover.
. "$(dirname "$0")/lib.sh"

kwm_images 2
"$FAKE_AGENT" "$T/agent1.log" "$T/s1.sv" "$T/d1.sv" & PIDS+=($!)
"$FAKE_AGENT" "$T/agent2.log" "$T/s2.sv" "$T/d2.sv" --refuse resume & PIDS+=($!)
kwm_wait_sock "$T/d1.sv"; kwm_wait_sock "$T/d2.sv"
for i in 1 2; do kwm_start_src $i; kwm_start_dst $i; done
STORAGE=incremental AGENTS=yes DST_HCA='{driver: e1000e, id: hca0, netdev: hn0, bus: rp1}' \
	kwm_cluster "$T/c.yaml" 2

timeout 120 "$KAWARIMI" migrate "$T/c.yaml" --report "$T/r.json" >"$T/out" 2>"$T/err"
rc=$?
cat "$T/out" "$T/err"
[ $rc -eq 3 ] || fail "exit status $rc, expected 3"
grep -q 'VM vm2 failed in phase resume' "$T/err" || fail "message"
grep -q 'after switchover; no rollback' "$T/err" || fail "no word on the missing rollback"
[ "$(kwm_json "$T/r.json" 'r["result"]')" = failed-after-switchover ] || fail "report result"
[ "$(kwm_json "$T/r.json" '[v["result"] for v in r["vms"]]')" = "['migrated', 'failed']" ] ||
	fail "VM results"
for i in 1 2; do
	[ "$(kwm_status "$T/d$i.qmp")" = running ] || fail "vm$i destination not running"
done
for t in $(seq 1 50); do kwm_alive "$SRC_PID_1" || break; sleep 0.1; done
kwm_alive "$SRC_PID_1" && fail "vm1's source was not quit"
for t in $(seq 1 50); do kwm_alive "$SRC_PID_2" || break; sleep 0.1; done
kwm_alive "$SRC_PID_2" && fail "vm2's source was not quit (its destination runs)"
echo PASS
