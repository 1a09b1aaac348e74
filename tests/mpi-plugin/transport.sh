#!/usr/bin/env bash
# Transport correctness over the kawarimi BTL alone (self,kawarimi): 0 B to
# 64 MiB ping-pong with every peer, vector datatypes, 300 outstanding
# nonblocking operations per peer, two-way traffic, Allreduce/Alltoall/
# Bcast; every byte checked. Args: <component dir> <prog dir> <np> [max].
set -u
. "$(dirname "$0")/lib.sh"
kwb_init "$@"
np=${KWB_ARGS[0]}
max=${KWB_ARGS[1]:-67108864}
out=$(mktemp -d /tmp/kwb-transport.XXXXXX)
trap 'rm -rf "$out"' EXIT

timeout 250 mpirun --oversubscribe -np "$np" --mca pml ob1 --mca btl self,kawarimi \
	--mca btl_kawarimi_if_include lo --mca btl_kawarimi_agent_socket "" \
	"$KWB_PROG_DIR/kwb-transport" "$max" >"$out/log" 2>&1
rc=$?
cat "$out/log"
if [ $rc -ne 0 ]; then
	echo "FAIL: mpirun exited $rc"
	exit 1
fi
grep -q "kwb-transport: $np ranks, max $max B: OK (0 errors)" "$out/log" || {
	echo "FAIL: no OK line from rank 0"
	exit 1
}
echo "PASS: $np ranks"
