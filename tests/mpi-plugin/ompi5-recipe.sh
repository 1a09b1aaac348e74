#!/usr/bin/env bash
# The MCA recipe of docs/btl.md keeps UCX off the device under Open MPI
# 5.0.7: after a quiesce no process holds a /dev/infiniband/uverbs*
# descriptor. Needs an RDMA device, and this machine's kernel has no RDMA
# subsystem, so it runs in a guest: the lab's kernel and stage-1 initramfs
# (lab/mkimage.sh: rdma_rxe, ib_uverbs, rdma_ucm), the Debian 13 chroot of
# the ompi5 suite as root file system, this project built there, and
# ompi5-recipe-guest.sh as its init. The guest runs a control job (osc
# ucx: the check must find UCX's descriptors) and the recipe job (it must
# find none after the quiesce, and kawarimi's own before it). Plain build
# only, like btl-ompi5-trixie. Args: <host build dir>
set -u
here=$(cd "$(dirname "$0")" && pwd)
. "$here/ompi5-chroot.sh"
for t in qemu-system-x86_64 mke2fs; do
	command -v $t >/dev/null || { echo "FAIL: $t missing (tests/setup.sh installs it)"; exit 1; }
done
kwt_test_prepare "$1"
base=$("$KWT_SRC/lab/mkimage.sh" | sed -n 's/^BASE=//p')
[ -n "$base" ] && [ -f "$base/initrd-base.gz" ] || {
	echo "FAIL: lab/mkimage.sh gave no kernel and initramfs"
	exit 1
}

g=$KWT_WORK/recipe
rm -rf "$g"
mkdir -p "$g"
trap 'rm -rf "$g/root" "$g/root.img"' EXIT
# The chroot as hard links (no copy), our files added, docs left out.
cp -al "$KWT_ROOT/." "$g/root/"
rm -rf "$g/root/usr/share/doc" "$g/root/usr/share/man" "$g/root/usr/share/locale" \
	"$g/root/usr/lib/gcc" "$g/root/usr/libexec/gcc"
mkdir -p "$g/root/opt/kwt"
cp "$KWT_WORK/build/mpi-plugin/mca_btl_kawarimi.so" "$KWT_WORK/build/tests/mpi-plugin/kwb-stream" \
	"$here/kwb-controller.py" "$g/root/opt/kwt/"
install -m 755 "$here/ompi5-recipe-guest.sh" "$g/root/sbin/kw-init"
mke2fs -q -t ext4 -d "$g/root" "$g/root.img" 2G || { echo "FAIL: mke2fs -d"; exit 1; }
rm -rf "$g/root"

t0=$SECONDS
timeout 900 qemu-system-x86_64 -machine q35 -accel tcg -m 2048 -smp 2 \
	-nodefaults -no-user-config -display none -no-reboot \
	-kernel "$base/vmlinuz" -initrd "$base/initrd-base.gz" \
	-append "console=ttyS0 quiet panic=-1" -serial "file:$g/console.log" \
	-drive "file=$g/root.img,format=raw,if=virtio" \
	-netdev user,id=n0,restrict=on -device virtio-net-pci,netdev=n0 \
	-object rng-random,id=rng0,filename=/dev/urandom -device virtio-rng-pci,rng=rng0 \
	>"$g/qemu.log" 2>&1
qrc=$?
grep -a -E "^KW|^KWT" "$g/console.log"
echo "guest ran $((SECONDS - t0)) s (qemu exit $qrc); console: $g/console.log"
grep -aq "^KWT_DONE" "$g/console.log" || { echo "FAIL: the guest did not finish"; tail -20 "$g/console.log"; exit 1; }

result() { grep -a "^KWT_RESULT $1 " "$g/console.log" | tail -1; }
field() { sed -n "s/.* $2=\[\([^]]*\)\].*/\1/p" <<<"$1"; }
fail=0
c=$(result control)
r=$(result recipe)
if [ -z "$c" ] || [ -z "$r" ]; then
	echo "FAIL: a job gave no result"
	exit 1
fi
case $c in
*" controller=0 "*) ;;
*) echo "FAIL: control: the quiesce/resume did not go through: $c"; fail=1 ;;
esac
if [ -z "$(field "$c" quiesced)" ]; then
	echo "FAIL: control: with osc ucx nobody held a uverbs descriptor after the quiesce; the check could not fail"
	fail=1
fi
case $r in
*" mpirun=0 controller=0 "*) ;;
*) echo "FAIL: recipe: the job or its quiesce/resume failed: $r"; fail=1 ;;
esac
if [ -z "$(field "$r" before)" ]; then
	echo "FAIL: recipe: no uverbs descriptor before the quiesce: the job did not use the device"
	fail=1
fi
if [ -n "$(field "$r" quiesced)" ]; then
	echo "FAIL: recipe: after the quiesce these still hold uverbs descriptors: $(field "$r" quiesced)"
	fail=1
fi
[ $fail -eq 0 ] && echo "PASS: with the recipe no process holds a uverbs descriptor after the quiesce (control with osc ucx: $(field "$c" quiesced))"
exit $fail
