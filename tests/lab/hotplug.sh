#!/usr/bin/env bash
# tests/lab/hotplug.sh acpi|native: the HCA NIC (e1000e on a pcie-root-port,
# rxe0 on top) hot-unplugged and plugged back in a real guest, under ACPI
# PCI hotplug (q35's default) or native PCIe hotplug (pciehp).  Under ACPI
# also: device_del while a process holds rxe0 must not complete (no
# DEVICE_DELETED, QEMU and guest unharmed) and completes once it lets go.
mode=${1:?acpi or native}
TEST_PREFIX=kwth${mode:0:1}
. "$(dirname "$0")/lib.sh"
Q=$S/a-node1.qmp
HCA='{"driver":"e1000e","netdev":"hcanet","bus":"rp1","id":"hca0","mac":"52:54:00:71:00:01"}'
WAIT_RXE='i=0; while ! rdma link show 2>/dev/null | grep -q "rxe0.*ACTIVE"; do i=$((i+1)); [ $i -gt 80 ] \&\& exit 1; sleep 0.5; done'
WAIT_RXE=${WAIT_RXE//\\&/&}

hca_present() { qmp "$Q" query-pci | grep -q '"hca0"'; }

unplug_cooperating() {
	local out
	out=$("$QMPW" "$Q" device_del '{"id":"hca0"}' --wait-event DEVICE_DELETED --timeout 40) ||
		die "$mode: no DEVICE_DELETED within 40 s for an idle HCA"
	log "$mode: $(tail -1 <<<"$out")"
	hca_present && fail "$mode: query-pci still lists hca0 after DEVICE_DELETED"
	gexec 1 -- 'ls /sys/class/infiniband; grep -l 52:54:00:71 /sys/class/net/*/address' &&
		fail "$mode: the guest still has rxe0 or the HCA netdev after the unplug"
}

plug_back() {
	qmp "$Q" device_add "$HCA" >/dev/null || die "$mode: device_add of the HCA failed"
	hca_present || fail "$mode: query-pci does not list hca0 after device_add"
	gexec 1 --timeout 60 -- "$WAIT_RXE" || fail "$mode: rxe0 not ACTIVE within 40 s after the plug"
	gexec 1 -- 'ip -br addr | grep -q 10.71.0.1/24' || fail "$mode: the HCA NIC has no 10.71.0.1 after the plug"
}

lab_up --nodes 1 --hotplug "$mode" --rtt 0ms
gexec 1 -- "$WAIT_RXE" || die "$mode: rxe0 not ACTIVE after boot"
hca_present || die "$mode: hca0 not in query-pci after boot"

log "$mode: unplug with the guest cooperating, plug back"
unplug_cooperating
plug_back

if [ "$mode" = acpi ]; then
	log "$mode: device_del while a verbs user holds rxe0"
	gexec 1 -- 'ibv_rc_pingpong -d rxe0 -g 1 >/tmp/holder.log 2>&1 </dev/null &' ||
		die "cannot start the holder"
	gexec 1 --timeout 40 -- 'i=0; until ls -l /proc/$(pidof ibv_rc_pingpong)/fd 2>/dev/null | grep -q uverbs; do i=$((i+1)); [ $i -gt 60 ] && exit 1; sleep 0.5; done' ||
		die "the holder never opened /dev/infiniband/uverbs*"
	"$QMPW" "$Q" device_del '{"id":"hca0"}' --wait-event DEVICE_DELETED --timeout 10
	rc=$?
	[ $rc = 124 ] || fail "device_del with rxe0 held: expected a clean timeout (124), got rc $rc"
	[ "$("$LAB" qmp 1 a '{"execute":"query-status"}' | grep -c '"running"')" = 1 ] ||
		fail "QEMU is not running after the stuck device_del"
	gexec 1 -- 'ls /sys/class/infiniband | grep -q rxe0' || fail "rxe0 vanished while held"
	log "$mode: holder released"
	gexec 1 -- 'kill $(pidof ibv_rc_pingpong)' || fail "cannot stop the holder"
	t=0
	while hca_present && [ $t -lt 40 ]; do
		sleep 0.5
		t=$((t + 1))
	done
	hca_present && fail "the pending unplug did not complete within 20 s after the holder let go"
	log "$mode: the pending unplug completed after $((t / 2)) s"
	plug_back
fi
finish
