#!/usr/bin/env bash
# Ctrl-C (SIGINT) during storage pre-copy rolls the migration back instead
# of leaving a mirror and an NBD export behind.
. "$(dirname "$0")/lib.sh"

kwm_images 1
kwm_start_src 1
kwm_start_dst 1
STORAGE=incremental BANDWIDTH=2MB/s kwm_cluster "$T/c.yaml" 1

"$KAWARIMI" migrate "$T/c.yaml" --json --report "$T/r.json" >"$T/out" 2>"$T/err" &
kpid=$!
PIDS+=($kpid)
for t in $(seq 1 100); do
	grep -q '"vm":"vm1","phase":"storage","state":"start"' "$T/out" 2>/dev/null && break
	sleep 0.1
done
sleep 0.5
kill -INT $kpid
wait $kpid
rc=$?
cat "$T/err"
[ $rc -eq 1 ] || fail "exit status $rc, expected 1"
grep -q 'VM vm1 failed in phase storage: interrupted' "$T/err" || fail "message"
[ "$(kwm_json "$T/r.json" 'r["result"]')" = rolled-back ] || fail "report result"
[ "$(kwm_status "$T/s1.qmp")" = running ] || fail "source not running"
kwm_qmp "$T/s1.qmp" query-block-jobs | grep -q '"return": \[\]' || fail "a block job is left"
kwm_qmp "$T/s1.qmp" query-named-block-nodes | grep -q kwm-nbd && fail "NBD node left"
kwm_qmp "$T/d1.qmp" nbd-server-stop | grep -q '"error"' || fail "NBD server still running"
echo PASS
