#!/usr/bin/env bash
# lab/lab.sh: the one-machine two-site lab (docs/lab.md).  `kawarimi lab ...`
# runs this script.
#
#   lab.sh up [--nodes N] [--rate 920mbit] [--rtt 7.5ms] [--hotplug acpi|native]
#             [--local]
#   lab.sh status
#   lab.sh env                     the environment kawarimi needs to reach
#                                  the sites (KAWARIMI_SSH), as shell exports
#   lab.sh down
#   lab.sh console NODE            interactive serial console (Ctrl-] leaves)
#   lab.sh exec NODE [--timeout S] -- COMMAND...   run a command in the guest
#   lab.sh incoming SITE           start -incoming defer QEMUs at SITE (a|b)
#                                  for the nodes not running there
#   lab.sh qmp NODE SITE JSON...   raw QMP commands (for scripts and tests)
#
# Environment: KWL_PREFIX (default kwl) names the namespaces, links and
# the state dir (KWL_STATE, default /run/kawarimi-lab/$KWL_PREFIX), so a
# test instance and the demo can run side by side.  KAWARIMI_BUILD is the
# build dir whose kwl-hub, kwl-relay and guest binaries are used.
set -uo pipefail

LAB=$(cd "$(dirname "$0")" && pwd)
REPO=$(dirname "$LAB")
P=${KWL_PREFIX:-kwl}
STATE=${KWL_STATE:-/run/kawarimi-lab/$P}
BUILD=${KAWARIMI_BUILD:-$REPO/build}
BOOT_TIMEOUT=${KWL_BOOT_TIMEOUT:-180}
DGRAM_QLEN=${KWL_DGRAM_QLEN:-512}
# Extra guest kernel arguments, for debugging the guests (docs/lab.md).
APPEND_EXTRA=${KWL_APPEND:-}

NS_A=$P-a
NS_B=$P-b
VETH_A=$P-wa
VETH_B=$P-wb
WAN_A=10.77.0.1
WAN_B=10.77.0.2

die() {
	echo "kawarimi lab: $*" >&2
	exit 1
}
say() { echo "kawarimi lab: $*" >&2; }

case $P in
*[!a-z0-9]* | ????????????*) die "KWL_PREFIX '$P' must be 1-11 lowercase letters or digits" ;;
esac

# Ports inside the site namespaces (each site its own netns, so instances
# with other prefixes do not collide): node I's migration stream and NBD
# export, per destination site.
mig_port() { [ "$1" = b ] && echo $((4400 + $2)) || echo $((4500 + $2)); }
nbd_port() { [ "$1" = b ] && echo $((10800 + $2)) || echo $((10900 + $2)); }
wan_ip() { [ "$1" = a ] && echo $WAN_A || echo $WAN_B; }
other() { [ "$1" = a ] && echo b || echo a; }

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# Run a command in the background inside a netns, pid in STATE/NAME.pid.
spawn() { # NAME NETNS|- CMD...
	local name=$1 ns=$2
	shift 2
	if [ "$ns" = - ]; then
		setsid "$@" </dev/null >>"$STATE/$name.log" 2>&1 &
	else
		setsid ip netns exec "$ns" "$@" </dev/null >>"$STATE/$name.log" 2>&1 &
	fi
	echo $! >"$STATE/$name.pid"
}

need_tools() {
	local t
	for t in qemu-system-x86_64 qemu-img ip tc socat python3 ssh ssh-keygen openssl /usr/sbin/sshd; do
		command -v "$t" >/dev/null || die "'$t' not found; run tests/setup.sh's kawarimi_install_deps"
	done
	for t in lab/kwl-hub lab/kwl-relay; do
		[ -x "$BUILD/$t" ] || die "$BUILD/$t not built; run 'ninja -C $BUILD' (or set KAWARIMI_BUILD)"
	done
	[ "$(id -u)" = 0 ] || die "the lab needs root (network namespaces, tbf)"
}

# ---- QEMU --------------------------------------------------------------

# qemu_args SITE NODE MODE: sets QA to the QEMU command line.  MODE is run
# (boot; the HCA plugged at site A) or incoming (-incoming defer, no HCA:
# site B, or site A awaiting the way back).  Both sites get the same
# devices in the same order, less the HCA, as migration requires.
qemu_args() {
	local site=$1 i=$2 mode=$3 n base nodes hotplug
	n=$STATE/$site-node$i
	base=$(cat "$STATE/base")
	nodes=$(cat "$STATE/nodes")
	hotplug=$(cat "$STATE/hotplug")
	# 512 MiB + 8 KiB, not 512 MiB: QEMU before 9.0 under TCG loses guest
	# writes in a live migration when a RAM block is a whole number of
	# 256 KiB (its fast dirty-bitmap sync clears dirty bits without
	# re-arming the TCG TLB; fixed upstream by "physmem: ...
	# cpu_physical_memory_dirty_bits_cleared", 2024).  Any other size takes
	# the per-page path, which is right.  docs/lab.md, "What was found".
	QA=(-name "$P-$site-node$i" -machine q35 -accel tcg -m 524296k -smp 1
		-nodefaults -no-user-config -display none
		-kernel "$base/vmlinuz" -initrd "$STATE/initrd.gz"
		-append "console=ttyS0 quiet panic=-1 kw.node=$i kw.nodes=$nodes${APPEND_EXTRA:+ $APPEND_EXTRA}"
		-chardev "socket,id=con0,path=$n.console,server=on,wait=off,logfile=$n.log,logappend=on"
		-serial chardev:con0
		-qmp "unix:$n.qmp,server=on,wait=off"
		-blockdev "driver=qcow2,node-name=disk0,file.driver=file,file.filename=$n.qcow2"
		-device virtio-blk-pci,drive=disk0,id=vblk0
		-netdev "dgram,id=clnet,local.type=unix,local.path=$n.cl,remote.type=unix,remote.path=$STATE/cluster.hub"
		-device "virtio-net-pci,netdev=clnet,id=net0,mac=52:54:00:70:00:$(printf %02x "$i")"
		-device pcie-root-port,id=rp1,chassis=1,slot=1
		-object rng-random,id=rng0,filename=/dev/urandom -device virtio-rng-pci,rng=rng0)
	if [ "$site" = a ]; then
		QA+=(-netdev "dgram,id=hcanet,local.type=unix,local.path=$n.rd,remote.type=unix,remote.path=$STATE/rdma.hub")
		[ "$mode" = run ] && QA+=(-device "$(hca_device "$i")")
	fi
	QA+=(-device virtio-serial-pci,id=vser0
		-chardev "socket,id=symvirt0,path=$n.symvirt,server=on,wait=off"
		-device virtserialport,chardev=symvirt0,name=org.kawarimi.symvirt.0)
	[ "$hotplug" = native ] && QA+=(-global ICH9-LPC.acpi-pci-hotplug-with-bridge-support=off)
	# -S: the coordinator `cont`s all destinations together at switchover,
	# after `device_add` of the HCA where the destination has one.
	[ "$mode" = incoming ] && QA+=(-incoming defer -S)
	QA+=(-pidfile "$n.pid" -daemonize)
}

hca_model() { cat "$STATE/hca-model" 2>/dev/null || echo e1000e; }
hca_device() { echo "$(hca_model),netdev=hcanet,bus=rp1,id=hca0,mac=52:54:00:71:00:$(printf %02x "$1")"; }

start_qemu() { # SITE NODE MODE
	local site=$1 i=$2 mode=$3 n ns
	n=$STATE/$site-node$i
	[ "$site" = a ] && ns=$NS_A || ns=$NS_B
	rm -f "$n.console" "$n.qmp" "$n.symvirt" "$n.cl" "$n.rd" "$n.pid"
	qemu_args "$site" "$i" "$mode"
	if ! ip netns exec "$ns" qemu-system-x86_64 "${QA[@]}" 2>>"$n.qemu.log"; then
		die "QEMU for $site-node$i did not start; see $n.qemu.log"
	fi
}

new_overlay() { # SITE NODE
	local base
	base=$(cat "$STATE/base")
	rm -f "$STATE/$1-node$2.qcow2"
	qemu-img create -q -f qcow2 -b "$base/site-$1/base.qcow2" -F qcow2 \
		"$STATE/$1-node$2.qcow2" || die "cannot create the overlay for $1-node$2"
}

wait_ready() { # SITE NODE: the guest init prints KW_READY on the console
	local log=$STATE/$1-node$2.log t=0
	while ! grep -q "KW_READY node$2" "$log" 2>/dev/null; do
		pid_alive "$STATE/$1-node$2.pid" || die "QEMU for $1-node$2 died while booting; see $STATE/$1-node$2.qemu.log"
		[ $t -ge $((BOOT_TIMEOUT * 2)) ] && die "node$2 at site $1 not ready after $BOOT_TIMEOUT s; see $log"
		sleep 0.5
		t=$((t + 1))
	done
}

# ---- QMP ----------------------------------------------------------------

# qmp_raw SOCKET JSON...: prints QEMU's replies, one per line.
qmp_raw() {
	local sock=$1
	shift
	{
		echo '{"execute":"qmp_capabilities"}'
		printf '%s\n' "$@"
		sleep 0.3
	} | timeout 10 socat -t 2 - "UNIX-CONNECT:$sock" 2>/dev/null | tail -n +3
}

qemu_status() { # SITE NODE -> running|inmigrate|postmigrate|paused|down
	local n=$STATE/$1-node$2 s
	pid_alive "$n.pid" || {
		echo down
		return
	}
	s=$(qmp_raw "$n.qmp" '{"execute":"query-status"}' | sed -n 's/.*"status": *"\([a-z-]*\)".*/\1/p' | head -1)
	echo "${s:-unknown}"
}

# The site where NODE runs now (its QEMU is running), else a.
running_site() {
	local s
	for s in a b; do
		[ "$(qemu_status "$s" "$1")" = running ] && {
			echo "$s"
			return
		}
	done
	echo a
}

# ---- the cluster files for `kawarimi migrate` ----------------------------

# site_ep SITE NAME: how the coordinator reaches a site's socket NAME:
# through the site's sshd (ssh://HOST/PATH, HOST a Host of the lab's ssh
# config), or the local path with `up --local`.
site_ep() {
	if [ -f "$STATE/local" ]; then
		echo "$STATE/$2"
	else
		echo "ssh://$P-$1$STATE/$2"
	fi
}

write_cluster_file() { # FROM TO FILE
	local from=$1 to=$2 file=$3 i nodes rate
	nodes=$(cat "$STATE/nodes")
	rate=$(cat "$STATE/rate")
	{
		echo "# Written by \`kawarimi lab up\` ($P): the lab's node VMs from site"
		echo "# ${from^^} to site ${to^^}.  See docs/cluster-file.md and docs/lab.md."
		echo "format: 1"
		echo "cluster: $P-$from$to"
		echo "storage: incremental"
		echo "limits:"
		echo "  bandwidth: $(sed 's,mbit$,Mbit/s,; s,gbit$,Gbit/s,; s,kbit$,kbit/s,' <<<"$rate")"
		echo "  parallel: $nodes"
		echo "  downtime: 300ms"
		if [ -f "$STATE/local" ]; then
			echo "# \`lab up --local\`: local sockets, and the WAN in clear text."
			echo "tls: none"
		else
			echo "# Each site is a host reached through its sshd (KAWARIMI_SSH: see"
			echo "# \`kawarimi lab env\`); the streams between them are sealed with a"
			echo "# throwaway PKI made by lab/pki.sh (docs/security.md)."
			echo "tls:"
			echo "  dir: $STATE/tls"
			echo "  source-dn: \"$(cat "$STATE/tls/source-dn")\""
		fi
		echo "vms:"
		for i in $(seq 1 "$nodes"); do
			echo "  - name: node$i"
			echo "    source:"
			echo "      qmp: $(site_ep "$from" "$from-node$i.qmp")"
			echo "      symvirt: $(site_ep "$from" "$from-node$i.symvirt")"
			if [ "$from" = a ]; then
				hca_yaml "$i" 6
			else
				echo "      hca: none"
			fi
			echo "    destination:"
			echo "      qmp: $(site_ep "$to" "$to-node$i.qmp")"
			echo "      symvirt: $(site_ep "$to" "$to-node$i.symvirt")"
			echo "      migration:"
			echo "        listen: tcp:$(wan_ip "$to"):$(mig_port "$to" "$i")"
			echo "        connect: tcp:127.0.0.1:$(mig_port "$to" "$i")"
			echo "      nbd:"
			echo "        listen: tcp:$(wan_ip "$to"):$(nbd_port "$to" "$i")"
			echo "        connect: tcp:127.0.0.1:$(nbd_port "$to" "$i")"
			if [ "$to" = a ]; then
				hca_yaml "$i" 6
			else
				echo "      hca: none"
			fi
			echo "    disks:"
			echo "      - source: disk0"
		done
	} >"$file"
}

hca_yaml() { # NODE INDENT
	local pad
	pad=$(printf '%*s' "$2" '')
	echo "${pad}hca:"
	echo "${pad}  driver: $(hca_model)"
	echo "${pad}  id: hca0"
	echo "${pad}  netdev: hcanet"
	echo "${pad}  bus: rp1"
	echo "${pad}  mac: \"52:54:00:71:00:$(printf %02x "$1")\""
}

# ---- the sites as hosts ---------------------------------------------------

# Each site namespace runs an sshd on its own 127.0.0.1:22, and the
# coordinator reaches a site only through it, as an operator reaches a
# real site: `ssh $P-a` works with the lab's ssh config, whose Host entries
# enter the namespace with a ProxyCommand (where an operator would have a
# ProxyJump to the site's bastion).  Keys, host keys and known_hosts are
# the lab's own, made at `up`; nothing of root's ~/.ssh is read or changed.
ssh_setup() {
	local d=$STATE/ssh s
	mkdir -p "$d" /run/sshd && chmod 700 "$d" || die "cannot create $d"
	ssh-keygen -q -t ed25519 -N '' -C "kawarimi-lab-$P" -f "$d/id" || die "ssh-keygen failed"
	cp "$d/id.pub" "$d/authorized_keys"
	: >"$d/known_hosts"
	: >"$d/config"
	for s in a b; do
		ssh-keygen -q -t ed25519 -N '' -C "$P-$s" -f "$d/host-$s" || die "ssh-keygen failed"
		echo "$P-$s $(cut -d' ' -f1,2 "$d/host-$s.pub")" >>"$d/known_hosts"
		# sshd's MaxSessions bounds the sockets one master carries: two per
		# VM (QMP and symvirt), 16 VMs at most.
		cat >"$d/sshd-$s.conf" <<-EOF
			ListenAddress 127.0.0.1:22
			HostKey $d/host-$s
			AuthorizedKeysFile $d/authorized_keys
			PidFile none
			UsePAM no
			PermitRootLogin prohibit-password
			PasswordAuthentication no
			KbdInteractiveAuthentication no
			MaxSessions 64
			LogLevel VERBOSE
		EOF
		cat >>"$d/config" <<-EOF
			Host $P-$s
			    User root
			    HostKeyAlias $P-$s
			    ProxyCommand ip netns exec $P-$s socat - TCP:127.0.0.1:22
			    IdentityFile $d/id
			    IdentitiesOnly yes
			    IdentityAgent none
			    UserKnownHostsFile $d/known_hosts
			    GlobalKnownHostsFile /dev/null
			    StrictHostKeyChecking yes
		EOF
	done
	printf '#!/bin/sh\n# The ssh that kawarimi runs to reach the lab'"'"'s sites (KAWARIMI_SSH).\nexec ssh -F %s "$@"\n' \
		"$d/config" >"$d/ssh"
	chmod 755 "$d/ssh"
}

sshd_start() {
	local s t
	spawn sshd-a "$NS_A" /usr/sbin/sshd -D -f "$STATE/ssh/sshd-a.conf"
	spawn sshd-b "$NS_B" /usr/sbin/sshd -D -f "$STATE/ssh/sshd-b.conf"
	for s in a b; do
		t=0
		until "$STATE/ssh/ssh" -o BatchMode=yes -o ConnectTimeout=5 "$P-$s" true 2>>"$STATE/sshd-$s.log"; do
			pid_alive "$STATE/sshd-$s.pid" || die "the sshd of site $s died; see $STATE/sshd-$s.log"
			[ $t -ge 20 ] && die "cannot log in to site $s through its sshd; see $STATE/sshd-$s.log"
			sleep 0.25
			t=$((t + 1))
		done
	done
}

pki_setup() {
	# The destinations' certificate names what the sources dial: each
	# site's relay on 127.0.0.1 (and the WAN addresses, for a cluster file
	# edited to dial them directly).
	PKI_DAYS=30 bash "$LAB/pki.sh" "$STATE/tls" "kawarimi-lab-$P" \
		"IP:127.0.0.1,IP:$WAN_A,IP:$WAN_B" >"$STATE/tls/source-dn" 2>"$STATE/pki.log" ||
		die "making the lab's PKI failed; see $STATE/pki.log"
	[ -s "$STATE/tls/source-dn" ] || die "lab/pki.sh printed no source DN; see $STATE/pki.log"
}

cmd_env() {
	[ -d "$STATE" ] || die "no lab '$P' is up"
	[ -f "$STATE/local" ] && return 0
	echo "export KAWARIMI_SSH=$STATE/ssh/ssh"
}

# ---- up -------------------------------------------------------------------

rate_ok() { [[ $1 =~ ^[0-9]+(\.[0-9]+)?(kbit|mbit|gbit)$ ]]; }

cmd_up() {
	local nodes=2 rate=920mbit rtt=7.5ms hotplug=acpi hca=${KWL_HCA_MODEL:-e1000e} i out base layer delay
	local local_only=no
	while [ $# -gt 0 ]; do
		case $1 in
		--nodes) nodes=${2:-}; shift 2 ;;
		--rate) rate=${2:-}; shift 2 ;;
		--rtt) rtt=${2:-}; shift 2 ;;
		--hotplug) hotplug=${2:-}; shift 2 ;;
		--hca-model) hca=${2:-}; shift 2 ;;
		--local) local_only=yes; shift ;;
		*) die "up: unknown option '$1'; see 'kawarimi lab help'" ;;
		esac
	done
	[[ $nodes =~ ^[0-9]+$ ]] && [ "$nodes" -ge 1 ] && [ "$nodes" -le 16 ] ||
		die "up: --nodes '$nodes' must be 1 to 16"
	rate_ok "$rate" || die "up: --rate '$rate' is not a rate; write e.g. 920mbit, 100mbit, 1gbit"
	[[ $rtt =~ ^[0-9]+(\.[0-9]+)?ms$ ]] || die "up: --rtt '$rtt' is not a duration; write e.g. 7.5ms, 0ms"
	case $hotplug in acpi | native) ;; *) die "up: --hotplug '$hotplug' must be acpi or native" ;; esac
	case $hca in e1000e | virtio-net-pci) ;; *) die "up: --hca-model '$hca' must be e1000e or virtio-net-pci" ;; esac
	need_tools
	if [ -d "$STATE" ] || ip netns list | grep -qw "$NS_A"; then
		die "a lab named '$P' is already up (or was not cleaned up); run 'kawarimi lab down' first"
	fi

	out=$("$LAB/mkimage.sh" "$BUILD") || die "building the guest image failed"
	base=$(sed -n 's/^BASE=//p' <<<"$out")
	layer=$(sed -n 's/^LAYER=//p' <<<"$out")

	mkdir -p "$STATE"
	echo "$base" >"$STATE/base"
	echo "$nodes" >"$STATE/nodes"
	echo "$rate" >"$STATE/rate"
	echo "$rtt" >"$STATE/rtt"
	echo "$hotplug" >"$STATE/hotplug"
	echo "$hca" >"$STATE/hca-model"
	[ $local_only = yes ] && : >"$STATE/local"
	cat "$base/initrd-base.gz" ${layer:+"$layer"} >"$STATE/initrd.gz"
	if [ -n "$layer" ]; then
		echo "$layer" >"$STATE/layer"
	else
		say "no kawarimi-agent, BTL or kawarimi-pingpong in $BUILD yet: the guests run without them"
	fi

	# A failure from here on takes down what was started.
	trap 'say "up failed; cleaning up"; cmd_down >/dev/null 2>&1' EXIT

	# The WAN: a veth pair between the two site namespaces, tbf for the rate
	# on both ends; the delay is added by kwl-relay (no netem here).
	ip netns add "$NS_A" && ip netns add "$NS_B" || die "cannot create network namespaces"
	ip link add "$VETH_A" netns "$NS_A" type veth peer name "$VETH_B" netns "$NS_B" ||
		die "cannot create the WAN veth pair"
	ip -n "$NS_A" link set lo up
	ip -n "$NS_B" link set lo up
	# The L2s are unix datagram sockets: a receiver's queue holds
	# net.unix.max_dgram_qlen datagrams (10 by default), fixed when the
	# socket is made, in its namespace. Ten frames was less than one verbs
	# message of 16 KiB at rxe's 1 KiB MTU, so bursts lost their tail and
	# RC waited for its retry timer. Hubs and QEMUs live in the site
	# namespaces, where the queue is raised; the host keeps its setting.
	local ns
	for ns in "$NS_A" "$NS_B"; do
		ip netns exec "$ns" sysctl -qw net.unix.max_dgram_qlen=$DGRAM_QLEN ||
			die "cannot set net.unix.max_dgram_qlen in $ns"
	done
	ip -n "$NS_A" addr add $WAN_A/30 dev "$VETH_A"
	ip -n "$NS_B" addr add $WAN_B/30 dev "$VETH_B"
	ip -n "$NS_A" link set "$VETH_A" up
	ip -n "$NS_B" link set "$VETH_B" up
	tc -n "$NS_A" qdisc add dev "$VETH_A" root tbf rate "$rate" burst 256kb latency 20ms ||
		die "tbf on the WAN link failed"
	tc -n "$NS_B" qdisc add dev "$VETH_B" root tbf rate "$rate" burst 256kb latency 20ms

	# The L2s: the cluster's (both sites) and site A's RDMA network.
	spawn hub-cluster "$NS_A" "$BUILD/lab/kwl-hub" "$STATE/cluster.hub"
	spawn hub-rdma "$NS_A" "$BUILD/lab/kwl-hub" "$STATE/rdma.hub"

	# The WAN delay: each site dials the other's migration and NBD ports
	# through a relay at 127.0.0.1 in its own namespace.
	delay=$(awk -v r="${rtt%ms}" 'BEGIN { printf "%.3f", r / 2 }')
	echo "$delay" >"$STATE/delay-ms"
	local s rules
	for s in a b; do
		rules=()
		for i in $(seq 1 "$nodes"); do
			local to port
			to=$(other $s)
			for port in $(mig_port "$to" "$i") $(nbd_port "$to" "$i"); do
				rules+=("127.0.0.1:$port=$(wan_ip "$to"):$port")
			done
		done
		[ $s = a ] && ns=$NS_A || ns=$NS_B
		spawn "relay-$s" "$ns" "$BUILD/lab/kwl-relay" --delay-ms "$delay" "${rules[@]}"
	done

	if [ $local_only = no ]; then
		mkdir -p "$STATE/tls"
		pki_setup
		ssh_setup
		sshd_start
	fi

	sleep 0.3
	for f in hub-cluster hub-rdma relay-a relay-b; do
		pid_alive "$STATE/$f.pid" || die "$f did not start; see $STATE/$f.log"
	done

	for i in $(seq 1 "$nodes"); do
		new_overlay a "$i"
		new_overlay b "$i"
		start_qemu a "$i" run
		start_qemu b "$i" incoming
	done
	write_cluster_file a b "$STATE/cluster-a2b.yaml"
	write_cluster_file b a "$STATE/cluster-b2a.yaml"
	for i in $(seq 1 "$nodes"); do
		wait_ready a "$i"
	done
	trap - EXIT
	say "up: $nodes node VMs at site A, $nodes incoming QEMUs at site B; WAN $rate, RTT $rtt"
	say "cluster files: $STATE/cluster-a2b.yaml (A->B), $STATE/cluster-b2a.yaml (B->A; run 'kawarimi lab incoming a' first)"
	if [ $local_only = no ]; then
		say "the sites are hosts $P-a and $P-b, reached through their sshd; before 'kawarimi migrate':"
		say "  eval \"\$(kawarimi lab env)\"    # sets KAWARIMI_SSH=$STATE/ssh/ssh"
	fi
}

# ---- incoming --------------------------------------------------------------

cmd_incoming() {
	local site=${1:-} nodes i
	case $site in a | b) ;; *) die "incoming: give the site, a or b" ;; esac
	[ -d "$STATE" ] || die "no lab '$P' is up"
	nodes=$(cat "$STATE/nodes")
	for i in $(seq 1 "$nodes"); do
		if pid_alive "$STATE/$site-node$i.pid"; then
			say "incoming: node$i already has a QEMU at site $site ($(qemu_status "$site" "$i")); left as it is"
			continue
		fi
		new_overlay "$site" "$i"
		start_qemu "$site" "$i" incoming
	done
	say "incoming: site ${site^^} waits for its node VMs (-incoming defer)"
}

# ---- down -----------------------------------------------------------------

kill_pidfile() { # FILE
	local pid
	[ -f "$1" ] || return 0
	pid=$(cat "$1")
	[[ $pid =~ ^[0-9]+$ ]] && kill "$pid" 2>/dev/null
}

cmd_down() {
	local f pid ns t
	for f in "$STATE"/*.pid; do
		kill_pidfile "$f"
	done
	# Anything still in our namespaces (a QEMU whose pid file was lost).
	for ns in "$NS_A" "$NS_B"; do
		ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null
	done
	# And anything that still names our state dir (a hub started by a
	# killed `up` before it wrote the pid file).
	if [ -d "$STATE" ]; then
		for f in /proc/[0-9]*/cmdline; do
			pid=${f#/proc/}
			pid=${pid%/cmdline}
			[ "$pid" = $$ ] && continue
			{ tr '\0' ' ' <"$f"; } 2>/dev/null | grep -qF -- "$STATE/" && kill "$pid" 2>/dev/null
		done
	fi
	t=0
	while [ $t -lt 50 ]; do
		local alive=0
		for f in "$STATE"/*.pid; do
			pid_alive "$f" && alive=1
		done
		for ns in "$NS_A" "$NS_B"; do
			[ -n "$(ip netns pids "$ns" 2>/dev/null)" ] && alive=1
		done
		[ $alive = 0 ] && break
		sleep 0.1
		t=$((t + 1))
	done
	for f in "$STATE"/*.pid; do
		pid_alive "$f" && kill -9 "$(cat "$f")" 2>/dev/null
	done
	for ns in "$NS_A" "$NS_B"; do
		ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null
		ip netns del "$ns" 2>/dev/null
	done
	rm -rf "$STATE"
	say "down: lab '$P' stopped, nothing left"
}

# ---- status ---------------------------------------------------------------

cmd_status() {
	local nodes i s f
	if [ ! -d "$STATE" ]; then
		echo "lab '$P': down"
		ip netns list | grep -q "^$NS_A" && echo "  (namespace $NS_A left over: run 'kawarimi lab down')"
		return 3
	fi
	nodes=$(cat "$STATE/nodes")
	echo "lab '$P': $nodes nodes, WAN $(cat "$STATE/rate") RTT $(cat "$STATE/rtt"), hotplug $(cat "$STATE/hotplug"), state $STATE"
	local daemons=(hub-cluster hub-rdma relay-a relay-b)
	[ -f "$STATE/local" ] || daemons+=(sshd-a sshd-b)
	for f in "${daemons[@]}"; do
		pid_alive "$STATE/$f.pid" && echo "  $f: pid $(cat "$STATE/$f.pid")" || echo "  $f: NOT RUNNING"
	done
	if [ -f "$STATE/local" ]; then
		echo "  endpoints: local sockets, the WAN in clear text (up --local)"
	else
		echo "  endpoints: ssh://$P-a/... and ssh://$P-b/... ('eval \"\$(kawarimi lab env)\"'), TLS from $STATE/tls"
	fi
	printf '  %-6s %-12s %-12s %-14s %s\n' node site-A site-B cluster-IP HCA-IP
	for i in $(seq 1 "$nodes"); do
		printf '  %-6s %-12s %-12s %-14s %s\n' "node$i" "$(qemu_status a "$i")" "$(qemu_status b "$i")" \
			"10.70.0.$i" "10.71.0.$i"
	done
	echo "  cluster files: $STATE/cluster-a2b.yaml $STATE/cluster-b2a.yaml"
}

# ---- console / exec / qmp -----------------------------------------------------

node_arg() {
	local i=${1:-}
	i=${i#node}
	[[ $i =~ ^[0-9]+$ ]] || die "give a node: 1, 2, ... or node1, node2, ..."
	[ -d "$STATE" ] || die "no lab '$P' is up; run 'kawarimi lab up'"
	[ "$i" -ge 1 ] && [ "$i" -le "$(cat "$STATE/nodes")" ] || die "no node$i in lab '$P'"
	echo "$i"
}

cmd_console() {
	local i site
	i=$(node_arg "${1:-}") || exit 1
	site=${2:-$(running_site "$i")}
	echo "node$i at site ${site^^}; Ctrl-] leaves the console" >&2
	exec socat -,raw,echo=0,escape=0x1d "UNIX-CONNECT:$STATE/$site-node$i.console"
}

cmd_exec() {
	local i site timeout=60
	i=$(node_arg "${1:-}") || exit 1
	shift
	site=$(running_site "$i")
	while [ $# -gt 0 ] && [ "$1" != -- ]; do
		case $1 in
		--timeout) timeout=$2; shift 2 ;;
		--site) site=$2; shift 2 ;;
		*) die "exec: unknown option '$1'" ;;
		esac
	done
	[ "${1:-}" = -- ] && shift
	exec python3 "$LAB/kwl-console.py" "$STATE/$site-node$i.console" --timeout "$timeout" -- "$@"
}

cmd_qmp() {
	local i site
	i=$(node_arg "${1:-}") || exit 1
	site=${2:-}
	case $site in a | b) ;; *) die "qmp: give the site, a or b" ;; esac
	shift 2
	qmp_raw "$STATE/$site-node$i.qmp" "$@"
}

usage() {
	cat <<EOF
usage: kawarimi lab up [--nodes N] [--rate 920mbit] [--rtt 7.5ms] [--hotplug acpi|native]
                     [--local]            (no sshd, no TLS: local sockets)
       kawarimi lab status | down | env
       kawarimi lab console NODE            (Ctrl-] leaves)
       kawarimi lab exec NODE [--timeout S] -- COMMAND...
       kawarimi lab incoming a|b            (destination QEMUs for the way back)
       kawarimi lab qmp NODE a|b JSON...
Instance: KWL_PREFIX=$P, state $STATE.  See docs/lab.md.
EOF
}

cmd=${1:-help}
shift || true
case $cmd in
up) cmd_up "$@" ;;
down) cmd_down ;;
status) cmd_status ;;
env) cmd_env ;;
console) cmd_console "$@" ;;
exec) cmd_exec "$@" ;;
incoming) cmd_incoming "$@" ;;
qmp) cmd_qmp "$@" ;;
help | --help | -h) usage ;;
*)
	usage >&2
	exit 2
	;;
esac
