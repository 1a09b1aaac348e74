#!/usr/bin/env bash
# kawarimi-agent on a real virtio-serial port (suite 'symvirt').
#
# Usage: virtio_port.sh KAWARIMI-AGENT KAWARIMI
#
# Boots the Debian kernel under QEMU (TCG) with a minimal initramfs: busybox,
# the virtio, virtio-net and soft-RoCE modules, the rdma and ibverbs tools,
# and the agent we built (with its libraries, the sanitizer runtime included
# in the ASan run).  The agent opens /dev/virtio-ports/org.kawarimi.symvirt.0
# at boot, before any host is connected (reads return EOF then: the agent
# must back off, not spin or give up), and then:
#   - `kawarimi agent` connects to the chardev socket and gets hello
#     (the client resends hello until the agent answers);
#   - inventory lists as many PCI functions as QEMU's query-pci reports,
#     the virtio-serial controller among them with its driver;
#   - the host disconnects and a new host connects: still answered;
#   - quiesce, then resume with a real PCI rescan and a hook that creates
#     rxe0 on the NIC (as the lab does) and leaves a verbs user running:
#     the agent waits for the ACTIVE port and hands out a verbs fabric;
#   - inventory shows rxe0, its port and GIDs, and flags the NIC as RDMA;
#   - quiesce fails with DeviceBusy naming the real uverbs holder.
# Debugging: KWS_KEEP=1 keeps the guest console in /tmp/kws-console.log on
# failure; KWS_AGENT_ARGS="-v -v" makes the agent log every message.
set -u
AGENT=$1
KAWARIMI=$2
KVER=6.1.0-56-amd64
KERNEL=/boot/vmlinuz-$KVER

for need in qemu-system-x86_64 cpio gzip; do
	command -v "$need" >/dev/null || { echo "SKIP: $need is not installed"; exit 77; }
done
[ -r "$KERNEL" ] && [ -x /bin/busybox ] && [ -d /lib/modules/$KVER ] ||
	{ echo "SKIP: needs $KERNEL, /lib/modules/$KVER and busybox-static"; exit 77; }

T=$(mktemp -d /tmp/kws-vport-XXXXXX)
QPID=
cleanup() {
	[ -n "$QPID" ] && kill "$QPID" 2>/dev/null && wait "$QPID" 2>/dev/null
	rm -rf "$T"
}
trap cleanup EXIT

fail() {
	[ -n "${KWS_KEEP:-}" ] && cp "$T/console.log" /tmp/kws-console.log
	echo "FAIL: $*"
	echo "---- guest console (last 40 lines) ----"
	tail -n 40 "$T/console.log" 2>/dev/null
	exit 1
}

# ---- the initramfs -----------------------------------------------------------
R=$T/root
mkdir -p "$R"/{bin,dev,proc,sys,run,tmp,mods,usr/share/misc}
cp /bin/busybox "$R/bin/"
# The agent and every library it loads, at the same paths as here, so its
# rpath (the build directory) and the loader's paths work unchanged.
copy_with_libs() {
	local f=$1 lib
	mkdir -p "$R$(dirname "$f")"
	cp -L "$f" "$R$f"
	for lib in $(ldd "$f" | grep -o '/[^ ]*'); do
		[ -e "$R$lib" ] && continue
		mkdir -p "$R$(dirname "$lib")"
		cp -L "$lib" "$R$lib"
	done
}
AGENT_ABS=$(readlink -f "$AGENT")
copy_with_libs "$AGENT_ABS"
[ -r /usr/share/misc/pci.ids ] && cp /usr/share/misc/pci.ids "$R/usr/share/misc/"
# soft-RoCE: the rdma tool, a verbs user, the rxe provider
RXE=
if command -v rdma >/dev/null && command -v ibv_rc_pingpong >/dev/null &&
	[ -r /etc/libibverbs.d/rxe.driver ] && lib=$(ls /usr/lib/x86_64-linux-gnu/libibverbs/librxe-*.so 2>/dev/null | head -n1); then
	copy_with_libs "$(command -v rdma)"
	copy_with_libs "$(command -v ibv_rc_pingpong)"
	copy_with_libs "$lib"
	mkdir -p "$R/etc/libibverbs.d"
	cp /etc/libibverbs.d/rxe.driver "$R/etc/libibverbs.d/"
	RXE=1
fi
i=0
for mod in $(for m in virtio_pci virtio_console virtio_net crc32_generic ib_uverbs rdma_rxe; do
		modprobe -S $KVER --show-depends $m; done | awk '$1 == "insmod" && !seen[$2]++ { print $2 }'); do
	i=$((i + 1))
	cp "$mod" "$R/mods/$(printf %02d $i)-$(basename "$mod")"
done
cat >"$R/init" <<EOF
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in /mods/*; do insmod \$m; done
ip link set lo up
# no udev here: make the /dev/virtio-ports link it would make
for i in 1 2 3 4 5 6 7 8 9 10; do
	for p in /sys/class/virtio-ports/*; do
		[ -r \$p/name ] || continue
		mkdir -p /dev/virtio-ports
		ln -sf /dev/\$(basename \$p) /dev/virtio-ports/\$(cat \$p/name)
	done
	[ -e /dev/virtio-ports/org.kawarimi.symvirt.0 ] && break
	sleep 0.5
done
echo KWS_GUEST_READY
export ASAN_OPTIONS=detect_leaks=0
$AGENT_ABS --foreground ${KWS_AGENT_ARGS:-} --socket /run/kawarimi/agent.sock &
echo KWS_AGENT_STARTED
exec sh -c 'while :; do sleep 3600; done'
EOF
chmod +x "$R/init"
(cd "$R" && find . | cpio -o -H newc 2>/dev/null | gzip -1) >"$T/initrd.gz" || fail "cannot build the initramfs"

# ---- the VM -----------------------------------------------------------------------
qemu-system-x86_64 -machine q35 -accel tcg -m 768 -nographic -no-reboot \
	-kernel "$KERNEL" -initrd "$T/initrd.gz" -append 'console=ttyS0 quiet panic=-1' \
	-device virtio-serial-pci,id=vser0 \
	-chardev socket,id=sv,path="$T/sv.sock",server=on,wait=off \
	-device virtserialport,chardev=sv,name=org.kawarimi.symvirt.0 \
	-netdev user,id=n0 -device virtio-net-pci,netdev=n0,id=nic0 \
	-qmp unix:"$T/qmp.sock",server=on,wait=off \
	</dev/null >"$T/console.log" 2>&1 &
QPID=$!

for _ in $(seq 1 240); do
	grep -q KWS_AGENT_STARTED "$T/console.log" && break
	kill -0 "$QPID" 2>/dev/null || fail "QEMU exited"
	sleep 0.5
done
grep -q KWS_AGENT_STARTED "$T/console.log" || fail "the guest did not start the agent within 120 s"
# Let the agent meet the port with no host connected for a while.
sleep 2
grep -q "kawarimi-agent.*error" "$T/console.log" && fail "agent error on the console"

agent() { "$KAWARIMI" agent --timeout 60 "$T/sv.sock" "$@"; }
hello=$(agent hello) || fail "hello through the virtio port failed"
echo "$hello" | grep -q '"protocol": 1' || fail "hello: $hello"
echo "ok   hello through the port (opened by the guest before the host connected)"

inv=$(agent inventory) || fail "inventory failed"
qpci=$("$KAWARIMI" qmp "$T/qmp.sock" query-pci) || fail "query-pci failed"
counts=$(python3 - "$inv" "$qpci" <<'PY'
import json, sys
inv = json.loads(sys.argv[1])
buses = json.loads(sys.argv[2])
def walk(devs):
    n = 0
    for d in devs:
        n += 1
        br = d.get("pci_bridge")
        if br and br.get("devices"):
            n += walk(br["devices"])
    return n
q = sum(walk(b["devices"]) for b in buses)
# virtio-serial-pci: 1af4:1003 (transitional) or 1af4:1043 (modern)
ser = [d for d in inv["pci"] if d["vendor-id"] == 0x1af4 and d["device-id"] in (0x1003, 0x1043)]
print(len(inv["pci"]), q, len(ser), ser[0]["driver"] if ser else "-")
PY
) || fail "cannot compare the inventory with query-pci"
read -r n_agent n_qemu n_ser ser_drv <<<"$counts"
[ "$n_agent" = "$n_qemu" ] || fail "agent lists $n_agent PCI functions, QEMU's query-pci $n_qemu"
[ "$n_ser" = 1 ] && [ "$ser_drv" = virtio-pci ] || fail "virtio-serial controller: $n_ser found, driver $ser_drv"
echo "ok   inventory: $n_agent PCI functions, as query-pci; virtio-serial bound to $ser_drv"

st=$(agent status) || fail "status on a second connection failed"
echo "$st" | grep -q '"state": "running"' || fail "status: $st"
echo "ok   a new host connection after the first went away"

q=$(agent quiesce '{"deadline-ms": 5000}') || fail "quiesce failed"
if [ -z "$RXE" ]; then
	r=$(agent resume '{"fabrics": ["tcp"], "link-timeout-ms": 1000}') || fail "resume failed: $r"
	echo "$r" | grep -q '"rescan": "done"' || fail "resume did not rescan PCI: $r"
	echo "ok   quiesce, resume with a real PCI rescan (no rdma tools here: soft-RoCE part skipped)"
	exit 0
fi
hook='ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0 && rdma link add rxe0 type rxe netdev eth0 && (ibv_rc_pingpong -d rxe0 -g 1 >/dev/null 2>&1 &)'
args=$(python3 -c 'import json, sys; print(json.dumps({"fabrics": ["verbs", "tcp"], "link-timeout-ms": 60000, "hook": sys.argv[1]}))' "$hook")
r=$(agent resume "$args") || fail "resume failed: $r"
python3 - "$r" <<'PY' || fail "resume onto soft-RoCE: $r"
import json, sys
r = json.loads(sys.argv[1])
assert r["rescan"] == "done", r["rescan"]
assert r["hook"]["exit-status"] == 0, r["hook"]
assert r["verbs-ready"] is True, "no ACTIVE port"
assert {"name": "verbs", "ifname": "eth0", "addr": "10.0.2.15"} in r["fabrics"], r["fabrics"]
assert {"name": "tcp", "ifname": "eth0", "addr": "10.0.2.15"} in r["fabrics"], r["fabrics"]
print("ok   resume: PCI rescan, hook made rxe0, verbs ACTIVE after %d ms of waiting" % r["link-wait-ms"])
PY
inv=$(agent inventory) || fail "inventory with rxe0 failed"
python3 - "$inv" <<'PY' || fail "inventory with rxe0: $inv"
import json, sys
inv = json.loads(sys.argv[1])
v = [d for d in inv["verbs"] if d["name"] == "rxe0"]
assert v, "no rxe0 in %r" % inv["verbs"]
p = v[0]["ports"][0]
assert v[0]["netdev"] == "eth0" and p["state"] == "ACTIVE" and p["link-layer"] == "Ethernet", v
assert "::ffff:10.0.2.15" in p["gids"], p["gids"]
eth0 = [n for n in inv["netdevs"] if n["name"] == "eth0"][0]
nic = [d for d in inv["pci"] if d["address"] == eth0["pci"]]
assert nic and nic[0]["rdma"] is True and nic[0]["verbs"] == "rxe0", nic
print("ok   inventory: rxe0 port 1 ACTIVE, GID ::ffff:10.0.2.15; the NIC %s flagged RDMA" % eth0["pci"])
PY
err=$(agent quiesce '{"deadline-ms": 5000}' 2>&1 >/dev/null)
rc=$?
[ $rc = 1 ] || fail "quiesce with a verbs user running: rc $rc ($err)"
case $err in
DeviceBusy:*"(ibv_rc_pingpong)"*"/dev/infiniband/uverbs"*) ;;
*) fail "quiesce with a verbs user running: $err" ;;
esac
echo "ok   quiesce refused: $err"
kill -0 "$QPID" 2>/dev/null || fail "QEMU died"
grep -qi "AddressSanitizer\|runtime error" "$T/console.log" && fail "sanitizer report on the console"
exit 0
