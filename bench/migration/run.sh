#!/usr/bin/env bash
# bench/migration/run.sh: `kawarimi migrate` of 1 and 2 VMs, incremental vs
# full storage, through a WAN shaped like the paper's (Takano et al. 2013:
# SINET, ~7.5 ms RTT, 920 Mbit/s), printed next to the paper's table.
#
#   sudo bench/migration/run.sh [BUILD_DIR]        (default: build)
#
# Knobs (environment):
#   VMS="1 2"  MODES="incremental full"  RATE=920mbit  RTT_MS=7.5
#   DIRS="a2b" (add b2a: sources at site B, destinations at A, the other
#   end of the link)  RATE_BACK=$RATE (the B->A rate; the paper: 490mbit)
#   DISK=5G  BASE_MB=4608 (data in the shared base)  OVERLAY_MB=256
#   (written to each VM's overlay)  RAM=512  RAM_MB=256 (random data put in
#   guest RAM; there is no guest OS, so this stands in for a booted one)
#   KWM_BENCH_DIR (default /var/tmp): where the images go (~3 x BASE_MB).
#   KWM_BENCH_OUT: a folder that keeps every raw report, results.csv and
#   the printed table (default: none, nothing kept).
#   KWM_BENCH_NS (default kwmb): the network namespaces' prefix.
#   Scale (docs/performance.md, "Scale, real VMs"): VMS="2 4 8" (up to 8)
#   PARALLEL="1 2 4 8" (limits.parallel, each a run; default 2; one above
#   the VM count is skipped when that count is listed too)
#   CAP=unlimited (limits.bandwidth, the cluster's WAN cap: e.g.
#   300Mbit/s, set RATE above it so the cap binds)  SIZES="RAM_MB:OVL_MB
#   ..." (VM i's RAM data and overlay, cycled over the VMs; default every
#   VM RAM_MB:OVERLAY_MB)  ORDERS="file" (the cluster file's order of the
#   VMs: file = SIZES' order, desc = most bytes first, asc = fewest first;
#   each a run).  After the storage table it prints the scale table: total
#   moved against the cap's lower bound, per VM count, parallel and order.
#   KAWARIMI=path runs another kawarimi binary (e.g. a scheduler variant).
#   TLS="none x509": each run in clear (tls: none) and over TLS (a throwaway
#   PKI from lab/pki.sh), side by side; the table gives the
#   x509 run's time over the clear one's.
#
# MODES also takes qemu-incremental and qemu-full: QEMU 7.2's old block
# migration (`migrate` with "blk": true and "inc": true/false, what the
# paper used, removed in QEMU 9.1) on the same VMs, images and link, in
# clear, driven by bench/migration/qemu-blk.py.  kawarimi never uses it;
# it is here only as the paper's baseline.
#
# The WAN: two network namespaces joined by a veth pair with tbf at RATE on
# A's end and RATE_BACK on B's; the delay comes from the lab's relay
# (lab/kwl-relay, RTT/2 each way, no netem in this kernel), one in each
# namespace, in front of the sources.  QMP stays on unix sockets.  Speed
# is the point here, so nothing is asserted: it prints what it measured.
set -u
BUILD=${1:-build}
VMS=${VMS:-1 2}
MODES=${MODES:-incremental full}
DIRS=${DIRS:-a2b}
RATE=${RATE:-920mbit}
RATE_BACK=${RATE_BACK:-$RATE}
RTT_MS=${RTT_MS:-7.5}
DISK=${DISK:-5G}
BASE_MB=${BASE_MB:-4608}
OVERLAY_MB=${OVERLAY_MB:-256}
RAM=${RAM:-512}
RAM_MB=${RAM_MB:-256}
TLS=${TLS:-none}
PARALLEL=${PARALLEL:-2}
CAP=${CAP:-unlimited}
SIZES=${SIZES:-}
ORDERS=${ORDERS:-file}
NS=${KWM_BENCH_NS:-kwmb}
NS_A=$NS-a
NS_B=$NS-b
HERE=$(cd "$(dirname "$0")" && pwd)
KAWARIMI=${KAWARIMI:-$BUILD/migrate/kawarimi}
RELAY=$BUILD/lab/kwl-relay

die() { echo "bench: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "needs root (network namespaces, tbf)"
[ -x "$KAWARIMI" ] || die "no $KAWARIMI; build first (ninja -C $BUILD)"
[ -x "$RELAY" ] || die "no $RELAY; build the lab's relay (ninja -C $BUILD lab/kwl-relay)"
for t in qemu-system-x86_64 qemu-img qemu-io ip tc python3; do
	command -v $t >/dev/null || die "$t not installed"
done
for m in $MODES; do
	case $m in incremental | full | qemu-incremental | qemu-full) ;;
	*) die "MODES: '$m' is not incremental, full, qemu-incremental or qemu-full" ;;
	esac
done
for d in $DIRS; do
	case $d in a2b | b2a) ;; *) die "DIRS: '$d' is not a2b or b2a" ;; esac
done
MAXVM=0
for n in $VMS; do
	case $n in [1-8]) ;; *) die "VMS: '$n' is not a count from 1 to 8" ;; esac
	[ "$n" -gt $MAXVM ] && MAXVM=$n
done
for p in $PARALLEL; do
	case $p in [1-9] | [1-9][0-9]) ;; *) die "PARALLEL: '$p' is not a count of VMs" ;; esac
done
for o in $ORDERS; do
	case $o in file | asc | desc) ;; *) die "ORDERS: '$o' is not file, asc or desc" ;; esac
done
# Each VM's RAM data and overlay in MiB: SIZES cycled, or the uniform knobs.
[ -n "$SIZES" ] || SIZES="$RAM_MB:$OVERLAY_MB"
SZ=($SIZES)
VM_RAM=() VM_OVL=()
for i in $(seq 1 $MAXVM); do
	sz=${SZ[$(((i - 1) % ${#SZ[@]}))]}
	case $sz in [0-9]*:[0-9]*) ;; *) die "SIZES: '$sz' is not RAM_MB:OVERLAY_MB" ;; esac
	VM_RAM[$i]=${sz%%:*}
	VM_OVL[$i]=${sz##*:}
	[ "${VM_RAM[$i]}" -le $((RAM - 32)) ] || die "SIZES: ${VM_RAM[$i]} MiB of RAM data does not fit RAM=$RAM (less 32 MiB)"
done
ip netns list | grep -qw $NS_A && die "namespace $NS_A exists (another bench running? KWM_BENCH_NS names another)"
if [ -n "${KWM_BENCH_OUT:-}" ]; then
	mkdir -p "$KWM_BENCH_OUT" || die "cannot make $KWM_BENCH_OUT"
fi

T=$(mktemp -d "${KWM_BENCH_DIR:-/var/tmp}/kwm-bench.XXXXXX")
# kawarimi's journals and locks (docs/reliability.md) stay with this run,
# so that two benches (other KWM_BENCH_NS) can run side by side.
export KAWARIMI_STATE_DIR=$T/journal
PIDS=()
RELAY_PIDS=()
stop_all() {
	local p
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
	# SIGTERM: QEMU flushes its image caches and exits (compare_disks
	# reads the images after); kill -9 only what is still there after 5 s.
	for p in $(seq 1 50); do
		kill -0 "${PIDS[@]}" 2>/dev/null || break
		sleep 0.1
	done
	for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
	[ ${#PIDS[@]} -gt 0 ] && wait "${PIDS[@]}" 2>/dev/null
	PIDS=()
}
cleanup() {
	stop_all
	local p
	for p in "${RELAY_PIDS[@]}"; do kill "$p" 2>/dev/null; done
	ip netns del $NS_A 2>/dev/null
	ip netns del $NS_B 2>/dev/null
	[ -n "${KWM_BENCH_OUT:-}" ] && cp "$T"/*.log "$KWM_BENCH_OUT/" 2>/dev/null
	rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The namespace, veth, listen address and relay ports of each end:
# migration to B listens at 10.78.0.2:44NN (NBD 108NN), to A at
# 10.78.0.1:45NN (NBD 109NN), as in the lab.
src_ns() { [ "$1" = a2b ] && echo $NS_A || echo $NS_B; }
dst_ns() { [ "$1" = a2b ] && echo $NS_B || echo $NS_A; }
dst_ip() { [ "$1" = a2b ] && echo 10.78.0.2 || echo 10.78.0.1; }
mig_port() { [ "$1" = a2b ] && echo $((4400 + $2)) || echo $((4500 + $2)); }
nbd_port() { [ "$1" = a2b ] && echo $((10800 + $2)) || echo $((10900 + $2)); }

wan_up() {
	ip netns add $NS_A && ip netns add $NS_B || die "netns"
	ip link add $NS-wa netns $NS_A type veth peer name $NS-wb netns $NS_B || die "veth"
	ip -n $NS_A link set lo up
	ip -n $NS_B link set lo up
	ip -n $NS_A addr add 10.78.0.1/30 dev $NS-wa
	ip -n $NS_B addr add 10.78.0.2/30 dev $NS-wb
	ip -n $NS_A link set $NS-wa up
	ip -n $NS_B link set $NS-wb up
	tc -n $NS_A qdisc add dev $NS-wa root tbf rate "$RATE" burst 256kb latency 20ms || die "tbf"
	tc -n $NS_B qdisc add dev $NS-wb root tbf rate "$RATE_BACK" burst 256kb latency 20ms || die "tbf"
	local d rules i
	for d in a2b b2a; do
		rules=()
		for i in $(seq 1 $MAXVM); do
			rules+=("127.0.0.1:$(mig_port $d $i)=$(dst_ip $d):$(mig_port $d $i)")
			rules+=("127.0.0.1:$(nbd_port $d $i)=$(dst_ip $d):$(nbd_port $d $i)")
		done
		ip netns exec "$(src_ns $d)" "$RELAY" --delay-ms "$(awk -v r="$RTT_MS" 'BEGIN{print r/2}')" \
			"${rules[@]}" >"$T/relay-$d.log" 2>&1 &
		RELAY_PIDS+=($!)
	done
}

# A PKI whose server certificate fits what the sources dial (the relay).
pki() {
	DN=$(bash "$HERE/../../lab/pki.sh" "$T/pki" kawarimi-bench \
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
	local i mb
	for i in $(seq 1 $MAXVM); do
		mb=${VM_RAM[$i]}
		[ -f "$T/ram-$mb.bin" ] || head -c $((mb << 20)) /dev/urandom >"$T/ram-$mb.bin"
	done
}

wait_sock() {
	local i
	for i in $(seq 1 100); do [ -S "$1" ] && return 0; sleep 0.1; done
	die "no socket $1"
}

# The overlay's allocated bytes above the base (what incremental must move).
overlay_bytes() {
	qemu-img map -U --output=json "$1" | python3 -c '
import json, sys
print(sum(e["length"] for e in json.load(sys.stdin) if e["depth"] == 0 and e["data"]))'
}

# disk_args MODE FILE: the disk's QEMU options in DISK_ARGS: a -blockdev
# node disk0 for kawarimi (what it mirrors); for QEMU's old block
# migration a -drive whose BlockBackend is named disk0 (it sends blocks by
# that name and has none for an anonymous one).
disk_args() {
	case $1 in
	qemu-*) DISK_ARGS=(-drive "if=none,id=disk0,format=qcow2,file=$2") ;;
	*) DISK_ARGS=(-blockdev "driver=qcow2,node-name=disk0,file.driver=file,file.filename=$2") ;;
	esac
	DISK_ARGS+=(-device virtio-blk-pci,drive=disk0)
}

# start_pair MODE DIR I: fresh overlays and the two QEMUs of VM I.
start_pair() {
	local mode=$1 dir=$2 i=$3 q
	rm -f "$T/s$i.qcow2" "$T/d$i.qcow2" "$T"/*"$i".qmp
	qemu-img create -q -f qcow2 -b "$T/base.qcow2" -F qcow2 "$T/s$i.qcow2"
	qemu-io -c "write -P 0x3$i 512M ${VM_OVL[$i]}M" "$T/s$i.qcow2" >/dev/null ||
		die "vm$i: cannot write ${VM_OVL[$i]} MiB at 512 MiB into its overlay (DISK=$DISK too small?)"
	case $mode in
	*incremental) qemu-img create -q -f qcow2 -b "$T/dbase.qcow2" -F qcow2 "$T/d$i.qcow2" ;;
	*) qemu-img create -q -f qcow2 "$T/d$i.qcow2" "$DISK" ;;
	esac
	q=(qemu-system-x86_64 -machine q35 -accel tcg -m "$RAM" -nodefaults -display none
	   -device pcie-root-port,id=rp1,chassis=1,slot=1)
	disk_args "$mode" "$T/s$i.qcow2"
	ip netns exec "$(src_ns "$dir")" "${q[@]}" -qmp "unix:$T/s$i.qmp,server=on,wait=off" \
		"${DISK_ARGS[@]}" \
		-device "loader,file=$T/ram-${VM_RAM[$i]}.bin,addr=0x1000000,force-raw=on" >>"$T/qemu.log" 2>&1 &
	PIDS+=($!)
	disk_args "$mode" "$T/d$i.qcow2"
	ip netns exec "$(dst_ns "$dir")" "${q[@]}" -qmp "unix:$T/d$i.qmp,server=on,wait=off" \
		"${DISK_ARGS[@]}" -incoming defer -S >>"$T/qemu.log" 2>&1 &
	PIDS+=($!)
	wait_sock "$T/s$i.qmp"
	wait_sock "$T/d$i.qmp"
}

# qmp_ready SOCKET...: each QEMU answers a command within 120 s.  A QEMU
# greets at once but runs commands only once its machine is built (here
# the RAM image loaded: up to ~30 s for 192 MiB on this loaded machine);
# without this wait the last VM's start-up would count as kawarimi's
# preflight.  The connection is then closed; QEMU takes the next client.
qmp_ready() {
	python3 - "$@" <<'PY'
import json, socket, sys
for path in sys.argv[1:]:
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(120)
    s.connect(path)
    f = s.makefile("rwb")
    for cmd in ("qmp_capabilities", "query-status"):
        f.write(json.dumps({"execute": cmd}).encode() + b"\n")
        f.flush()
    n = 0
    while n < 2:
        m = json.loads(f.readline() or sys.exit(f"{path}: closed"))
        n += "return" in m or "error" in m
    s.close()
PY
}

# vm_order N ORDER: the VMs' numbers in the cluster file's order: file
# (1..N), desc (most bytes to move first: RAM data + overlay), asc.
vm_order() {
	local i
	[ "$2" = file ] && { seq 1 "$1"; return; }
	for i in $(seq 1 "$1"); do echo "$((VM_RAM[i] + VM_OVL[i])) $i"; done |
		sort -s -k1,1n$([ "$2" = desc ] && echo r) | cut -d' ' -f2
}

cluster_file() {
	local n=$1 tls=$2 dir=$3 par=$4 ord=$5 i
	echo "format: 1"
	echo "cluster: $NS"
	echo "limits: {parallel: $par, bandwidth: $CAP}"
	if [ "$tls" = x509 ]; then
		echo "tls: {dir: $T/pki, source-dn: \"$DN\"}"
	else
		echo "tls: none"
	fi
	echo "vms:"
	for i in $(vm_order "$n" "$ord"); do
		cat <<EOF
  - name: vm$i
    source: {qmp: $T/s$i.qmp, symvirt: none}
    destination:
      qmp: $T/d$i.qmp
      symvirt: none
      migration: {listen: "tcp:$(dst_ip "$dir"):$(mig_port "$dir" "$i")", connect: "tcp:127.0.0.1:$(mig_port "$dir" "$i")"}
      nbd: {listen: "tcp:$(dst_ip "$dir"):$(nbd_port "$dir" "$i")", connect: "tcp:127.0.0.1:$(nbd_port "$dir" "$i")"}
    disks: [{source: disk0}]
EOF
	done
}

# Bytes that left the source's site on the WAN (tbf's counter: payload +
# headers).
wire_bytes() {
	if [ "$1" = a2b ]; then
		tc -s -n $NS_A qdisc show dev $NS-wa
	else
		tc -s -n $NS_B qdisc show dev $NS-wb
	fi | awk '/Sent/ {print $2; exit}'
}

# migrate_case MODE N DIR TLS REPORT: one migration; 0 when it completed
# and every disk arrived whole.
migrate_case() {
	local mode=$1 n=$2 dir=$3 tls=$4 r=$5 par=$6 ord=$7 i vms=()
	if [ "${mode#qemu-}" != "$mode" ]; then
		for i in $(seq 1 "$n"); do
			vms+=("vm$i,$T/s$i.qmp,$T/d$i.qmp,tcp:$(dst_ip "$dir"):$(mig_port "$dir" "$i"),tcp:127.0.0.1:$(mig_port "$dir" "$i")")
		done
		python3 "$HERE/qemu-blk.py" --mode "${mode#qemu-}" --report "$r" "${vms[@]}" \
			>"$r.out" 2>&1 || { cat "$r.out" >&2; return 1; }
	else
		cluster_file "$n" "$tls" "$dir" "$par" "$ord" >"$T/c.yaml"
		"$KAWARIMI" migrate "$T/c.yaml" --storage "$mode" --quiet \
			--report "$r" >"$r.out" 2>&1 || { cat "$r.out" >&2; return 1; }
	fi
}

# compare_disks N: every VM's destination image is its source's (run after
# stop_all: a QEMU writes its qcow2 metadata out when it exits).
compare_disks() {
	local i
	for i in $(seq 1 "$1"); do
		qemu-img compare -q "$T/s$i.qcow2" "$T/d$i.qcow2" || return 1
	done
}

# run_case MODE N DIR TLS PARALLEL ORDER: fresh VMs, one migration, its
# report and .meta in results.
run_case() {
	local mode=$1 n=$2 dir=$3 tls=$4 par=$5 ord=$6 r i ovl sent0
	r=$R/storage-$mode-$n-$dir-$tls-p$par-$ord.json
	for i in $(seq 1 "$n"); do start_pair "$mode" "$dir" "$i"; done
	qmp_ready $(for i in $(seq 1 "$n"); do echo "$T/s$i.qmp $T/d$i.qmp"; done) ||
		die "a QEMU does not answer on QMP (qemu.log: ${KWM_BENCH_OUT:-$T})"
	ovl=0
	for i in $(seq 1 "$n"); do ovl=$((ovl + $(overlay_bytes "$T/s$i.qcow2"))); done
	echo "bench: $mode, $n VM(s), $dir, tls $tls, parallel $par, order $ord ($(vm_order "$n" "$ord" | tr '\n' ' ')), load $(cut -d' ' -f1-3 /proc/loadavg)..." >&2
	sent0=$(wire_bytes "$dir")
	migrate_case "$mode" "$n" "$dir" "$tls" "$r" "$par" "$ord" || die "$mode/$n/$dir/$tls/p$par/$ord failed"
	printf '{"wire": %d, "tls": "%s", "dir": "%s", "overlay": %d, "mode": "%s", "vms": %d, "parallel": %d, "order": "%s", "load": "%s"}\n' \
		$(($(wire_bytes "$dir") - sent0)) "$tls" "$dir" "$ovl" "$mode" "$n" "$par" "$ord" \
		"$(cut -d' ' -f1-3 /proc/loadavg)" >"$r.meta"
	results+=("$r")
	stop_all
	compare_disks "$n" || die "$mode/$n/$dir/$tls/p$par/$ord: the disks differ after the migration"
}

wan_up
images
case " $TLS " in *" x509 "*) pki ;; esac
R=${KWM_BENCH_OUT:-$T}
results=()
for mode in $MODES; do
	for n in $VMS; do
		for dir in $DIRS; do
			tlss=$TLS
			# The old block migration has no TLS of its own here: clear only.
			[ "${mode#qemu-}" != "$mode" ] && tlss=none
			for tls in $tlss; do
				for par in $PARALLEL; do
					# parallel above the VM count is parallel = VMs: skipped
					# when that count is in PARALLEL too.
					[ "$par" -gt "$n" ] && case " $PARALLEL " in *" $n "*) continue ;; esac
					for ord in $ORDERS; do
						run_case "$mode" "$n" "$dir" "$tls" "$par" "$ord"
					done
				done
			done
		done
	done
done

python3 "$HERE/table.py" --rate "$RATE" --rate-back "$RATE_BACK" --rtt "$RTT_MS" --base "$BASE_MB" \
	--overlay "$OVERLAY_MB" --ram-data "$RAM_MB" --disk "$DISK" --ram "$RAM" \
	${KWM_BENCH_OUT:+--csv "$KWM_BENCH_OUT/storage.csv" --markdown "$KWM_BENCH_OUT/storage.md"} \
	"${results[@]}" | tee ${KWM_BENCH_OUT:+"$KWM_BENCH_OUT/storage.txt"}
python3 "$HERE/scale.py" --rate "$RATE" --rate-back "$RATE_BACK" --cap "$CAP" --rtt "$RTT_MS" \
	--sizes "$SIZES" \
	${KWM_BENCH_OUT:+--csv "$KWM_BENCH_OUT/scale.csv"} \
	"${results[@]}" | tee ${KWM_BENCH_OUT:+"$KWM_BENCH_OUT/scale.txt"}
