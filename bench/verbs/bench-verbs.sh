#!/usr/bin/env bash
# bench/verbs/bench-verbs.sh [BUILD_DIR]: kawarimi-pingpong between two lab
# node VMs over the kawarimi BTL's verbs path and over Open MPI's own verbs
# transports on the same soft-RoCE (rxe) devices, in one run, with per-size
# ratios (docs/performance.md, "Verbs path").
#
#   kawarimi   pml ob1, btl self,vader,kawarimi (verbs path)
#   openib     pml ob1, btl self,vader,openib (if it runs on rxe)
#   ucx        pml ucx, UCX_TLS=rc_verbs (ud_verbs to wire up) on rxe0:1, GID
#              index 1 (rxe's IPv4-mapped GID)
#   kw-window  kawarimi's verbs path with at most 2 x 4 KiB SENDs in flight
#              (the lab's L2 drops bursts of more than ~10 frames, see
#              docs/performance.md)
#   kw-tcp     kawarimi with btl_kawarimi_verbs=0 over the same NIC (reference)
#
# Needs root (the lab); boots its own lab instance (prefix kwvbench) and
# takes it down at the end, also on failure.  KWV_MAX_LOG (default 16,
# 64 KiB: larger sizes take minutes each on the lab) is the largest size
# 2^N; KWV_CONFIGS picks configurations.  Absolute numbers
# are set by TCG (no KVM here) and rxe (RDMA emulated in the guest kernel):
# only the ratios between transports on the same VMs mean something.
set -u
SRC=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=$(cd "${1:-$SRC/build}" && pwd)
LAB=$SRC/lab/lab.sh
export KAWARIMI_BUILD=$BUILD KWL_PREFIX=kwvbench KWL_STATE=/run/kawarimi-lab/kwvbench
OUT=${KWV_OUT:-$BUILD/bench-verbs}
MAX_LOG=${KWV_MAX_LOG:-16}
CONFIGS=${KWV_CONFIGS:-kawarimi kw-window ucx openib}
# The RC ACK timeout (4.096 us * 2^N) of every verbs transport alike: the
# lab's RDMA L2 drops packets under load, and rxe resends a lost tail only
# when this timer fires, so the transport with the shortest timer would
# win by that alone. Open MPI's defaults: openib 20 (4.3 s), UCX 1 s.
ACK=${KWV_ACK_TIMEOUT:-14}
UCX_RC_TIMEOUT=$(awk -v n="$ACK" 'BEGIN { printf "%.0fus", 4.096 * 2 ^ n }')
UCXDIR=/usr/lib/x86_64-linux-gnu/ucx
# UCX's rc needs an auxiliary transport to wire up: ud_verbs (KWV_UCX_TLS
# to try another, e.g. rc_verbs,tcp,self,sm).
UCX_TLS=${KWV_UCX_TLS:-rc_verbs,ud_verbs,self,sm}

say() { echo "[$(date +%T)] $*" >&2; }
die() {
	say "bench-verbs: $*"
	exit 1
}
gexec() { "$LAB" exec "$@"; }

[ "$(id -u)" = 0 ] || die "needs root (the lab uses network namespaces)"
[ -f "$BUILD/mpi-plugin/mca_btl_kawarimi.so" ] && [ -x "$BUILD/bench/kawarimi-pingpong" ] ||
	die "build $BUILD first (the BTL and bench/kawarimi-pingpong)"
mkdir -p "$OUT"
trap '"$LAB" down >/dev/null 2>&1' EXIT
"$LAB" down >/dev/null 2>&1
"$LAB" up --nodes 2 --rtt 0ms || die "lab up failed"

# push_file NODE HOSTPATH GUESTPATH: a file into the guest through its serial
# console (the only way in), see tests/verbs/kwv-push.py.
push_file() {
	gexec "$1" -- "test -e $3" >/dev/null && return 0
	gexec "$1" -- "mkdir -p $(dirname "$3")" >/dev/null
	python3 "$SRC/tests/verbs/kwv-push.py" "$KWL_STATE/a-node$1.console" "$2" "$3" --timeout 600 ||
		die "node$1: copying $2 into the guest failed"
}

for n in 1 2; do
	gexec "$n" --timeout 60 -- 'i=0; until rdma link show 2>/dev/null | grep -q "rxe0.*ACTIVE"; do i=$((i+1)); [ $i -gt 80 ] && exit 1; sleep 0.5; done' ||
		die "node$n: rxe0 not ACTIVE"
	# See tests/verbs/lab-verbs.sh: the dlmopen'd libc finds the loader by soname.
	gexec "$n" -- 'ln -sf /lib64/ld-linux-x86-64.so.2 /usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2'
	case " $CONFIGS " in *" ucx "*)
		# The lab image has UCX's core (Open MPI's pml ucx links it) but not
		# its dlopen()ed verbs transports.
		for f in libuct_ib.so.0 libuct_rdmacm.so.0; do
			push_file "$n" "$UCXDIR/$f" "$UCXDIR/$f"
		done
		push_file "$n" /usr/lib/x86_64-linux-gnu/libnuma.so.1 /usr/lib/x86_64-linux-gnu/libnuma.so.1
		;;
	esac
done

MPIRUN="mpirun --host node1,node2 -np 2"
run() { # NAME MPI-OPTIONS
	local name=$1 opts=$2
	say "$name: $opts"
	gexec 1 --timeout 900 -- "$MPIRUN $opts kawarimi-pingpong --max-log $MAX_LOG" >"$OUT/$name.txt" 2>&1
	local rc=$?
	if [ $rc != 0 ] || ! grep -qE '^ +[0-9]+ +[0-9]+ +[0-9.]+ +[0-9.]+' "$OUT/$name.txt"; then
		say "$name: no result (rc $rc); see $OUT/$name.txt"
		tail -5 "$OUT/$name.txt" >&2
		return 1
	fi
	grep -E '^ +[0-9]+ +[0-9]+ +[0-9.]+ +[0-9.]+' "$OUT/$name.txt" >"$OUT/$name.dat"
	# rxe's retransmission counters after the run (cumulative per node).
	for n in 1 2; do
		echo "node$n: $(gexec "$n" -- 'cd /sys/class/infiniband/rxe0/ports/1/hw_counters && for f in sent_pkts rcvd_pkts duplicate_request completer_retry_err retry_exceeded_err rcvd_rnr_err send_rnr_err out_of_seq_request; do printf "%s=%s " $f $(cat $f); done')"
	done >"$OUT/$name.counters"
}

rm -f "$OUT"/*.dat
for c in $CONFIGS; do
	case $c in
	kawarimi) run kawarimi "--mca pml ob1 --mca btl self,vader,kawarimi --mca btl_kawarimi_verbose 1 --mca btl_kawarimi_verbs_ack_timeout $ACK" ;;
	kw-window) run kw-window "--mca pml ob1 --mca btl self,vader,kawarimi --mca btl_kawarimi_verbs_ack_timeout $ACK --mca btl_kawarimi_verbs_buf_size 4096 --mca btl_kawarimi_verbs_send_bufs 2" ;;
	kw-tcp) run kw-tcp "--mca pml ob1 --mca btl self,vader,kawarimi --mca btl_kawarimi_verbs 0 --mca btl_kawarimi_if_include 10.71.0.0/24" ;;
	# Debian's openib has only the udcm connection manager (no rdmacm),
	# which does not do RoCE: expect "no cpcs for port" on rxe.
	openib) run openib "--mca pml ob1 --mca btl self,vader,openib --mca btl_openib_allow_ib 1 --mca btl_openib_if_include rxe0 --mca btl_openib_warn_no_device_params_found 0 --mca btl_openib_ib_timeout $ACK" ;;
	ucx) run ucx "--mca pml ucx --mca osc ^ucx -x UCX_NET_DEVICES=rxe0:1 -x UCX_TLS=$UCX_TLS -x UCX_IB_GID_INDEX=1 -x UCX_MODULE_DIR=$UCXDIR -x UCX_RC_TIMEOUT=$UCX_RC_TIMEOUT" ;;
	*) die "unknown configuration '$c'" ;;
	esac
done
grep -h 'connected over' "$OUT/kawarimi.txt" | head -2 >&2

# The table: per size, each transport's t[usec] and MB/s, and kawarimi's
# ratio to the best of Open MPI's own verbs transports (latency: lower is
# better, ratio t_kawarimi / t_best; bandwidth: ratio MB/s_kawarimi / best).
python3 - "$OUT" $CONFIGS <<'PY' | tee "$OUT/table.md"
import os, sys
out, configs = sys.argv[1], sys.argv[2:]
data = {}
for c in configs:
    p = os.path.join(out, c + ".dat")
    if os.path.exists(p):
        data[c] = {int(l.split()[0]): (float(l.split()[2]), float(l.split()[3]))
                   for l in open(p)}
own = [c for c in ("openib", "ucx") if c in data]
cols = [c for c in configs if c in data]
print("| bytes | " + " | ".join(f"{c} t[us] | {c} MB/s" for c in cols) +
      " | kawarimi/best t | kawarimi/best MB/s |")
print("|---:|" + "---:|" * (2 * len(cols) + 2))
for size in sorted(data.get("kawarimi", {})):
    row = [str(size)]
    for c in cols:
        t, bw = data[c].get(size, (float("nan"), float("nan")))
        row += [f"{t:.1f}", f"{bw:.2f}"]
    best = [data[c][size] for c in own if size in data[c]]
    kt, kb = data["kawarimi"][size]
    if best:
        bt = min(b[0] for b in best)
        bb = max(b[1] for b in best)
        row += [f"{kt / bt:.2f}" if bt else "-", f"{kb / bb:.2f}" if bb else "-"]
    else:
        row += ["-", "-"]
    print("| " + " | ".join(row) + " |")
missing = [c for c in configs if c not in data]
if missing:
    print("\nno result from: " + ", ".join(missing))
PY
say "raw output and table in $OUT"
