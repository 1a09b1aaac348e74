#!/usr/bin/env bash
# tests/lab/agent.sh: kawarimi-agent in a real guest over the real
# virtio-serial port: hello, inventory (the HCA NIC and rxe0 are there),
# quiesce refused with DeviceBusy while a foreign process holds rxe0, and
# quiesce/resume once it let go.
TEST_PREFIX=kwtag
. "$(dirname "$0")/lib.sh"
[ -x "$BUILD/agent/kawarimi-agent" ] || {
	echo "SKIP: kawarimi-agent is not built in $BUILD"
	exit 77
}
A=$S/a-node1.symvirt
agent() { "$KAWARIMI" agent --timeout 60 "$A" "$@"; }

lab_up --nodes 1 --rtt 0ms
gexec 1 --timeout 60 -- 'i=0; until rdma link show 2>/dev/null | grep -q "rxe0.*ACTIVE"; do i=$((i+1)); [ $i -gt 80 ] && exit 1; sleep 0.5; done' ||
	die "rxe0 not ACTIVE after boot"

out=$(agent hello '{"client": "tests/lab/agent.sh"}') || die "hello failed: $out"
grep -q '"protocol": *1' <<<"$out" || fail "hello: no protocol 1 in: $out"
grep -q '"hostname": *"node1"' <<<"$out" || fail "hello: hostname is not node1: $out"

inv=$(agent inventory) || die "inventory failed: $inv"
grep -q '"driver": *"e1000e"' <<<"$inv" || fail "inventory: no e1000e (the HCA NIC) in the PCI list"
grep -q '"rxe0"' <<<"$inv" || fail "inventory: no rxe0 among the verbs devices"
log "inventory lists the HCA NIC and rxe0"

gexec 1 -- 'ibv_rc_pingpong -d rxe0 -g 1 >/tmp/holder.log 2>&1 </dev/null &' || die "cannot start the holder"
gexec 1 --timeout 40 -- 'i=0; until ls -l /proc/$(pidof ibv_rc_pingpong)/fd 2>/dev/null | grep -q uverbs; do i=$((i+1)); [ $i -gt 60 ] && exit 1; sleep 0.5; done' ||
	die "the holder never opened /dev/infiniband/uverbs*"
err=$(agent quiesce '{"deadline-ms": 5000}' 2>&1)
rc=$?
[ $rc = 1 ] && grep -q DeviceBusy <<<"$err" ||
	fail "quiesce with a foreign rxe0 holder: expected DeviceBusy (rc 1), got rc $rc: $err"
grep -q ibv_rc_pingpong <<<"$err" || log "note: the DeviceBusy message does not name the holder: $err"
log "quiesce refused: $(head -1 <<<"$err")"

gexec 1 -- 'kill $(pidof ibv_rc_pingpong)' || fail "cannot stop the holder"
sleep 1
out=$(agent quiesce '{"deadline-ms": 10000}' 2>&1) || fail "quiesce without holders failed: $out"
out=$(agent resume '{"fabrics": ["verbs"], "link-timeout-ms": 20000}' 2>&1) ||
	fail "resume failed: $out"
grep -q '"verbs-ready": *true' <<<"$out" || fail "resume: verbs not ready: $out"
out=$(agent status) || fail "status failed"
grep -q '"state": *"running"' <<<"$out" || fail "status after resume is not running: $out"
finish
