#!/usr/bin/env bash
# Rollback: a destination QEMU dies during storage pre-copy.  Every source
# keeps running with its disk untouched, no mirror or NBD node is left,
# the exit status is 1 and names the VM and phase, the report says rolled
# back.
. "$(dirname "$0")/lib.sh"

kwm_images 2
for i in 1 2; do
	cp "$T/s$i.qcow2" "$T/s$i.orig.qcow2"
	kwm_start_src $i; kwm_start_dst $i
done
# 10 MiB per VM through 4 MB/s shared by two: a few seconds of storage.
STORAGE=incremental PARALLEL=2 BANDWIDTH=4MB/s kwm_cluster "$T/c.yaml" 2

timeout 120 "$KAWARIMI" migrate "$T/c.yaml" --json --report "$T/r.json" --journal "$T/j.log" \
	>"$T/out" 2>"$T/err" &
kpid=$!
for t in $(seq 1 100); do
	grep -q '"vm":"vm2","phase":"storage","state":"start"' "$T/out" 2>/dev/null && break
	sleep 0.1
done
# Once --json has reported some of vm2's copy, its destination dies.
progress='"event":"progress","time":[0-9.]*,"vm":"vm2","phase":"storage","time_elapsed":[0-9]*,"disk_total":[0-9]*,"disk_processed":[1-9]'
for t in $(seq 1 50); do
	grep -q "$progress" "$T/out" && break
	sleep 0.1
done
grep -q "$progress" "$T/out" || fail "no storage progress events"
grep -q '"vm":"vm2","phase":"storage","state":"end"' "$T/out" && fail "storage too fast to interrupt"
kill -9 "$DST_PID_2"
wait $kpid
rc=$?
cat "$T/err"
[ $rc -eq 1 ] || fail "exit status $rc, expected 1"
grep -q 'VM vm2 failed in phase storage' "$T/err" || fail "message does not name vm2 and storage"
grep -q 'rolled back: every VM runs at the source' "$T/err" || fail "no rollback message"
[ "$(kwm_json "$T/r.json" 'r["result"]')" = rolled-back ] || fail "report result"
[ "$(kwm_json "$T/r.json" 'r["error"]["vm"] + "/" + r["error"]["phase"]')" = vm2/storage ] ||
	fail "report error"
# Two at a time under a 4 MB/s cap: 2 MB/s each from the start.
[ "$(grep -c '"execute":"blockdev-mirror".*"speed":2000000' "$T/j.log")" = 2 ] ||
	fail "mirror speeds: $(grep blockdev-mirror "$T/j.log")"
for i in 1 2; do
	[ "$(kwm_status "$T/s$i.qmp")" = running ] || fail "vm$i source not running"
	[ "$(kwm_json "$T/r.json" "r['vms'][$((i - 1))]['result']")" = rolled-back ] ||
		fail "vm$i not rolled back"
	kwm_qmp "$T/s$i.qmp" query-block-jobs | grep -q '"return": \[\]' || fail "vm$i: a block job is left"
	kwm_qmp "$T/s$i.qmp" query-named-block-nodes | grep -q kwm-nbd && fail "vm$i: NBD node left"
	qemu-img compare -U "$T/s$i.orig.qcow2" "$T/s$i.qcow2" || fail "vm$i source disk changed"
done
# vm1's destination is alive and can be retried: its NBD server is gone.
kwm_qmp "$T/d1.qmp" nbd-server-stop | grep -q '"error"' || fail "vm1's NBD server still running"
[ "$(kwm_status "$T/d1.qmp")" = inmigrate ] || fail "vm1 destination changed state"
echo PASS
