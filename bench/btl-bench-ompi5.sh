#!/usr/bin/env bash
# bench/btl-bench.sh under Open MPI 5.0.7: the same benchmark (kawarimi vs
# the stock tcp BTL, kawarimi-pingpong in two network namespaces), run in
# the Debian 13 chroot of the 5.0.7 test suite (tests/mpi-plugin/
# ompi5-chroot.sh; built and cached on first use) with the project built
# there in BUILDDIR/ompi5/build.
#
#   bench/btl-bench-ompi5.sh [BUILDDIR] [--rounds N] [--max-log N] [--out FILE]
# Needs root. --out FILE is written on this host.
set -u
builddir=build
args=()
out=
while [ $# -gt 0 ]; do
	case "$1" in
	--rounds | --max-log) args+=("$1" "$2"); shift 2 ;;
	--out) out=$2; shift 2 ;;
	-h | --help) sed -n '2,9p' "$0"; exit 0 ;;
	*) builddir=$1; shift ;;
	esac
done
[ "$(id -u)" = 0 ] || { echo "btl-bench-ompi5: needs root (chroot, namespaces)" >&2; exit 2; }
. "$(dirname "$0")/../tests/mpi-plugin/ompi5-chroot.sh"
mkdir -p "$builddir/ompi5"
KWT_WORK=$(cd "$builddir/ompi5" && pwd)
kwt_ensure || exit 1
kwt_build_project || exit 1
kwt_run "/src/bench/btl-bench.sh /work/build ${args[*]} --out /work/bench.md" || exit 1
[ -z "$out" ] || cp "$KWT_WORK/bench.md" "$out"
