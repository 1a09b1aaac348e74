#!/usr/bin/env bash
# lab/mkimage.sh [BUILD_DIR]: the lab's guest image, built once and cached.
#
#   ~/.cache/kawarimi/base-KEY/   vmlinuz, initrd-base.gz (busybox + modules,
#                                 mounts the disk), base.qcow2 (ext4 root:
#                                 busybox, Open MPI, rdma-core with rxe,
#                                 iproute2, dropbear) as site-a/base.qcow2
#                                 and its copy site-b/base.qcow2
#   ~/.cache/kawarimi/layer-KEY.gz  a small initramfs layer with this build's
#                                 kawarimi-agent, BTL and kawarimi-pingpong
#
# KEY hashes the inputs (this script, lab/guest/*, the kernel, the versions
# of the packages copied in; for the layer: the binaries), so a change of
# any of them rebuilds that part only.  Prints `BASE=DIR` and `LAYER=FILE`.
set -euo pipefail
LAB=$(cd "$(dirname "$0")" && pwd)
BUILD=${1:-}
CACHE=${KAWARIMI_CACHE:-$HOME/.cache/kawarimi}
KVER=${KAWARIMI_LAB_KERNEL:-$(ls /boot/vmlinuz-* | sed 's,/boot/vmlinuz-,,' | sort -V | tail -1)}
PKGS=(busybox-static openmpi-bin libopenmpi3 openmpi-common libpmix2 libhwloc15
	libevent-core-2.1-7 libevent-pthreads-2.1-7 libevent-2.1-7 libibverbs1
	ibverbs-providers ibverbs-utils librdmacm1 rdmacm-utils dropbear-bin
	iproute2 libjson-c5 libpci3 libyaml-0-2)
MODS=(virtio_pci virtio_blk virtio_net virtio_console virtio_rng ext4 crc32c_generic
	e1000e ib_uverbs rdma_rxe rdma_ucm crc32_generic)
ROOT_SIZE=2G

log() { echo "mkimage: $*" >&2; }
die() { echo "mkimage: $*" >&2; exit 1; }

[ -r "/boot/vmlinuz-$KVER" ] || die "no /boot/vmlinuz-$KVER; apt-get install linux-image-amd64"
for t in mke2fs qemu-img cpio depmod modprobe dropbearkey; do
	command -v "$t" >/dev/null || die "'$t' not found; run tests/setup.sh's kawarimi_install_deps"
done

base_key() {
	{
		cat "$LAB/mkimage.sh" "$LAB"/guest/*
		echo "$KVER"
		sha256sum "/boot/vmlinuz-$KVER" "/lib/modules/$KVER/modules.dep"
		dpkg-query -W -f '${Package} ${Version}\n' "${PKGS[@]}"
	} | sha256sum | cut -c1-16
}

# Debian 12 is merged-/usr: /lib/x and /usr/lib/x are the same file.
usrpath() {
	case $1 in
	/bin/* | /sbin/* | /lib/* | /lib64/*) echo "/usr$1" ;;
	*) echo "$1" ;;
	esac
}

copy_file() { # SRC ROOT: copy SRC (following links) to its /usr path in ROOT
	local dst
	dst=$2$(usrpath "$1")
	[ -e "$dst" ] && return 0
	mkdir -p "$(dirname "$dst")"
	cp -L "$1" "$dst"
}

copy_packages() { # ROOT
	local p f dst
	for p in "${PKGS[@]}"; do
		dpkg -L "$p" | while read -r f; do
			case $f in
			/usr/share/doc/* | /usr/share/man/* | /usr/share/locale/* | \
				/usr/share/lintian/* | /usr/include/* | *.a | */pkgconfig/*) continue ;;
			esac
			[ -d "$f" ] && [ ! -L "$f" ] && continue
			[ -e "$f" ] || [ -L "$f" ] || continue
			dst=$1$(usrpath "$f")
			mkdir -p "$(dirname "$dst")"
			cp -a "$f" "$dst"
		done
	done
}

# Every library any ELF file in ROOT needs, as the host's ldd resolves it
# (the host is the same Debian release as the guest).
copy_elf_deps() { # ROOT
	local f lib
	find "$1" -type f \( -perm -u+x -o -name '*.so*' \) -print0 |
		while IFS= read -r -d '' f; do
			[ "$(head -c4 "$f" | od -An -c | tr -d ' ')" = '177ELF' ] || continue
			ldd "$f" 2>/dev/null | sed -n 's/.*=> \(\/[^ ]*\).*/\1/p; s/^[[:space:]]*\(\/[^ ]*\) (.*/\1/p'
		done | sort -u | while read -r lib; do
		copy_file "$lib" "$1"
	done
}

module_list() {
	local m
	for m in "${MODS[@]}"; do
		modprobe -S "$KVER" --show-depends "$m" || die "module $m not found for $KVER"
	done | awk '$1 == "insmod" && !seen[$2]++'
}

copy_modules() { # ROOT LIST
	local path
	awk '{print $2}' "$2" | while read -r path; do
		mkdir -p "$1$(dirname "$(usrpath "$path")")"
		cp "$path" "$1$(usrpath "$path")"
	done
}

build_initramfs() { # DIR OUT LIST
	local d=$1/initramfs a
	mkdir -p "$d"/{bin,sbin,etc,proc,sys,dev,newroot,lib}
	cp /bin/busybox "$d/bin/busybox"
	for a in $(/bin/busybox --list); do
		[ -e "$d/bin/$a" ] || ln -s busybox "$d/bin/$a"
	done
	awk '{print $2}' "$3" | while read -r path; do
		mkdir -p "$d$(dirname "$path")"
		cp "$path" "$d$path"
	done
	cp "$3" "$d/etc/kw-modules"
	install -m 755 "$LAB/guest/init" "$d/init"
	(cd "$d" && find . | cpio -o -H newc -R 0:0 --quiet | gzip -1) >"$2"
	rm -rf "$d"
}

build_rootfs() { # DIR LIST
	local r=$1/root a key
	mkdir -p "$r"/usr/{bin,sbin,lib,lib64} "$r"/{etc,root/.ssh,proc,sys,dev,run,tmp,data,opt/kawarimi,var/log}
	ln -s usr/bin "$r/bin"
	ln -s usr/sbin "$r/sbin"
	ln -s usr/lib "$r/lib"
	ln -s usr/lib64 "$r/lib64"
	chmod 1777 "$r/tmp"
	copy_packages "$r"
	# Debian also has the loader under the multiarch directory; the BTL's
	# private (dlmopen) copy of rdma-core resolves it there.
	mkdir -p "$r/usr/lib/x86_64-linux-gnu"
	[ -e "$r/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2" ] ||
		ln -s ../../lib64/ld-linux-x86-64.so.2 "$r/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
	# Debian names these through alternatives, outside the package lists.
	ln -sf orterun "$r/usr/bin/mpirun"
	ln -sf orterun "$r/usr/bin/mpiexec"
	for a in $(/bin/busybox --list-full); do
		a=$(usrpath "/$a")
		[ -e "$r$a" ] || [ -L "$r$a" ] || ln -s /usr/bin/busybox "$r$a"
	done
	for a in kw-init kw-hca-up kw-hotplug kw-ssh; do
		install -m 755 "$LAB/guest/$a" "$r/usr/sbin/$a"
	done
	install -m 644 "$LAB/guest/profile" "$r/etc/profile"
	install -m 644 "$LAB/guest/openmpi-mca-params.conf" "$r/etc/openmpi/openmpi-mca-params.conf"
	copy_elf_deps "$r"
	copy_modules "$r" "$2"
	mkdir -p "$r/usr/lib/modules/$KVER"
	cp /lib/modules/"$KVER"/modules.{order,builtin,builtin.modinfo} "$r/usr/lib/modules/$KVER/" 2>/dev/null || true
	depmod -b "$r" "$KVER"
	echo 'root:x:0:0:root:/root:/bin/sh' >"$r/etc/passwd"
	echo 'root::0:0:99999:7:::' >"$r/etc/shadow"
	chmod 600 "$r/etc/shadow"
	echo 'root:x:0:' >"$r/etc/group"
	printf '/bin/sh\n/usr/bin/sh\n' >"$r/etc/shells"
	printf 'passwd: files\ngroup: files\nhosts: files\n' >"$r/etc/nsswitch.conf"
	# One host key and one root key for every node: mpirun on one node VM
	# reaches the others through dropbear without prompts.
	mkdir -p "$r/etc/dropbear"
	dropbearkey -t ed25519 -f "$r/etc/dropbear/dropbear_ed25519_host_key" >/dev/null 2>&1
	dropbearkey -t ed25519 -f "$r/root/.ssh/id_dropbear" >/dev/null 2>&1
	key=$(dropbearkey -y -f "$r/root/.ssh/id_dropbear" | grep '^ssh-')
	echo "$key" >"$r/root/.ssh/authorized_keys"
	key=$(dropbearkey -y -f "$r/etc/dropbear/dropbear_ed25519_host_key" | awk '/^ssh-/ {print $1, $2}')
	for i in $(seq 1 32); do
		echo "node$i $key"
		echo "10.70.0.$i $key"
	done >"$r/root/.ssh/known_hosts"
	chmod 700 "$r/root/.ssh"
	chmod 600 "$r/root/.ssh/authorized_keys" "$r/root/.ssh/id_dropbear"
	mke2fs -q -t ext4 -L kwroot -d "$r" -E root_owner=0:0 "$1/root.raw" "$ROOT_SIZE" >/dev/null
	qemu-img convert -O qcow2 "$1/root.raw" "$1/base.qcow2"
	rm -f "$1/root.raw"
	rm -rf "$r"
}

build_base() {
	local key dir tmp
	key=$(base_key)
	dir=$CACHE/base-$key
	if [ -f "$dir/ok" ]; then
		echo "$dir"
		return 0
	fi
	log "building the guest image (once; cached in $dir)"
	mkdir -p "$CACHE"
	tmp=$(mktemp -d "$CACHE/.base-$key.XXXXXX")
	trap 'rm -rf "$tmp"' EXIT
	module_list >"$tmp/modules.list"
	cp "/boot/vmlinuz-$KVER" "$tmp/vmlinuz"
	build_initramfs "$tmp" "$tmp/initrd-base.gz" "$tmp/modules.list"
	build_rootfs "$tmp" "$tmp/modules.list"
	# Each site has its own copy of the base, under the same file name (the
	# coordinator compares backing chains by size and name).
	mkdir -p "$tmp/site-a" "$tmp/site-b"
	cp "$tmp/base.qcow2" "$tmp/site-b/base.qcow2"
	mv "$tmp/base.qcow2" "$tmp/site-a/base.qcow2"
	echo "$KVER" >"$tmp/kernel-version"
	touch "$tmp/ok"
	rm -rf "$dir"
	mv "$tmp" "$dir"
	trap - EXIT
	echo "$dir"
}

# The second layer: this build's binaries, found where meson puts them.
LAYER_BINS=(agent/kawarimi-agent bench/kawarimi-pingpong lab/kwl-mpijob lab/kwl-memcheck)
LAYER_BTL=mpi-plugin/mca_btl_kawarimi.so

build_layer() {
	local b files=() key out d lib
	[ -n "$BUILD" ] || return 0
	for b in "${LAYER_BINS[@]}" "$LAYER_BTL"; do
		[ -f "$BUILD/$b" ] && files+=("$BUILD/$b")
	done
	[ ${#files[@]} -gt 0 ] || return 0
	key=$({
		cat "$LAB/mkimage.sh"
		sha256sum "${files[@]}" | cut -d' ' -f1
	} | sha256sum | cut -c1-16)
	out=$CACHE/layer-$key.gz
	if [ ! -f "$out" ]; then
		d=$(mktemp -d)
		mkdir -p "$d/kw/bin" "$d/kw/lib/openmpi"
		for b in "${files[@]}"; do
			case $b in
			*.so) cp "$b" "$d/kw/lib/openmpi/" ;;
			*) cp "$b" "$d/kw/bin/" ;;
			esac
		done
		# Their own shared libraries from this build (libkawarimi-*.so),
		# as their RUNPATH finds them: a caller's LD_LIBRARY_PATH (meson
		# test sets one to its own build) would point ldd elsewhere.
		for b in "${files[@]}"; do
			env -u LD_LIBRARY_PATH ldd "$b" 2>/dev/null | sed -n "s,.*=> \\($(cd "$BUILD" && pwd)/[^ ]*\\).*,\\1,p"
		done | sort -u | while read -r lib; do
			cp -L "$lib" "$d/kw/lib/"
		done
		(cd "$d" && find . | cpio -o -H newc -R 0:0 --quiet | gzip -1) >"$out.tmp"
		mv "$out.tmp" "$out"
		rm -rf "$d"
	fi
	echo "$out"
}

# One build at a time (tests and the demo may start together).
mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock 9
base=$(build_base)
layer=$(build_layer)
# Older images nobody uses (no lab's state names them) go.
for d in "$CACHE"/base-*; do
	[ "$d" = "$base" ] && continue
	cat /run/kawarimi-lab/*/base 2>/dev/null | grep -qxF "$d" || rm -rf "$d"
done
find "$CACHE" -maxdepth 1 -name 'layer-*.gz' -mtime +1 -delete 2>/dev/null
exec 9>&-
echo "BASE=$base"
echo "LAYER=$layer"
