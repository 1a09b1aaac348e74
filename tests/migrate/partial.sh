#!/usr/bin/env bash
# One VM cannot veto an evacuation:
# - --allow-partial: vm2's destination QEMU dies during the storage copy;
#   vm2 goes back alone, vm1 goes on and migrates; exit 4, result partial,
#   the closing lines say which VM is where; vm2's source runs with its
#   disk unchanged, nothing left behind.
# - vm1's destination HCA cannot be plugged (its bus does not exist there):
#   a warning, vm1 runs at the destination, its job left on TCP.
# - the same failure without --allow-partial rolls both back (exit 1).
. "$(dirname "$0")/lib.sh"

kwm_vms 2 16
AGENTS=yes kwm_agents 2
# The "HCA" at the destination names a bus the destination does not have.
AGENTS=yes DST_HCA='{driver: usb-net, id: hca9, netdev: hn0, bus: nosuchbus.0}' \
	BANDWIDTH=8MB/s PARALLEL=1 kwm_cluster "$T/c.yaml" 2

timeout 150 "$KAWARIMI" migrate "$T/c.yaml" --allow-partial --json --report "$T/r.json" \
	>"$T/out" 2>"$T/err" &
kpid=$!
kwm_wait_line "$T/out" '"vm":"vm2","phase":"storage","state":"start"'
kill -9 "$DST_PID_2"
wait $kpid
rc=$?
cat "$T/err"
[ $rc -eq 4 ] || fail "exit status $rc, expected 4 (partial)"
[ "$(kwm_json "$T/r.json" 'r["result"]')" = partial ] || fail "report result"
[ "$(kwm_json "$T/r.json" 'r["vms"][0]["where"]')" = destination ] || fail "vm1 not at its destination"
[ "$(kwm_json "$T/r.json" 'r["vms"][1]["where"]')" = source ] || fail "vm2 not at its source"
grep -q 'VM vm1 runs at the destination' "$T/err" || fail "closing lines do not say where vm1 is"
grep -q 'VM vm2 runs at the source' "$T/err" || fail "closing lines do not say where vm2 is"
[ "$(kwm_status "$T/d1.qmp")" = running ] || fail "vm1's destination not running"
[ "$(kwm_status "$T/s2.qmp")" = running ] || fail "vm2's source not running"
kwm_qmp "$T/s2.qmp" query-block-jobs | grep -q '"return": \[\]' || fail "vm2: a block job is left"
qemu-img compare -U "$T/s2.orig.qcow2" "$T/s2.qcow2" >/dev/null || fail "vm2's source disk changed"
# The HCA that could not be plugged: a warning, and the job resumed on TCP.
grep -q "could not be plugged; the job goes on over TCP" "$T/out" || fail "no warning for the HCA"
# (A plugged HCA would have the job quiesced and resumed onto it there.)
grep -q ' 1 hello ' "$T/agent1.log" || fail "vm1's agent not greeted at the destination"
grep -q ' 1 quiesce ' "$T/agent1.log" && fail "vm1's job moved although no HCA was plugged"

# Without --allow-partial the same failure takes every VM back.
for i in 1 2; do
	kill "$(eval echo "\$DST_PID_$i")" 2>/dev/null
	kill "$(eval echo "\$SRC_PID_$i")" 2>/dev/null
done
sleep 0.5
kwm_images 2
for i in 1 2; do
	rm -f "$T/s$i.qmp" "$T/d$i.qmp"
	kwm_start_src "$i" -device "loader,file=$T/ram$i.bin,addr=0x2000000,force-raw=on"
	kwm_start_dst "$i"
done
timeout 150 "$KAWARIMI" migrate "$T/c.yaml" --json --report "$T/r2.json" >"$T/out2" 2>"$T/err2" &
kpid=$!
kwm_wait_line "$T/out2" '"vm":"vm2","phase":"storage","state":"start"'
kill -9 "$DST_PID_2"
wait $kpid
rc=$?
[ $rc -eq 1 ] || { cat "$T/err2"; fail "without --allow-partial: exit status $rc, expected 1"; }
[ "$(kwm_json "$T/r2.json" 'r["result"]')" = rolled-back ] || fail "without --allow-partial: result"
[ "$(kwm_status "$T/s1.qmp")" = running ] || fail "vm1's source not running after the rollback"
echo PASS
