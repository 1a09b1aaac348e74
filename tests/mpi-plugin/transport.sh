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
kwb_lo_job "$np" "kwb-transport: $np ranks, max $max B: OK (0 errors)" \
	"$KWB_PROG_DIR/kwb-transport" "$max" || exit 1
echo "PASS: $np ranks"
