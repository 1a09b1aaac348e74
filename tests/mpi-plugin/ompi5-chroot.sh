# A Debian 13 (trixie) chroot with Open MPI 5.0.7, to build and test the
# kawarimi BTL against BTL API 3.3 on this Debian 12 host (sourced by
# tests/mpi-plugin/ompi5.sh and bench/btl-bench-ompi5.sh; bash).
#
#   kwt_ensure        builds the chroot unless the cache has it; sets KWT_ROOT
#   kwt_run CMD       runs CMD (a bash command line) inside it as root, with
#                     /proc, /sys, /dev, a private /run and /tmp, the source
#                     tree read-only at /src and $KWT_WORK at /work
#   kwt_build_project configures (once) and builds the project in
#                     $KWT_WORK/build (/work/build inside) against 5.0.7
#   kwt_test_prepare HOST_BUILD_DIR   for the ompi5 tests: skips (77)
#                     without root, else the chroot and the build in
#                     HOST_BUILD_DIR/ompi5, or exits 1 with the reason
#
# The chroot lives in ~/.cache/kawarimi/ompi5-trixie-KEY (KAWARIMI_CACHE
# moves it), KEY a hash of everything that goes into it (the suite, the
# package list, the build steps below, mpi-plugin/ompi-missing-headers.sh),
# so a change of any of them builds a new one; older ones are removed. It
# is built by debootstrap (minbase) from Debian's archive, then apt-get
# installs the packages; a deb-src line lets ompi-missing-headers.sh fetch
# the headers libopenmpi-dev 5.0.7 lacks (into /opt/kawarimi/ompi-headers).
# Mirror: KAWARIMI_DEBIAN_MIRROR, else the first Debian archive URI in this
# host's apt sources, else http://deb.debian.org/debian. Without a
# reachable archive the build fails with the reason: it never skips.

KWT_SUITE=trixie
KWT_PACKAGES=(
	# the BTL and the project's meson build
	gcc libc6-dev meson ninja-build pkg-config
	openmpi-bin libopenmpi-dev libpmix-dev
	libjson-c-dev libibverbs-dev librdmacm-dev libpci-dev libyaml-dev
	# the tests: namespaces, tc, ss, the controller
	iproute2 python3 procps
	# rdma-core's providers (the verbs path loads them), ompi-missing-headers.sh
	ibverbs-providers xz-utils
)
KWT_HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
KWT_SRC=$(cd "$KWT_HERE/../.." && pwd)
KWT_CACHE=${KAWARIMI_CACHE:-$HOME/.cache/kawarimi}

kwt_log() { echo "ompi5-chroot: $*" >&2; }

kwt_mirror() {
	local m=${KAWARIMI_DEBIAN_MIRROR:-}
	if [ -z "$m" ]; then
		# deb822 "URIs: ..." or one-line "deb URI suite ...", first
		# archive (not security) entry.
		m=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
			/etc/apt/sources.list.d/*.sources 2>/dev/null |
			sed -n -e 's,^URIs: *\(http[^ ]*/debian\)/*$,\1,p' \
			       -e 's,^deb \(\[[^]]*\] \)*\(http[^ ]*/debian\)/* .*,\2,p' | head -1)
	fi
	echo "${m:-http://deb.debian.org/debian}"
}

# The build steps; their text is part of the cache key.
kwt_build() { # DIR MIRROR
	local dir=$1 mirror=$2
	debootstrap --variant=minbase "$KWT_SUITE" "$dir" "$mirror" >"$dir.log" 2>&1 || {
		kwt_log "debootstrap $KWT_SUITE from $mirror failed; last lines of $dir.log:"
		tail -5 "$dir.log" >&2
		return 1
	}
	printf 'deb %s %s main\ndeb-src %s %s main\n' "$mirror" "$KWT_SUITE" "$mirror" "$KWT_SUITE" \
		>"$dir/etc/apt/sources.list"
	mkdir -p "$dir/src" "$dir/work"
	KWT_ROOT=$dir kwt_run "export DEBIAN_FRONTEND=noninteractive
		apt-get update -qq &&
		apt-get install -y -qq --no-install-recommends ${KWT_PACKAGES[*]} >/dev/null &&
		cd /tmp && /src/mpi-plugin/ompi-missing-headers.sh /opt/kawarimi/ompi-headers &&
		apt-get clean" >>"$dir.log" 2>&1 || {
		kwt_log "installing Open MPI 5 in the chroot failed; last lines of $dir.log:"
		tail -5 "$dir.log" >&2
		return 1
	}
	KWT_ROOT=$dir kwt_run 'dpkg-query -W -f "\${Package} \${Version}\n"' >"$dir/kawarimi-packages"
}

kwt_key() {
	{
		echo "$KWT_SUITE ${KWT_PACKAGES[*]}"
		declare -f kwt_build kwt_run
		cat "$KWT_SRC/mpi-plugin/ompi-missing-headers.sh"
	} | sha256sum | cut -c1-16
}

kwt_ensure() {
	local key dir t0 old
	key=$(kwt_key)
	dir=$KWT_CACHE/ompi5-trixie-$key
	KWT_ROOT=$dir
	[ -f "$dir/kawarimi-packages" ] && return 0
	command -v debootstrap >/dev/null || {
		kwt_log "debootstrap is not installed (tests/setup.sh's kawarimi_install_deps installs it)"
		return 1
	}
	mkdir -p "$KWT_CACHE"
	exec 9>"$KWT_CACHE/ompi5-trixie.lock"
	flock 9	# a second run waits for the first one's build
	if [ ! -f "$dir/kawarimi-packages" ]; then
		t0=$SECONDS
		kwt_log "building $dir from $(kwt_mirror) (once; a few minutes)"
		rm -rf "$dir.tmp"
		if ! kwt_build "$dir.tmp" "$(kwt_mirror)"; then
			exec 9>&-
			return 1
		fi
		mv "$dir.tmp.log" "$dir.log"
		mv "$dir.tmp" "$dir"
		for old in "$KWT_CACHE"/ompi5-trixie-*; do
			case $old in
			"$dir" | "$dir.log" | *.lock) ;;
			*) rm -rf "$old" ;;
			esac
		done
		kwt_log "built in $((SECONDS - t0)) s: $(grep -E '^(openmpi-bin|libpmix2t64|gcc-14) ' "$dir/kawarimi-packages" | tr '\n' ' ')"
	fi
	exec 9>&-
}

# Runs in a mount namespace of its own: every mount goes away with it. The
# root is bind-mounted onto itself so that it is a mount point (ip netns
# exec remounts / as a slave and fails otherwise).
kwt_run() { # COMMAND
	local work=${KWT_WORK:-}
	unshare --mount --propagation private bash -c '
		set -e
		r=$1 src=$2 work=$3
		mount --bind "$r" "$r"
		mount -t proc proc "$r/proc"
		mount --rbind /sys "$r/sys"
		mount --rbind /dev "$r/dev"
		mount -t tmpfs tmpfs "$r/run"
		mount -t tmpfs tmpfs "$r/tmp"
		mount --bind -o ro "$src" "$r/src"
		[ -z "$work" ] || mount --bind "$work" "$r/work"
		exec chroot "$r" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
			LANG=C.UTF-8 TERM=dumb bash -c "$4"' _ "$KWT_ROOT" "$KWT_SRC" "$work" "$1"
}

kwt_build_project() {
	kwt_run '
		cd /src
		[ -f /work/build/build.ninja ] ||
			meson setup /work/build -Dbtl=enabled \
				-Dompi_extra_incdir=/opt/kawarimi/ompi-headers >/work/setup.log 2>&1 ||
			{ cat /work/setup.log; exit 1; }
		nice -n 10 ninja -C /work/build -j1 >/work/ninja.log 2>&1 ||
			{ tail -40 /work/ninja.log; exit 1; }'
}

kwt_test_prepare() {
	if [ "$(id -u)" != 0 ]; then
		echo "SKIP: the chroot and network namespaces need root"
		exit 77
	fi
	KWT_WORK=$1/ompi5
	mkdir -p "$KWT_WORK"
	if ! kwt_ensure; then
		echo "FAIL: the Debian $KWT_SUITE chroot with Open MPI 5 could not be built (see above)"
		exit 1
	fi
	echo "chroot $KWT_ROOT: $(grep -E '^(openmpi-bin|libpmix2t64|libucx0|gcc-14) ' \
		"$KWT_ROOT/kawarimi-packages" | tr '\n' ' ')"
	if ! kwt_build_project; then
		echo "FAIL: the project does not build against Open MPI 5.0.7 (see above)"
		exit 1
	fi
}
