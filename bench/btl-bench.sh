#!/usr/bin/env bash
# Benchmarks the kawarimi BTL against Open MPI's stock tcp BTL on the same
# pair of network namespaces in one run: kawarimi-pingpong (IMB-MPI1
# PingPong) over each, alternating, ROUNDS times; per size the best
# (lowest) time of each is kept, since on a shared machine noise only ever
# adds time. Prints a markdown table with per-size ratios and the targets
# (>= 0.95 x tcp bandwidth at >= 64 KiB, <= 1.1 x tcp latency at <= 1 KiB).
#
#   bench/btl-bench.sh [BUILDDIR] [--loopback] [--rounds N] [--max-log N] [--offset N]
#                      [--out FILE]
# Needs root (namespaces). Names: kwbb-*. --loopback: no namespaces, both
# ranks on this host as a new user starts them (each BTL picks its own
# interface; the traffic goes through lo, MTU 64 KiB, not a veth).
# --offset N: kawarimi-pingpong's buffers N bytes after a page boundary
# (default: malloc's); both BTLs' large-message speed depends on it.
set -u
builddir=build
rounds=3
maxlog=22
out=
loopback=
ppopt=()
while [ $# -gt 0 ]; do
	case "$1" in
	--rounds) rounds=$2; shift 2 ;;
	--max-log) maxlog=$2; shift 2 ;;
	--out) out=$2; shift 2 ;;
	--loopback) loopback=1; shift ;;
	--offset) ppopt=(--offset "$2"); shift 2 ;;
	-h|--help) sed -n '2,17p' "$0"; exit 0 ;;
	*) builddir=$1; shift ;;
	esac
done
builddir=$(cd "$builddir" && pwd) || exit 2
pp=$builddir/bench/kawarimi-pingpong
comp=$builddir/mpi-plugin
[ -x "$pp" ] && [ -e "$comp/mca_btl_kawarimi.so" ] || {
	echo "btl-bench: build $pp and $comp/mca_btl_kawarimi.so first (ninja -C $builddir)" >&2
	exit 2
}
[ "$(id -u)" = 0 ] || [ -n "$loopback" ] ||
	{ echo "btl-bench: needs root for network namespaces (or --loopback)" >&2; exit 2; }

. "$(dirname "$0")/../tests/mpi-plugin/netns-lib.sh"
. "$(dirname "$0")/../tests/mpi-plugin/lib.sh"
kwn_rank=$(cd "$(dirname "$0")/../tests/mpi-plugin" && pwd)/kwn-rank.sh
A=kwbb-a B=kwbb-b M=kwbb-m
tmp=$(mktemp -d /tmp/kwbb.XXXXXX)
cleanup() {
	[ -n "$loopback" ] || kwn_del $A $B $M
	rm -rf "$tmp"
}
trap cleanup EXIT
if [ -z "$loopback" ]; then
	kwn_del $A $B $M
	set -e
	kwn_add $A $B $M
	kwn_veth $A kwbbd0 $B kwbbd1 10.77.9
	kwn_mpirun_net $M kwbbm 10.77.10 $A $B
	set +e
	sleep 1
fi

run() {	# btl logfile
	[ -n "$loopback" ] && { run_loopback "$@"; return; }
	ip netns exec $M env PMIX_MCA_ptl_tcp_if_include=10.77.10.0/24 \
		OMPI_MCA_mca_base_component_path="$comp:$(kwb_ompi_pkglibdir)" \
		timeout 300 mpirun --allow-run-as-root --mca pml ob1 --mca btl self,$1 \
		--mca oob_tcp_if_include 10.77.10.0/24 \
		--mca btl_tcp_if_include 10.77.9.0/24 \
		--mca btl_kawarimi_if_include 10.77.9.0/24 --mca btl_kawarimi_agent_socket "" \
		-np 2 "$kwn_rank" "$A $B" "$pp" --max-log "$maxlog" "${ppopt[@]}" >"$2" 2>&1
}

run_loopback() {	# btl logfile
	OMPI_MCA_mca_base_component_path="$comp:$(kwb_ompi_pkglibdir)" \
		timeout 300 mpirun --allow-run-as-root --mca pml ob1 --mca btl self,$1 \
		--mca btl_kawarimi_agent_socket "" \
		-np 2 "$pp" --max-log "$maxlog" "${ppopt[@]}" >"$2" 2>&1
}

for r in $(seq "$rounds"); do
	for btl in tcp kawarimi; do
		if ! run $btl "$tmp/$btl.$r"; then
			echo "btl-bench: the $btl run failed:" >&2
			cat "$tmp/$btl.$r" >&2
			exit 1
		fi
	done
done

table=$(python3 - "$tmp" "$rounds" <<'PY'
import sys, glob
tmp, rounds = sys.argv[1], int(sys.argv[2])
def best(btl):
    res = {}
    for f in glob.glob(f"{tmp}/{btl}.*"):
        for line in open(f):
            p = line.split()
            if len(p) == 4 and p[0].isdigit():
                n, t = int(p[0]), float(p[2])
                res[n] = min(res.get(n, t), t)
    return res
tcp, kw = best("tcp"), best("kawarimi")
ok_lat = ok_bw = True
print(f"best of {rounds} alternating runs per BTL; t = half round trip (IMB PingPong)")
print()
print("| bytes | tcp t[usec] | kawarimi t[usec] | latency ratio | tcp MB/s | kawarimi MB/s | bandwidth ratio |")
print("|---:|---:|---:|---:|---:|---:|---:|")
for n in sorted(tcp):
    if n not in kw:
        continue
    lt = kw[n] / tcp[n] if tcp[n] else 0
    bt, bk = (n / tcp[n] if n else 0), (n / kw[n] if n else 0)
    br = bk / bt if bt else 0
    mark = ""
    if n <= 1024 and lt > 1.1:
        ok_lat, mark = False, " (over 1.1)"
    if n >= 65536 and br < 0.95:
        ok_bw, mark = False, " (under 0.95)"
    print(f"| {n} | {tcp[n]:.2f} | {kw[n]:.2f} | {lt:.2f} | {bt:.2f} | {bk:.2f} | {br:.2f}{mark} |")
lat = sorted(kw[n] / tcp[n] for n in tcp if n in kw and n <= 1024 and tcp[n])
bw = sorted(tcp[n] / kw[n] for n in tcp if n in kw and n >= 65536 and kw[n])
med = lambda v: (v[(len(v) - 1) // 2] + v[len(v) // 2]) / 2 if v else 0
print()
print(f"median over the sizes: latency ratio {med(lat):.2f} at <= 1 KiB, "
      f"bandwidth ratio {med(bw):.2f} at >= 64 KiB")
print(f"latency target (<= 1.1 x tcp at <= 1 KiB): {'met' if ok_lat else 'NOT met'}; "
      f"bandwidth target (>= 0.95 x tcp at >= 64 KiB): {'met' if ok_bw else 'NOT met'}")
PY
)
echo "$table"
if [ -n "$out" ]; then
	{
		echo "Measured $(date -u +%Y-%m-%dT%H:%MZ) ${loopback:+(--loopback) }${ppopt[*]:+(${ppopt[*]}) }on $(nproc) cores ($(uname -r)), $(mpirun --version 2>/dev/null | head -1), load average $(cut -d' ' -f1-3 /proc/loadavg) at the end;"
		echo "$table"
	} >"$out"
	echo "btl-bench: table written to $out"
fi
