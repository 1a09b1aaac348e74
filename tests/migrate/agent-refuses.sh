#!/usr/bin/env bash
# An agent that refuses to quiesce (--hold-job, so the quiesce barrier
# runs) makes the whole cluster roll back after storage pre-copy: the other
# VM's quiesced job is resumed, mirrors and NBD exports are gone, both
# sources run.
. "$(dirname "$0")/lib.sh"

kwm_images 2
"$FAKE_AGENT" "$T/agent1.log" "$T/s1.sv" "$T/d1.sv" & PIDS+=($!)
"$FAKE_AGENT" "$T/agent2.log" "$T/s2.sv" "$T/d2.sv" --refuse quiesce & PIDS+=($!)
kwm_wait_sock "$T/d1.sv"; kwm_wait_sock "$T/d2.sv"
for i in 1 2; do kwm_start_src $i; kwm_start_dst $i; done
STORAGE=incremental AGENTS=yes kwm_cluster "$T/c.yaml" 2

timeout 120 "$KAWARIMI" migrate "$T/c.yaml" --hold-job --report "$T/r.json" >"$T/out" 2>"$T/err"
rc=$?
cat "$T/err"
[ $rc -eq 1 ] || fail "exit status $rc, expected 1"
grep -q 'VM vm2 failed in phase quiesce: .*DeviceBusy' "$T/err" || fail "message"
[ "$(kwm_json "$T/r.json" 'r["result"]')" = rolled-back ] || fail "report result"
for i in 1 2; do
	[ "$(kwm_status "$T/s$i.qmp")" = running ] || fail "vm$i source not running"
	kwm_qmp "$T/s$i.qmp" query-block-jobs | grep -q '"return": \[\]' || fail "vm$i: block job left"
done
# vm1 was quiesced (or about to be): whatever it got, it ends resumed.
tail -1 "$T/agent1.log" | grep -q ' 0 resume ' ||
	grep -vq quiesce "$T/agent1.log" || fail "vm1's job left quiesced"
echo PASS
