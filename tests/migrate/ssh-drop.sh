#!/usr/bin/env bash
# A dropped ssh connection is a closed QMP socket: the source's endpoints
# go through one master (ssh://root@127.0.0.1), the destination's through
# another (ssh://root@localhost, the same private sshd); the destination's
# master is killed during the storage copy.  As when a destination QEMU
# dies (rollback-storage): exit 1 naming the VM and phase, the message
# says the ssh connection broke, the cluster rolls back over the source's
# connection, which still works, and the source runs with its disk
# untouched and no mirror left.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/../qmp/sshd-lib.sh"
command -v pgrep >/dev/null || { echo "SKIP: pgrep not installed"; exit 77; }
trap 'kws_stop; kwm_cleanup' EXIT

kws_start_sshd
kwm_images 1
cp "$T/s1.qcow2" "$T/s1.orig.qcow2"
kwm_start_src 1
kwm_start_dst 1
# 10 MiB at 2 MB/s: about five seconds of storage.
STORAGE=incremental BANDWIDTH=2MB/s kwm_cluster "$T/local.yaml" 1
sed -E "s#qmp: $T/s#qmp: $(kws_uri "$T/s")#; s#qmp: $T/d#qmp: $(kws_uri "$T/d" localhost)#" \
	"$T/local.yaml" >"$T/c.yaml"
grep -q "ssh://root@localhost:$SSHD_PORT$T/d1.qmp" "$T/c.yaml" || { cat "$T/c.yaml"; fail "cluster file"; }

timeout 120 "$KAWARIMI" migrate "$T/c.yaml" --json --report "$T/r.json" </dev/null \
	>"$T/out" 2>"$T/err" &
kpid=$!
progress='"vm":"vm1","phase":"storage","time_elapsed":[0-9]*,"disk_total":[0-9]*,"disk_processed":[1-9]'
for t in $(seq 1 100); do
	grep -q "$progress" "$T/out" && break
	sleep 0.1
done
grep -q "$progress" "$T/out" || { cat "$T/err"; fail "no storage progress"; }
grep -q '"vm":"vm1","phase":"storage","state":"end"' "$T/out" && fail "storage too fast to interrupt"
[ "$(kws_masters ok)" = 2 ] || fail "$(kws_masters ok) masters, want 2 (one per host name)"
master=$(pgrep -f -- "-S $T/run-ok/kawarimi-ssh/.*ControlMaster=yes.* -- localhost\$")
[ -n "$master" ] || fail "no master for localhost"
kill -9 $master
wait $kpid
rc=$?
cat "$T/err"
[ $rc -eq 1 ] || fail "exit status $rc, expected 1"
grep -q 'VM vm1 failed in phase storage' "$T/err" || fail "message does not name vm1 and storage"
grep -q "the destination QEMU's QMP connection (ssh://root@localhost:.*the ssh connection to localhost broke" "$T/err" ||
	fail "message does not say the ssh connection broke"
grep -q 'rolled back: every VM runs at the source' "$T/err" || fail "no rollback message"
[ "$(kwm_json "$T/r.json" 'r["result"]')" = rolled-back ] || fail "report result"
[ "$(kwm_status "$T/s1.qmp")" = running ] || fail "source not running"
kwm_qmp "$T/s1.qmp" query-block-jobs | grep -q '"return": \[\]' || fail "a block job is left"
kwm_qmp "$T/s1.qmp" query-named-block-nodes | grep -q kwm-nbd && fail "NBD node left"
qemu-img compare -U "$T/s1.orig.qcow2" "$T/s1.qcow2" || fail "source disk changed"
[ "$(kws_sessions ok)" = 0 ] || fail "ssh sessions left"
echo PASS
