#!/usr/bin/env bash
# bench/verbs/bench-verbs.sh [BUILD_DIR]: kawarimi-pingpong between two lab
# node VMs over the kawarimi BTL's verbs path and over Open MPI's own verbs
# transports on the same soft-RoCE (rxe) devices, in one run, with per-size
# ratios (docs/performance.md, "Verbs path").
#
#   rc-pingpong  raw verbs, not MPI: rdma-core's ibv_rc_pingpong per size
#                (rc-pingpong.sh), t = half round trip; the device's floor
#   ucx          pml ucx, UCX_TLS=rc_verbs (ud_verbs to wire up) on rxe0:1,
#                GID index 1 (rxe's IPv4-mapped GID)
#   openib       pml ob1, btl self,vader,openib (if it runs on rxe)
#   kawarimi     pml ob1, btl self,vader,kawarimi: the verbs path, defaults
#                (btl_kawarimi_verbs_rdma_min 0: large frames by the
#                pipelined copy through the registered send ring)
#   kw-zcopy     the same with btl_kawarimi_verbs_rdma_min KWV_RDMA_MIN
#                (default 32768: every frame larger than one 32 KiB buffer
#                goes zero-copy, the receiver RDMA-READs it)
#   kw-copy      btl_kawarimi_verbs_rdma_min 0 named explicitly (the same
#                as kawarimi while that is the default; not in the default
#                set)
#   kw-tcp       kawarimi with btl_kawarimi_verbs=0 over the same NIC
#                (reference, not in the default set)
#
# Needs root (the lab); boots its own lab instance (KWL_PREFIX, default
# kwvbench) and takes it down at the end, also on failure.  KWV_MAX_LOG
# (default 16, 64 KiB: larger sizes take a minute or more each on the lab)
# is the largest size 2^N; KWV_CONFIGS picks configurations.  Absolute
# numbers are set by TCG (no KVM here) and rxe (RDMA emulated in the guest
# kernel): only the ratios between transports on the same VMs mean
# something.
set -u
SRC=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=$(cd "${1:-$SRC/build}" && pwd)
LAB=$SRC/lab/lab.sh
export KAWARIMI_BUILD=$BUILD KWL_PREFIX=${KWL_PREFIX:-kwvbench}
export KWL_STATE=/run/kawarimi-lab/$KWL_PREFIX
OUT=${KWV_OUT:-$BUILD/bench-verbs}
MAX_LOG=${KWV_MAX_LOG:-16}
CONFIGS=${KWV_CONFIGS:-rc-pingpong ucx openib kawarimi kw-zcopy}
RDMA_MIN=${KWV_RDMA_MIN:-32768}
TIMEOUT=${KWV_TIMEOUT:-1800}
# The RC ACK timeout (4.096 us * 2^N) of every verbs transport alike: rxe
# resends a lost packet only when this timer fires, so on a lossy L2 the
# transport with the shortest timer would win by that alone. Open MPI's
# defaults: openib 20 (4.3 s), UCX 1 s; ibv_rc_pingpong has 14 built in.
ACK=${KWV_ACK_TIMEOUT:-14}
UCX_RC_TIMEOUT=$(awk -v n="$ACK" 'BEGIN { printf "%.0fus", 4.096 * 2 ^ n }')
UCXDIR=/usr/lib/x86_64-linux-gnu/ucx
# UCX's rc needs an auxiliary transport to wire up: ud_verbs (KWV_UCX_TLS
# to try another, e.g. rc_verbs,tcp,self,sm).
UCX_TLS=${KWV_UCX_TLS:-rc_verbs,ud_verbs,self,sm}
# UCX's UD drops every received packet whose GRH destination GID is not
# one of the port's GIDs (UCX_UD_ETH_DGID_CHECK). For RoCE v2 over IPv4,
# rxe puts the IPv4 header in the last 20 bytes of the 40-byte GRH, as
# mlx5 does, but does not flag the packet type the way UCX reads it from
# mlx5 (wc.sl), so UCX compares the wrong bytes and drops everything: the
# peer then fails with "UD endpoint ...: unhandled timeout error". Off, UD
# works on rxe (ucx_perftest am_lat over ud_verbs, and pml ucx).
UCX_DGID_CHECK=${KWV_UCX_DGID_CHECK:-n}

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
rm -f "$OUT"/*.dat "$OUT"/*.txt "$OUT"/*.counters "$OUT"/table.md "$OUT"/conditions.txt
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
		# its dlopen()ed verbs transports: copied in for this run only, so
		# the cached image stays as it is.
		for f in libuct_ib.so.0 libuct_rdmacm.so.0; do
			push_file "$n" "$UCXDIR/$f" "$UCXDIR/$f"
		done
		push_file "$n" /usr/lib/x86_64-linux-gnu/libnuma.so.1 /usr/lib/x86_64-linux-gnu/libnuma.so.1
		;;
	esac
done
case " $CONFIGS " in *" rc-pingpong "*)
	push_file 1 "$SRC/bench/verbs/rc-pingpong.sh" /tmp/rc-pingpong.sh
	;;
esac

# rxe0's counters on both nodes, one "name=value" list per node.
counters() {
	local n
	for n in 1 2; do
		echo "node$n $(gexec "$n" -- 'cd /sys/class/infiniband/rxe0/ports/1/hw_counters && for f in sent_pkts rcvd_pkts duplicate_request out_of_seq_request completer_retry_err retry_exceeded_err rcvd_rnr_err send_rnr_err rcvd_seq_err; do printf "%s=%s " $f $(cat $f); done' | tr -d '\r')"
	done
}

# What each configuration cost the devices: the counters' growth over its
# run (retry timeouts, duplicates, RNR), per node.
counter_delta() { # BEFORE AFTER
	awk 'NR == FNR { for (i = 2; i <= NF; i++) { split($i, kv, "="); b[$1 "." kv[1]] = kv[2] }; next }
	{ printf "%s", $1; for (i = 2; i <= NF; i++) { split($i, kv, "="); printf " %s=%d", kv[1], kv[2] - b[$1 "." kv[1]] }; print "" }' "$1" "$2"
}

MPIRUN="mpirun --host node1,node2 -np 2"
run() { # NAME COMMAND
	local name=$1 cmd=$2 rc
	say "$name: $cmd"
	counters >"$OUT/$name.before"
	echo "$name start $(date -u +%FT%TZ) load $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/conditions.txt"
	gexec 1 --timeout "$TIMEOUT" -- "$cmd" >"$OUT/$name.txt" 2>&1
	rc=$?
	echo "$name end $(date -u +%FT%TZ) load $(cut -d' ' -f1-3 /proc/loadavg) rc $rc" >>"$OUT/conditions.txt"
	counters >"$OUT/$name.after"
	counter_delta "$OUT/$name.before" "$OUT/$name.after" >"$OUT/$name.counters"
	rm -f "$OUT/$name.before" "$OUT/$name.after"
	if [ $rc != 0 ] || ! grep -qE '^ +[0-9]+ +[0-9]+ +[0-9.]+ +[0-9.]+' "$OUT/$name.txt"; then
		say "$name: no result (rc $rc); see $OUT/$name.txt"
		tail -5 "$OUT/$name.txt" >&2
		return 1
	fi
	grep -E '^ +[0-9]+ +[0-9]+ +[0-9.]+ +[0-9.]+' "$OUT/$name.txt" >"$OUT/$name.dat"
}
pingpong() { echo "$MPIRUN $1 kawarimi-pingpong --max-log $MAX_LOG"; }

KW="--mca pml ob1 --mca btl self,vader,kawarimi --mca btl_kawarimi_verbose 1 --mca btl_kawarimi_verbs_ack_timeout $ACK"
for c in $CONFIGS; do
	case $c in
	rc-pingpong) run rc-pingpong "sh /tmp/rc-pingpong.sh node2 $MAX_LOG rxe0 1" ;;
	kawarimi) run kawarimi "$(pingpong "$KW")" ;;
	kw-copy | kw-zcopy)
		# Open MPI ignores an unknown --mca name: a build without the
		# parameter would measure the defaults under this name.
		if grep -q verbs_rdma_min "$BUILD/mpi-plugin/mca_btl_kawarimi.so"; then
			[ "$c" = kw-copy ] && min=0 || min=$RDMA_MIN
			run "$c" "$(pingpong "$KW --mca btl_kawarimi_verbs_rdma_min $min")"
		else
			say "$c: not run, this build has no btl_kawarimi_verbs_rdma_min"
			echo "$c: not run, this build has no btl_kawarimi_verbs_rdma_min" >"$OUT/$c.txt"
		fi
		;;
	kw-tcp) run kw-tcp "$(pingpong "--mca pml ob1 --mca btl self,vader,kawarimi --mca btl_kawarimi_verbs 0 --mca btl_kawarimi_if_include 10.71.0.0/24")" ;;
	# Debian's openib has only the udcm connection manager (no rdmacm),
	# which does not do RoCE: expect "no cpcs for port" on rxe.
	openib) run openib "$(pingpong "--mca pml ob1 --mca btl self,vader,openib --mca btl_openib_allow_ib 1 --mca btl_openib_if_include rxe0 --mca btl_openib_warn_no_device_params_found 0 --mca btl_openib_ib_timeout $ACK")" ;;
	# UCX_LOG_LEVEL=info prints each endpoint's transports (ep_cfg: tag(...)).
	ucx) run ucx "$(pingpong "--mca pml ucx --mca osc ^ucx -x UCX_NET_DEVICES=rxe0:1 -x UCX_TLS=$UCX_TLS -x UCX_IB_GID_INDEX=1 -x UCX_MODULE_DIR=$UCXDIR -x UCX_RC_TIMEOUT=$UCX_RC_TIMEOUT -x UCX_UD_ETH_DGID_CHECK=$UCX_DGID_CHECK -x UCX_LOG_LEVEL=info")" ;;
	*) die "unknown configuration '$c'" ;;
	esac
done
# Which path and which large-message scheme each kawarimi run took (the
# BTL's verbose log: connection lines, zero-copy and pipelined frame counts).
for c in kawarimi kw-zcopy kw-copy; do
	[ -f "$OUT/$c.txt" ] && grep -hE 'connected over|zero-copy frames' "$OUT/$c.txt" | sed "s/^/$c: /" >&2
done
[ -f "$OUT/ucx.txt" ] && grep -h 'ep_cfg' "$OUT/ucx.txt" | sort -u | sed 's/^/ucx: /' >&2
{
	echo "host: $(uname -r), $(nproc) cores; end $(date -u +%FT%TZ), load average $(cut -d' ' -f1-3 /proc/loadavg)"
	cat "$OUT/conditions.txt"
	for c in $CONFIGS; do
		[ -f "$OUT/$c.counters" ] && sed "s/^/$c /" "$OUT/$c.counters"
	done
} >"$OUT/conditions.tmp" && mv "$OUT/conditions.tmp" "$OUT/conditions.txt"
cat "$OUT/conditions.txt" >&2

# The table: per size, each configuration's t[usec] and MB/s, and the
# kawarimi configurations' ratios to the best of Open MPI's own verbs
# transports (latency: t / t_best, lower is better; bandwidth: MB/s /
# MB/s_best), then the targets cell by cell. rc-pingpong is raw verbs, the
# device's floor, shown but never a baseline for the ratios.
python3 - "$OUT" "$MAX_LOG" $CONFIGS <<'PY' | tee "$OUT/table.md"
import math, os, sys
out, max_log, configs = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
data = {}
for c in configs:
    p = os.path.join(out, c + ".dat")
    if os.path.exists(p):
        data[c] = {int(l.split()[0]): (float(l.split()[2]), float(l.split()[3]))
                   for l in open(p)}
own = [c for c in ("ucx", "openib") if c in data]
mine = [c for c in ("kawarimi", "kw-zcopy", "kw-copy") if c in data]
cols = [c for c in configs if c in data]
sizes = [0] + [1 << k for k in range(max_log + 1)]
fmt = lambda v, f: "-" if v is None or math.isnan(v) else f % v
head = ["bytes"] + [f"{c} t[us] | {c} MB/s" for c in cols]
for m in mine:
    head += [f"{m}/best t | {m}/best MB/s"]
print("| " + " | ".join(head) + " |")
print("|---:|" + "---:|" * (2 * len(cols) + 2 * len(mine)))
verdict = {m: {"lat": [], "bw": []} for m in mine}
for size in sizes:
    if not any(size in data[c] for c in cols):
        continue
    row = [str(size)]
    for c in cols:
        t, bw = data[c].get(size, (None, None))
        row += [fmt(t, "%.1f"), fmt(bw, "%.2f")]
    best = [data[c][size] for c in own if size in data[c]]
    bt = min(b[0] for b in best) if best else None
    for m in mine:
        if size not in data[m] or bt is None:
            row += ["-", "-"]
            continue
        # Bandwidth ratio from the times (MB/s = bytes / t for both):
        # IMB prints MB/s with two decimals, 0.00 for small messages here.
        mt = data[m][size][0]
        rt = mt / bt if bt else None
        rb = bt / mt if size and mt else None
        row += [fmt(rt, "%.2f"), fmt(rb, "%.2f")]
        if size <= 1024 and rt is not None:
            verdict[m]["lat"].append((size, rt))
        if size >= 65536 and rb is not None:
            verdict[m]["bw"].append((size, rb))
    print("| " + " | ".join(row) + " |")
print()
if not own:
    print("no Open MPI verbs transport ran: no ratios, no verdict")
for m in mine:
    for key, name, ok in (("lat", "latency <= 1.2 x best at <= 1 KiB", lambda r: r <= 1.2),
                          ("bw", "bandwidth >= 0.9 x best at >= 64 KiB", lambda r: r >= 0.9)):
        cells = verdict[m][key]
        if not cells:
            print(f"{m}: {name}: no cells")
            continue
        bad = [f"{s} B ({r:.2f})" for s, r in cells if not ok(r)]
        # The median too: single cells move by 2-3x from run to run here.
        med = sorted(r for _, r in cells)[len(cells) // 2]
        print(f"{m}: {name}: " + ("met in all %d cells" % len(cells) if not bad else
              "NOT met in %d of %d cells: %s" % (len(bad), len(cells), ", ".join(bad))) +
              "; median ratio %.2f (%s)" % (med, "meets it" if ok(med) else "does not"))
missing = [c for c in configs if c not in data]
if missing:
    print("\nno result from: " + ", ".join(missing))
PY
say "raw output and table in $OUT"
