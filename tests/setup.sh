# shellcheck shell=bash
# Sourced by tests/run and lab/demo: installs what kawarimi needs from
# Debian's packages (only what is missing, one apt-get update) and builds.

KAWARIMI_PACKAGES=(
	# build
	meson ninja-build pkg-config gcc clang libclang-rt-14-dev
	# the Open MPI 5.0.7 suite builds a Debian 13 chroot (tests/mpi-plugin/ompi5.sh)
	debootstrap
	libjson-c-dev libpci-dev libibverbs-dev librdmacm-dev libyaml-dev
	openmpi-bin libopenmpi-dev
	# runtime and tests
	pciutils qemu-system-x86 qemu-utils socat iproute2 kmod cpio
	# the TLS tests and the lab make a throwaway PKI (lab/pki.sh)
	openssl
	rdma-core ibverbs-utils ibverbs-providers rdmacm-utils
	# the operator's toolbox: plots, man pages, completion, packages
	gnuplot-nox tmux scdoc man-db bash-completion zsh
	# bench/paper's pictures (Debian's python3, /usr/bin/python3)
	python3-matplotlib
	debhelper dpkg-dev lintian systemd udev
	# the lab's guests
	linux-image-amd64 busybox-static dropbear-bin openssh-client
	# ssh:// endpoints are tested against a private sshd (tests/qmp/sshd-lib.sh),
	# counting its masters and sessions with pgrep; each lab site runs an sshd
	openssh-server procps
)

kawarimi_install_deps() {
	local missing=() p
	for p in "${KAWARIMI_PACKAGES[@]}"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
			missing+=("$p")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	echo "kawarimi: installing ${missing[*]}"
	if [ "$(id -u)" -ne 0 ]; then
		echo "kawarimi: need root to apt-get install ${missing[*]}" >&2
		return 1
	fi
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq &&
		apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# kawarimi_build DIR [meson options...]: configure once, then build.
kawarimi_build() {
	local dir=$1
	shift
	if [ ! -f "$dir/build.ninja" ]; then
		meson setup "$dir" "$@" || return 1
	fi
	ninja -C "$dir"
}
