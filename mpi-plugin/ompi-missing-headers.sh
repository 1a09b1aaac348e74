#!/usr/bin/env bash
# mpi-plugin/ompi-missing-headers.sh DEST [--tarball FILE]
#
# Puts into DEST the Open MPI development headers that the installed
# Open MPI's own opal_config.h includes but its package does not ship, so
# the BTL can be built with `meson setup -Dompi_extra_incdir=DEST`.
#
# Open MPI 5.0.x (seen with Debian 13's libopenmpi-dev 5.0.7): opal_config.h
# names opal/mca/threads/pthreads/threads_pthreads_{threads,mutex,tsd}.h as
# MCA_threads_*_HEADER, but opal/mca/threads/pthreads/Makefile.am has no
# install rule for headers, so `--with-devel-headers` installs none of them
# (upstream bug; docs/btl.md). Open MPI 4.1 needs nothing: the script says
# so and leaves DEST empty.
#
# The headers come from the source of exactly the installed version: by
# default Debian's source package (`apt-get source --download-only`, needs
# a deb-src line), or a release tarball given with --tarball. Only the
# header files of the directories that hold a missing header are copied.
set -euo pipefail

die() { echo "ompi-missing-headers: $*" >&2; exit 1; }

dest=${1:-}
[ -n "$dest" ] || die "usage: $0 DEST [--tarball openmpi-X.Y.Z.tar.bz2]"
shift
tarball=
if [ "${1:-}" = --tarball ]; then
	tarball=${2:?--tarball needs a file}
	[ -r "$tarball" ] || die "cannot read tarball '$tarball'"
	tarball=$(realpath "$tarball")
fi

inc=
for d in $(mpicc --showme:incdirs); do
	[ -f "$d/openmpi/opal_config.h" ] && inc=$d/openmpi && break
done
[ -n "$inc" ] || die "no openmpi/opal_config.h under mpicc --showme:incdirs; install libopenmpi-dev"
version=$(sed -n 's/^#define OPAL_VERSION "\(.*\)"$/\1/p' "$inc/opal_config.h")

missing=()
for h in $(sed -n 's/^#define MCA_[A-Za-z0-9_]*_HEADER "\(.*\)"$/\1/p' "$inc/opal_config.h"); do
	[ -e "$inc/$h" ] || missing+=("$h")
done
mkdir -p "$dest"
if [ ${#missing[@]} -eq 0 ]; then
	echo "ompi-missing-headers: Open MPI $version ships every header its opal_config.h names; nothing to add"
	exit 0
fi
echo "ompi-missing-headers: Open MPI $version lacks ${missing[*]}"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if [ -z "$tarball" ]; then
	src=$(dpkg-query -W -f '${source:Package}=${source:Version}' libopenmpi-dev 2>/dev/null) ||
		die "libopenmpi-dev is not installed as a Debian package; pass --tarball openmpi-$version.tar.bz2 (from open-mpi.org)"
	(cd "$tmp" && apt-get source --download-only -qq "$src" >/dev/null 2>"$tmp/apt.err") ||
		die "apt-get source $src failed ($(tail -1 "$tmp/apt.err")); add a deb-src line for your release (e.g. 'deb-src http://deb.debian.org/debian trixie main'), apt-get update, or pass --tarball openmpi-$version.tar.bz2"
	tarball=$(ls "$tmp"/*.orig.tar.* | head -1)
fi

# Every header of each directory that holds a missing one (they include
# each other, e.g. threads_pthreads_threads.h includes threads_pthreads.h).
pats=()
for d in $(printf '%s\n' "${missing[@]}" | xargs -n1 dirname | sort -u); do
	pats+=("openmpi-$version/$d/*.h")
done
tar -xf "$tarball" -C "$tmp" --wildcards "${pats[@]}" 2>"$tmp/tar.err" ||
	die "$(basename "$tarball") has no openmpi-$version/ with $(dirname "${missing[0]}"): is it Open MPI $version? ($(head -1 "$tmp/tar.err"))"
for h in "${missing[@]}"; do
	d=$(dirname "$h")
	mkdir -p "$dest/$d"
	cp "$tmp/openmpi-$version/$d"/*.h "$dest/$d/"
	[ -e "$dest/$h" ] || die "$(basename "$tarball") has no $h"
done
echo "ompi-missing-headers: copied from $(basename "$tarball") into $dest:"
(cd "$dest" && find . -name '*.h' | sort | sed 's,^\./,  ,')
