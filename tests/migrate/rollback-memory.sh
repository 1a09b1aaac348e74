#!/usr/bin/env bash
# Rollback: the destination QEMU dies during the memory migration.  The
# source keeps running, its disk untouched, no mirror is left; exit 1
# naming the VM and phase; the report says rolled back.
. "$(dirname "$0")/lib.sh"

kwm_images 1
cp "$T/s1.qcow2" "$T/s1.orig.qcow2"
# 24 MiB of random data in guest RAM (no guest OS to write it): with a
# 6 MB/s cap the memory copy takes a few seconds.
head -c $((24 << 20)) /dev/urandom >"$T/ram.bin"
kwm_start_src 1 -device "loader,file=$T/ram.bin,addr=0x2000000,force-raw=on"
kwm_start_dst 1
STORAGE=incremental BANDWIDTH=6MB/s kwm_cluster "$T/c.yaml" 1

timeout 120 "$KAWARIMI" migrate "$T/c.yaml" --json --report "$T/r.json" >"$T/out" 2>"$T/err" &
kpid=$!
kwm_wait_line "$T/out" '"vm":"vm1","phase":"memory","state":"start"'
sleep 1
grep -q '"vm":"vm1","phase":"memory","state":"end"' "$T/out" && fail "memory too fast to interrupt"
kill -9 "$DST_PID_1"
wait $kpid
rc=$?
cat "$T/err"
[ $rc -eq 1 ] || fail "exit status $rc, expected 1"
grep -q 'VM vm1 failed in phase memory' "$T/err" || fail "message does not name vm1 and memory"
[ "$(kwm_json "$T/r.json" 'r["result"]')" = rolled-back ] || fail "report result"
[ "$(kwm_json "$T/r.json" 'r["vms"][0]["rollback"]["complete"]')" = True ] || fail "rollback incomplete"
[ "$(kwm_status "$T/s1.qmp")" = running ] || fail "source not running"
kwm_qmp "$T/s1.qmp" query-block-jobs | grep -q '"return": \[\]' || fail "a block job is left"
kwm_qmp "$T/s1.qmp" query-migrate | grep -qE '"status": "(cancelled|failed)"' || fail "migration not stopped"
qemu-img compare -U "$T/s1.orig.qcow2" "$T/s1.qcow2" || fail "source disk changed"
echo PASS
