#!/usr/bin/env bash
# Transport correctness over the kawarimi BTL alone (self,kawarimi): 0 B to
# 64 MiB ping-pong with every peer, vector datatypes, 300 outstanding
# nonblocking operations per peer, two-way traffic, Allreduce/Alltoall/
# Bcast; every byte checked. Large contiguous messages go by ob1's RGET:
# each rank must say at finalize that it read by GET, every byte straight
# into the destination, and refused nothing.
# Args: <component dir> <prog dir> <np> [max].
set -u
. "$(dirname "$0")/lib.sh"
kwb_init "$@"
np=${KWB_ARGS[0]}
max=${KWB_ARGS[1]:-67108864}
out=$(kwb_lo_job "$np" "kwb-transport: $np ranks, max $max B: OK (0 errors)" \
	--mca btl_kawarimi_verbose 1 "$KWB_PROG_DIR/kwb-transport" "$max")
rc=$?
echo "$out"
[ $rc -eq 0 ] || exit 1
gets=$(grep -E 'GET: [1-9][0-9]* reads done \(([0-9]+) bytes, \1 of them received straight into the destination\), [1-9][0-9]* answered for peers, 0 refused' <<<"$out" | wc -l)
[ "$gets" -eq "$np" ] || {
	echo "FAIL: $gets of $np ranks read by GET, all in place, none refused"
	exit 1
}
echo "PASS: $np ranks"
