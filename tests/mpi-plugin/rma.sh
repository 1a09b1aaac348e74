#!/usr/bin/env bash
# MPI one-sided communication over the kawarimi BTL alone (self,kawarimi):
# fence and passive-target put/get, accumulate, fetch_and_op and
# compare_and_swap, every byte checked (kwb_rma.c). The osc component is
# chosen so that it must go through the BTL: Open MPI 4.1's osc/pt2pt
# (over ob1; Debian's default list excludes it), 5.0's osc/rdma (active-
# message emulation of RDMA on a send-only BTL; it answers through the
# receive descriptor's endpoint, which a BTL must fill in).
# Args: <component dir> <prog dir> <np> [max bytes].
set -u
. "$(dirname "$0")/lib.sh"
kwb_init "$@"
np=${KWB_ARGS[0]}
max=${KWB_ARGS[1]:-4194304}
case $KWB_OMPI_MAJOR in
4) osc=pt2pt ;;
*) osc=rdma ;;
esac
kwb_lo_job "$np" "kwb-rma: $np ranks, max $max B: OK (0 errors)" --mca osc "$osc" \
	"$KWB_PROG_DIR/kwb-rma" "$max" || exit 1
echo "PASS: $np ranks, osc $osc"
