#!/usr/bin/env bash
# bench/migration/run.sh: `kawarimi migrate` of 1 and 2 VMs, incremental vs
# full storage, through a WAN shaped like the paper's (Takano et al. 2013:
# SINET, ~7.5 ms RTT, 920 Mbit/s), printed next to the paper's table.
#
#   sudo bench/migration/run.sh [BUILD_DIR]        (default: build)
#
# Knobs (environment):
#   VMS="1 2"  MODES="incremental full"  RATE=920mbit  RTT_MS=7.5
#   DISK=5G  BASE_MB=4608 (data in the shared base)  OVERLAY_MB=256
#   (written to each VM's overlay)  RAM=512  RAM_MB=256 (random data put in
#   guest RAM; there is no guest OS, so this stands in for a booted one)
#   KWM_BENCH_DIR (default /var/tmp): where the images go (~3 x BASE_MB).
#   TLS="none x509": each run in clear (tls: none) and over TLS (a throwaway
#   PKI from lab/pki.sh), side by side; the table gives the
#   x509 run's time over the clear one's.
#
# The WAN: two network namespaces joined by a veth pair with tbf at RATE on
# both ends; the delay comes from the lab's relay (lab/kwl-relay, RTT/2
# each way, no netem in this kernel).  Sources run in kwmb-a, destinations
# in kwmb-b; the migration and NBD streams go through the relay in kwmb-a.
# QMP stays on unix sockets.  Speed is the point here, so nothing is
# asserted: it prints what it measured.
set -u
BUILD=${1:-build}
VMS=${VMS:-1 2}
MODES=${MODES:-incremental full}
RATE=${RATE:-920mbit}
RTT_MS=${RTT_MS:-7.5}
DISK=${DISK:-5G}
BASE_MB=${BASE_MB:-4608}
OVERLAY_MB=${OVERLAY_MB:-256}
RAM=${RAM:-512}
RAM_MB=${RAM_MB:-256}
TLS=${TLS:-none}
NS_A=kwmb-a
NS_B=kwmb-b
KAWARIMI=$BUILD/migrate/kawarimi
RELAY=$BUILD/lab/kwl-relay

die() { echo "bench: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "needs root (network namespaces, tbf)"
[ -x "$KAWARIMI" ] || die "no $KAWARIMI; build first (ninja -C $BUILD)"
[ -x "$RELAY" ] || die "no $RELAY; build the lab's relay (ninja -C $BUILD lab/kwl-relay)"
for t in qemu-system-x86_64 qemu-img qemu-io ip tc python3; do
	command -v $t >/dev/null || die "$t not installed"
done
ip netns list | grep -qw $NS_A && die "namespace $NS_A exists (another bench running?)"

T=$(mktemp -d "${KWM_BENCH_DIR:-/var/tmp}/kwm-bench.XXXXXX")
PIDS=()
stop_all() {
	local p
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
	sleep 0.3
	for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
	[ ${#PIDS[@]} -gt 0 ] && wait "${PIDS[@]}" 2>/dev/null
	PIDS=()
}
cleanup() {
	stop_all
	[ -n "${RELAY_PID:-}" ] && kill "$RELAY_PID" 2>/dev/null
	ip netns del $NS_A 2>/dev/null
	ip netns del $NS_B 2>/dev/null
	rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wan_up() {
	ip netns add $NS_A && ip netns add $NS_B || die "netns"
	ip link add kwmb-wa netns $NS_A type veth peer name kwmb-wb netns $NS_B || die "veth"
	ip -n $NS_A link set lo up
	ip -n $NS_B link set lo up
	ip -n $NS_A addr add 10.78.0.1/30 dev kwmb-wa
	ip -n $NS_B addr add 10.78.0.2/30 dev kwmb-wb
	ip -n $NS_A link set kwmb-wa up
	ip -n $NS_B link set kwmb-wb up
	tc -n $NS_A qdisc add dev kwmb-wa root tbf rate "$RATE" burst 256kb latency 20ms || die "tbf"
	tc -n $NS_B qdisc add dev kwmb-wb root tbf rate "$RATE" burst 256kb latency 20ms || die "tbf"
	local rules=() i
	for i in 1 2; do
		rules+=("127.0.0.1:$((4400 + i))=10.78.0.2:$((4400 + i))")
		rules+=("127.0.0.1:$((10800 + i))=10.78.0.2:$((10800 + i))")
	done
	ip netns exec $NS_A "$RELAY" --delay-ms "$(awk -v r="$RTT_MS" 'BEGIN{print r/2}')" \
		"${rules[@]}" >"$T/relay.log" 2>&1 &
	RELAY_PID=$!
}

# A PKI whose server certificate fits what the sources dial (the relay).
pki() {
	DN=$(bash "$(dirname "$0")/../../lab/pki.sh" "$T/pki" kawarimi-bench \
		IP:127.0.0.1) || die "could not make the PKI"
}

images() {
	echo "bench: base image ($DISK, $BASE_MB MiB of data) and its copy at the destination..." >&2
	qemu-img create -q -f qcow2 "$T/base.qcow2" "$DISK"
	# qemu-io takes at most ~2 GiB per request: write in 512 MiB pieces.
	local off=0 len cmds=()
	while [ $off -lt "$BASE_MB" ]; do
		len=$((BASE_MB - off > 512 ? 512 : BASE_MB - off))
		cmds+=(-c "write -P 0x5a ${off}M ${len}M")
		off=$((off + len))
	done
	qemu-io "${cmds[@]}" "$T/base.qcow2" >/dev/null || die "qemu-io base"
	cp "$T/base.qcow2" "$T/dbase.qcow2"
	head -c $((RAM_MB << 20)) /dev/urandom >"$T/ram.bin"
}

wait_sock() {
	local i
	for i in $(seq 1 100); do [ -S "$1" ] && return 0; sleep 0.1; done
	die "no socket $1"
}

# start_pair MODE I: fresh overlays and the two QEMUs of VM I.
start_pair() {
	local mode=$1 i=$2 q
	rm -f "$T/s$i.qcow2" "$T/d$i.qcow2" "$T"/*"$i".qmp
	qemu-img create -q -f qcow2 -b "$T/base.qcow2" -F qcow2 "$T/s$i.qcow2"
	qemu-io -c "write -P 0x3$i 512M ${OVERLAY_MB}M" "$T/s$i.qcow2" >/dev/null
	if [ "$mode" = incremental ]; then
		qemu-img create -q -f qcow2 -b "$T/dbase.qcow2" -F qcow2 "$T/d$i.qcow2"
	else
		qemu-img create -q -f qcow2 "$T/d$i.qcow2" "$DISK"
	fi
	q=(qemu-system-x86_64 -machine q35 -accel tcg -m "$RAM" -nodefaults -display none
	   -device pcie-root-port,id=rp1,chassis=1,slot=1)
	ip netns exec $NS_A "${q[@]}" -qmp "unix:$T/s$i.qmp,server=on,wait=off" \
		-blockdev "driver=qcow2,node-name=disk0,file.driver=file,file.filename=$T/s$i.qcow2" \
		-device virtio-blk-pci,drive=disk0 \
		-device "loader,file=$T/ram.bin,addr=0x1000000,force-raw=on" 2>>"$T/qemu.log" &
	PIDS+=($!)
	ip netns exec $NS_B "${q[@]}" -qmp "unix:$T/d$i.qmp,server=on,wait=off" \
		-blockdev "driver=qcow2,node-name=disk0,file.driver=file,file.filename=$T/d$i.qcow2" \
		-device virtio-blk-pci,drive=disk0 -incoming defer -S 2>>"$T/qemu.log" &
	PIDS+=($!)
	wait_sock "$T/s$i.qmp"
	wait_sock "$T/d$i.qmp"
}

cluster_file() {
	local n=$1 tls=$2 i
	echo "format: 1"
	echo "cluster: bench"
	echo "limits: {parallel: 2, bandwidth: unlimited}"
	if [ "$tls" = x509 ]; then
		echo "tls: {dir: $T/pki, source-dn: \"$DN\"}"
	else
		echo "tls: none"
	fi
	echo "vms:"
	for i in $(seq 1 "$n"); do
		cat <<EOF
  - name: vm$i
    source: {qmp: $T/s$i.qmp, symvirt: none}
    destination:
      qmp: $T/d$i.qmp
      symvirt: none
      migration: {listen: "tcp:10.78.0.2:$((4400 + i))", connect: "tcp:127.0.0.1:$((4400 + i))"}
      nbd: {listen: "tcp:10.78.0.2:$((10800 + i))", connect: "tcp:127.0.0.1:$((10800 + i))"}
    disks: [{source: disk0}]
EOF
	done
}

# Bytes that left site A on the WAN (tbf's counter: payload + headers).
wire_bytes() {
	tc -s -n $NS_A qdisc show dev kwmb-wa | awk '/Sent/ {print $2; exit}'
}

wan_up
images
case " $TLS " in *" x509 "*) pki ;; esac
results=()
for mode in $MODES; do
	for n in $VMS; do
		for tls in $TLS; do
			r=$T/r-$mode-$n-$tls.json
			for i in $(seq 1 "$n"); do start_pair "$mode" "$i"; done
			cluster_file "$n" "$tls" >"$T/c.yaml"
			echo "bench: $mode, $n VM(s), tls $tls..." >&2
			sent0=$(wire_bytes)
			"$KAWARIMI" migrate "$T/c.yaml" --storage "$mode" --quiet \
				--report "$r" >"$T/out-$mode-$n-$tls" 2>&1 ||
				{ cat "$T/out-$mode-$n-$tls" >&2; die "$mode/$n/$tls failed"; }
			for i in $(seq 1 "$n"); do
				qemu-img compare -q -U "$T/s$i.qcow2" "$T/d$i.qcow2" ||
					die "$mode/$n/$tls: vm$i disks differ"
			done
			echo $(($(wire_bytes) - sent0)) >"$r.wire"
			echo "$tls" >"$r.tls"
			results+=("$r")
			stop_all
		done
	done
done

python3 - "$RATE" "$RTT_MS" "$BASE_MB" "$OVERLAY_MB" "$RAM_MB" "$DISK" "$RAM" "${results[@]}" <<'PY'
import json, re, sys
rate_s, rtt, base, ovl, ram, disk, ramsize = sys.argv[1:8]
m = re.match(r"([\d.]+)(k|m|g)bit", rate_s)
rate = float(m.group(1)) * {"k": 1e3, "m": 1e6, "g": 1e9}[m.group(2)]
# The paper's table (storage migration time, idle VMs, AIST -> cloud):
# full moved ~5.4 GB per VM (disk + memory), incremental ~260 MB.
paper = {("full", 1): (172, 5.4e9), ("full", 2): (215, 10.8e9),
         ("incremental", 1): (9, 260e6), ("incremental", 2): (9, 520e6)}
print(f"\nWAN {rate_s}, RTT {rtt} ms; {disk} disks, base {base} MiB, overlay {ovl} MiB/VM, "
      f"{ram} MiB of data in {ramsize} MiB RAM; QEMU 7.2 under TCG\n")
hdr = ("mode", "#VM", "tls", "moved GB", "wire GB", "time s", "ideal s", "ratio", "| paper s",
       "paper GB", "ratio")
print("%-12s %4s %5s %9s %8s %8s %8s %6s %9s %9s %6s" % hdr)
times = {}
for path in sys.argv[8:]:
    r = json.load(open(path))
    mode, n = r["storage"], len(r["vms"])
    tls = open(path + ".tls").read().strip()
    moved = r["totals"]["bytes"]
    wire = int(open(path + ".wire").read())
    t = r["duration-ms"] / 1000
    ideal = wire * 8 / rate
    pt, pb = paper[(mode, n)]
    pideal = pb * 8 / 920e6
    print("%-12s %4d %5s %9.2f %8.2f %8.1f %8.1f %6.2f | %7d %9.2f %6.2f" %
          (mode, n, tls, moved / 1e9, wire / 1e9, t, ideal, t / ideal, pt, pb / 1e9, pt / pideal))
    times[(mode, n, tls)] = (t, wire)
cost = [(m, n, t / times[(m, n, "none")][0], w / times[(m, n, "none")][1])
        for (m, n, tls), (t, w) in times.items() if tls == "x509" and (m, n, "none") in times]
if cost:
    print("\nTLS cost (x509 run / tls: none run, same mode and VMs, same bench run):")
    for mode, n, tr, wr in cost:
        print("  %-12s %d VM(s): time x %.3f, wire bytes x %.3f" % (mode, n, tr, wr))
print("\nmoved = storage (mirror progress; with full it counts zero areas, sent as"
      "\ncheap zero-writes) + memory (ram.transferred), from the report; wire = bytes"
      "\nthat left site A on the WAN veth (tbf counter); time = the whole kawarimi"
      "\nmigrate run; ideal = wire / link rate; ratio = time / ideal.  Paper: ratio ="
      "\ntime / (paper bytes / 920 Mbit/s); its 2-VM bytes assume twice the 1-VM figure.")
PY
