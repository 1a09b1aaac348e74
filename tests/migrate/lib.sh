# shellcheck shell=bash
# Sourced by the coordinator's tests: real QEMU under TCG without a guest
# OS (q35, 128 MiB, a virtio-blk on a qcow2 overlay of a shared base), the
# destination started with -incoming defer -S, and helpers to query QMP.
# Everything lives in one temp dir named kwm-*, removed on exit with every
# process the test started.
set -u

KAWARIMI=${KAWARIMI:?set by meson}
FAKE_AGENT=${FAKE_AGENT:-}
for tool in qemu-system-x86_64 qemu-img qemu-io socat python3; do
	command -v "$tool" >/dev/null || { echo "SKIP: $tool not installed"; exit 77; }
done

T=$(mktemp -d /tmp/kwm-test.XXXXXX)
# Each test its own journals and locks (every migrate journals).
export KAWARIMI_STATE_DIR=$T/state
PIDS=()
kwm_cleanup() {
	local p
	for p in "${PIDS[@]}"; do kill -- "$p" 2>/dev/null; done
	sleep 0.2
	for p in "${PIDS[@]}"; do kill -9 -- "$p" 2>/dev/null; done
	wait 2>/dev/null
	# KWM_KEEP=1 keeps the files for a post-mortem.
	if [ -n "${KWM_KEEP:-}" ]; then echo "kept $T"; else rm -rf "$T"; fi
}
trap kwm_cleanup EXIT

fail() {
	echo "FAIL: $*" >&2
	exit 1
}

# Two root ports, an xHCI controller and a user netdev on both ends, so
# that an "HCA" can be plugged on either side: an e1000e on rp1 (PCIe
# hotplug needs the guest's cooperation, which a test without a guest OS
# cannot give) or a usb-net on xhci.0 (USB unplug completes at once, so
# the whole swap runs without a guest).  The machine must match.
QEMU_BASE=(qemu-system-x86_64 -machine q35 -accel tcg -m 128 -nodefaults -display none
	-device pcie-root-port,id=rp1,chassis=1,slot=1
	-device pcie-root-port,id=rp2,chassis=2,slot=2 -netdev user,id=hn0
	-device qemu-xhci,id=xhci)

# kwm_images N: a 256 MiB base with 32 MiB of data, a copy of it as the
# destination's base, and per VM a source overlay with known data (8 MiB
# + 2 MiB written) and an empty destination overlay.
kwm_images() {
	local n=$1 i
	qemu-img create -q -f qcow2 "$T/base.qcow2" 256M || fail "qemu-img create"
	qemu-io -c 'write -P 0xaa 0 32M' "$T/base.qcow2" >/dev/null || fail "qemu-io base"
	cp "$T/base.qcow2" "$T/dbase.qcow2"
	for i in $(seq 1 "$n"); do
		qemu-img create -q -f qcow2 -b "$T/base.qcow2" -F qcow2 "$T/s$i.qcow2"
		qemu-img create -q -f qcow2 -b "$T/dbase.qcow2" -F qcow2 "$T/d$i.qcow2"
		qemu-io -c "write -P 0x1$i 1M 8M" -c "write -P 0x2$i 100M 2M" "$T/s$i.qcow2" \
			>/dev/null || fail "qemu-io overlay $i"
	done
}

# Bytes allocated in the overlay itself (not in its backing file).
kwm_overlay_bytes() {
	qemu-img map --output=json "$1" | python3 -c '
import json, sys
print(sum(e["length"] for e in json.load(sys.stdin) if e["depth"] == 0 and e["data"]))'
}

kwm_wait_sock() {
	local i
	for i in $(seq 1 100); do
		[ -S "$1" ] && return 0
		sleep 0.1
	done
	fail "socket $1 did not appear"
}

# kwm_start_src I [QEMU ARGS...]
kwm_start_src() {
	local i=$1
	shift
	"${QEMU_BASE[@]}" -qmp "unix:$T/s$i.qmp,server=on,wait=off" \
		-blockdev "driver=qcow2,node-name=disk0,file.driver=file,file.filename=$T/s$i.qcow2" \
		-device virtio-blk-pci,drive=disk0,id=vblk0 "$@" 2>>"$T/qemu-s$i.log" &
	PIDS+=($!)
	eval "SRC_PID_$i=$!"
	kwm_wait_sock "$T/s$i.qmp"
}

# kwm_start_dst I [QEMU ARGS...]
kwm_start_dst() {
	local i=$1
	shift
	"${QEMU_BASE[@]}" -qmp "unix:$T/d$i.qmp,server=on,wait=off" \
		-blockdev "driver=qcow2,node-name=disk0,file.driver=file,file.filename=$T/d$i.qcow2" \
		-device virtio-blk-pci,drive=disk0,id=vblk0 -incoming defer -S "$@" \
		2>>"$T/qemu-d$i.log" &
	PIDS+=($!)
	eval "DST_PID_$i=$!"
	kwm_wait_sock "$T/d$i.qmp"
}

# kwm_qmp SOCKET COMMAND [ARGS-JSON]: prints the reply line.
kwm_qmp() {
	local args=${3:-}
	{
		echo '{"execute":"qmp_capabilities"}'
		if [ -n "$args" ]; then
			echo "{\"execute\":\"$2\",\"arguments\":$args}"
		else
			echo "{\"execute\":\"$2\"}"
		fi
	} | timeout 5 socat -t1 - "UNIX-CONNECT:$1" | grep -E '"(return|error)"' | tail -1
}

kwm_status() {
	kwm_qmp "$1" query-status | python3 -c 'import json,sys; print(json.load(sys.stdin)["return"]["status"])'
}

# kwm_json FILE EXPR: evaluates a python expression on the report as r.
kwm_json() {
	python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print($2)" "$1"
}

# kwm_cluster FILE N: writes a cluster file for VMs 1..N.  Knobs (env):
# STORAGE, PARALLEL, BANDWIDTH, TIMEOUTS (a YAML map), AGENTS=yes|no,
# SRC_HCA / DST_HCA (a YAML value, default none), RELAY=yes (the source
# dials the migration and NBD through kwm_relays' sockets).
kwm_cluster() {
	local f=$1 n=$2 i
	local tmo='{preflight: 10s, storage: 60s, memory: 60s}'
	[ -n "${TIMEOUTS:-}" ] && tmo=$TIMEOUTS
	{
		echo "format: 1"
		echo "cluster: test"
		echo "storage: ${STORAGE:-incremental}"
		echo "limits:"
		echo "  parallel: ${PARALLEL:-2}"
		echo "  bandwidth: ${BANDWIDTH:-unlimited}"
		echo "  timeouts: $tmo"
		echo "vms:"
		for i in $(seq 1 "$n"); do
			local sa=none da=none
			if [ "${AGENTS:-no}" = yes ]; then
				sa=$T/s$i.sv
				da=$T/d$i.sv
			fi
			echo "  - name: vm$i"
			echo "    source: {qmp: $T/s$i.qmp, symvirt: $sa, hca: ${SRC_HCA:-none}}"
			echo "    destination:"
			echo "      qmp: $T/d$i.qmp"
			echo "      symvirt: $da"
			echo "      hca: ${DST_HCA:-none}"
			if [ "${RELAY:-no}" = yes ]; then
				echo "      migration: {listen: \"unix:$T/m$i.sock\", connect: \"unix:$T/m$i.relay\"}"
				echo "      nbd: {listen: \"unix:$T/nbd$i.sock\", connect: \"unix:$T/nbd$i.relay\"}"
			else
				echo "      migration: {listen: \"unix:$T/m$i.sock\"}"
				echo "      nbd: {listen: \"unix:$T/nbd$i.sock\"}"
			fi
			echo "    disks: [{source: disk0}]"
		done
	} >"$f"
}

# kwm_agents N: one fake agent per VM, on its source and destination ends.
kwm_agents() {
	local i
	for i in $(seq 1 "$1"); do
		"$FAKE_AGENT" "$T/agent$i.log" "$T/s$i.sv" "$T/d$i.sv" \
			${KWM_AGENT_RANKS:+--rank $((i - 1))} "${@:2}" &
		PIDS+=($!)
		kwm_wait_sock "$T/d$i.sv"
	done
}

# kwm_relays N: the "WAN link" between the sites for VMs 1..N: a socat
# relay per migration and NBD socket (RELAY=yes in kwm_cluster), all in one
# process group (RELAY_PGID) so that kwm_blackhole can stop them together:
# a stopped relay drops nothing and resets nothing, like a link that went
# black; the sender's bytes just stop moving.
kwm_relays() {
	local i
	setsid bash -c '
		for i in $(seq 1 "$1"); do
			socat "UNIX-LISTEN:$2/m$i.relay,fork" "UNIX-CONNECT:$2/m$i.sock" 2>>"$2/relay.log" &
			socat "UNIX-LISTEN:$2/nbd$i.relay,fork" "UNIX-CONNECT:$2/nbd$i.sock" 2>>"$2/relay.log" &
		done
		wait' relays "$1" "$T" &
	RELAY_PGID=$!
	PIDS+=("-$RELAY_PGID")
	for i in $(seq 1 "$1"); do
		kwm_wait_sock "$T/m$i.relay"
		kwm_wait_sock "$T/nbd$i.relay"
	done
}

kwm_blackhole() { kill -STOP -- "-$RELAY_PGID"; }
kwm_heal() { kill -CONT -- "-$RELAY_PGID"; }

# kwm_vms N MIB: images for VMs 1..N (each source overlay kept as
# s$i.orig.qcow2), each source with MIB of random data in its RAM (no guest
# OS writes any), each destination waiting; their pids in SRC_PID_i/DST_PID_i.
kwm_vms() {
	local n=$1 mib=$2 i
	kwm_images "$n"
	for i in $(seq 1 "$n"); do
		cp "$T/s$i.qcow2" "$T/s$i.orig.qcow2"
		head -c $((mib << 20)) /dev/urandom >"$T/ram$i.bin"
		kwm_start_src "$i" -device "loader,file=$T/ram$i.bin,addr=0x2000000,force-raw=on"
		kwm_start_dst "$i"
	done
}

# kwm_wait_line FILE PATTERN [SECONDS]: waits (0.05 s steps, default 30 s)
# until a line of FILE matches the grep PATTERN; fails otherwise.
kwm_wait_line() {
	local i n=$((${3:-30} * 20))
	for i in $(seq 1 "$n"); do
		grep -q -- "$2" "$1" 2>/dev/null && return 0
		sleep 0.05
	done
	fail "no line matching '$2' in $1 within ${3:-30} s"
}

kwm_alive() {
	kill -0 "$1" 2>/dev/null
}

# kwm_pki DIR [ORG]: a throwaway PKI in QEMU's x509 layout for 127.0.0.1
# (lab/pki.sh); prints the client's DN as QEMU sees it.
kwm_pki() {
	command -v openssl >/dev/null || { echo "SKIP: openssl not installed"; exit 77; }
	bash "$(dirname "${BASH_SOURCE[0]}")/../../lab/pki.sh" "$@" || fail "could not make the PKI in $1"
}

# kwm_tcp_cluster FILE NAME STORAGE TLS MIG NBD: a 1-VM cluster file whose
# streams go over TCP on 127.0.0.1; TLS is the value of the tls key, MIG
# and NBD are "LISTEN-PORT[:CONNECT-PORT]" (a relay's port to dial).
kwm_tcp_cluster() {
	local mig=$5 nbd=$6
	cat >"$1" <<YAML
format: 1
cluster: $2
storage: $3
limits: {timeouts: {preflight: 10s, storage: 60s, memory: 60s}}
tls: $4
vms:
  - name: vm1
    source: {qmp: $T/s1.qmp, symvirt: none}
    destination:
      qmp: $T/d1.qmp
      symvirt: none
      migration: {listen: "tcp:127.0.0.1:${mig%%:*}", connect: "tcp:127.0.0.1:${mig##*:}"}
      nbd: {listen: "tcp:127.0.0.1:${nbd%%:*}", connect: "tcp:127.0.0.1:${nbd##*:}"}
    disks: [{source: disk0}]
YAML
}

# kwm_free_ports N: N TCP ports free on 127.0.0.1 right now.
kwm_free_ports() {
	python3 -c '
import socket, sys
ss = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in ss:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in ss))' "$1"
}

# kwm_relay DIR LISTEN=TARGET...: tests/migrate/dump-relay.py, started and
# waited for; RELAY_PID is its pid.
kwm_relay() {
	local d=$1 i
	shift
	mkdir -p "$d"
	python3 "$(dirname "${BASH_SOURCE[0]}")/dump-relay.py" "$d" "$@" 2>>"$d/relay.log" &
	RELAY_PID=$!
	PIDS+=($!)
	for i in $(seq 1 100); do
		[ -e "$d/ready" ] && return 0
		sleep 0.1
	done
	fail "the relay did not start: $(cat "$d/relay.log")"
}

# kwm_has FILE STRING: does FILE hold STRING's bytes anywhere?
kwm_has() {
	python3 -c 'import sys; sys.exit(0 if sys.argv[2].encode() in open(sys.argv[1], "rb").read() else 1)' "$1" "$2"
}

# kwm_objects SOCKET: the ids under /objects of a QEMU, one line.
kwm_objects() {
	kwm_qmp "$1" qom-list '{"path":"/objects"}' |
		python3 -c 'import json,sys; print(" ".join(o["name"] for o in json.load(sys.stdin)["return"]))'
}
