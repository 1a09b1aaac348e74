#!/bin/bash
# /sbin/kw-init of the guest that ompi5-recipe.sh boots: the Debian 13
# chroot with Open MPI 5.0.7 as root file system, the lab's kernel and
# stage-1 initramfs (modules rdma_rxe, ib_uverbs, rdma_ucm, virtio_net).
# rxe0 on the guest's NIC; one node, two ranks, kawarimi's verbs path
# between them (rxe loops back to its own address). Two jobs, each
# quiesced by kwb-controller.py (scenario recipe) while it runs:
#   control  the recipe but --mca osc ucx: osc ucx opens UCX for the
#            job's window; after the quiesce someone must still hold a
#            uverbs descriptor, or the check below could never fail;
#   recipe   --mca pml ob1 --mca btl self,kawarimi --mca osc ^ucx
#            --mca coll ^hcoll,ucc: after the quiesce no process may hold
#            one.
# Prints KWT_RESULT lines and KWT_DONE on the console, then powers off.
# Our build is in /opt/kwt (mca_btl_kawarimi.so, kwb-stream,
# kwb-controller.py).
export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
K=/opt/kwt

say() { echo "$*" >/dev/console; }
finish() {
	say "KWT_DONE"
	sync
	echo o >/proc/sysrq-trigger
	sleep 10
}
trap finish EXIT

mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mkdir -p /dev/shm /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t devpts devpts /dev/pts
hostname kwt
ip link set lo up
nic=$(ls /sys/class/net | grep -v '^lo$' | head -1)
ip link set "$nic" up
ip addr add 10.79.0.1/24 dev "$nic"
rdma link add rxe0 type rxe netdev "$nic" || { say "KWT_RESULT setup FAIL: rdma link add rxe0 on $nic"; exit 1; }
for _ in $(seq 60); do
	rdma link show 2>/dev/null | grep -q "rxe0.*ACTIVE" && break
	sleep 0.5
done
rdma link show 2>/dev/null | grep -q "rxe0.*ACTIVE" || { say "KWT_RESULT setup FAIL: rxe0 not ACTIVE"; exit 1; }
say "KWT_SETUP rxe0 on $nic ACTIVE; $(mpirun --version | head -1); $(dpkg-query -W -f '${Version}' libucx0) UCX"

# Who holds /dev/infiniband/uverbs*: "pid(comm)" per descriptor.
holders() {
	local f l pid
	for f in /proc/[0-9]*/fd/*; do
		l=$(readlink "$f" 2>/dev/null) || continue
		case $l in
		/dev/infiniband/uverbs*)
			pid=${f#/proc/}
			pid=${pid%%/*}
			echo "$pid($(cat /proc/$pid/comm 2>/dev/null))"
			;;
		esac
	done | sort | uniq -c | awk '{printf "%s%s x%s", sep, $2, $1; sep=", "}'
}

run() { # NAME MCA-OPTIONS...
	local name=$1 d=/tmp/$1 ctl rc
	shift
	mkdir -p "$d"
	cat >"$d/net.sh" <<EOF
#!/bin/bash
# kwb-controller.py's hook: record the uverbs holders at this step.
. /tmp/holders.sh
holders >"$d/\$1"
EOF
	chmod +x "$d/net.sh"
	python3 "$K/kwb-controller.py" --dir "$d" --nodes n0 --ranks-per-node 2 \
		--scenario recipe --fast 10.79.0. --slow 10.79.0. --fabric-if "$nic" \
		>"$d/controller.log" 2>&1 &
	ctl=$!
	for _ in $(seq 100); do
		[ -e "$d/controller.ready" ] && break
		sleep 0.1
	done
	KWB_WINDOW=1 timeout 300 mpirun -np 2 --oversubscribe \
		--mca mca_base_component_path "$K:$(ompi_info --path pkglibdir --parsable | sed 's/^path:pkglibdir://')" \
		"$@" --mca btl_kawarimi_if_include 10.79.0.0/24 \
		--mca btl_kawarimi_agent_socket "$d/n0.sock" --mca btl_kawarimi_verbose 1 \
		"$K/kwb-stream" "$d" >"$d/mpi.log" 2>&1
	rc=$?
	wait $ctl
	local crc=$?
	say "KWT_LOG $name controller: $(grep -E 'FAIL|resumed|quiesced|verbs' "$d/controller.log" | tail -4 | tr '\n' '|')"
	say "KWT_LOG $name mpi: $(grep -E 'kwb-stream rank|error|ERROR|abort' "$d/mpi.log" | head -6 | tr '\n' '|')"
	say "KWT_RESULT $name mpirun=$rc controller=$crc before=[$(cat "$d/uverbs-before" 2>/dev/null)] quiesced=[$(cat "$d/uverbs-quiesced" 2>/dev/null)]"
}

declare -f holders >/tmp/holders.sh
# sm left out (the recipe has it): both ranks are on this one guest and
# must talk over kawarimi; sm opens no device.
recipe=(--mca pml ob1 --mca btl self,kawarimi --mca coll ^hcoll,ucc)
# UCX's UD transport drops rxe's RoCE v2 IPv4 packets without this
# (docs/performance.md, verbs path); the control job runs on with it.
run control "${recipe[@]}" --mca osc ucx -x UCX_UD_ETH_DGID_CHECK=n
run recipe "${recipe[@]}" --mca osc ^ucx
