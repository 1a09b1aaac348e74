#!/bin/sh
# kwn-rank.sh "NS0 NS1 ..." PROG [ARGS...]: the one app context of an mpirun
# whose ranks live in node namespaces. Rank r runs PROG in namespace
# number r % (number of namespaces), with every "%n" in PROG and ARGS
# replaced by that number (per-node arguments such as the agent socket).
# Instead of one app context per rank ("-np 1 ip netns exec A p : -np 1
# ip netns exec B p"): Open MPI 5.0.7's mpirun (Debian 13) crashes on any
# MPMD command line (open-mpi/ompi#13303), 4.1 runs both.
set -eu
rank=${OMPI_COMM_WORLD_RANK:-${PMIX_RANK:-}}
[ -n "$rank" ] || { echo "kwn-rank.sh: no OMPI_COMM_WORLD_RANK/PMIX_RANK: not started by mpirun" >&2; exit 2; }
set -f
nss=$1
shift
set -- $nss -- "$@"
count=0
for ns; do
	[ "$ns" = -- ] && break
	count=$((count + 1))
done
node=$((rank % count))
eval "ns=\${$((node + 1))}"
shift $((count + 1))
for a; do
	shift
	set -- "$@" "$(printf '%s' "$a" | sed "s/%n/$node/g")"
done
exec ip netns exec "$ns" "$@"
