#!/usr/bin/env bash
# The mpi-plugin suite against Open MPI 5.0.7 (BTL API 3.3), from this
# Open MPI 4.1 host: builds (or takes from ~/.cache/kawarimi) a Debian 13
# chroot with Debian's Open MPI 5.0.7 (ompi5-chroot.sh), builds the whole
# project there with the headers libopenmpi-dev 5.0.7 lacks
# (-Dompi_extra_incdir), and runs there the same tests as here: the
# mpi-plugin suite (load with API v3.3.0, transport at 2 and 4 ranks,
# one-sided MPI at 2 and 4 ranks, MPI_THREAD_MULTIPLE, quiesce/resume and
# the path switch in network namespaces, cut/ack-loss/give-up, the
# pingpong format) and the verbs unit tests.
# Only in the plain build: the chroot build is its own (gcc 14, -Werror,
# not sanitized); the ASan run tests the host's build against 4.1.4.
# Fails (never skips) when the chroot cannot be built, e.g. no archive.
# Args: <host build dir>
set -u
here=$(cd "$(dirname "$0")" && pwd)
. "$here/ompi5-chroot.sh"
kwt_test_prepare "$1"
kwt_run '
	rc=0
	meson test -C /work/build --no-rebuild --print-errorlogs --num-processes 1 \
		--suite mpi-plugin || rc=1
	meson test -C /work/build --no-rebuild --print-errorlogs --num-processes 1 \
		verbs-proto verbs-fuzz-replay || rc=1
	exit $rc'
rc=$?
[ $rc -eq 0 ] && echo "PASS: the mpi-plugin suite and the verbs unit tests under Open MPI 5.0.7"
exit $rc
