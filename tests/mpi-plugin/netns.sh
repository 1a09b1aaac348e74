#!/usr/bin/env bash
# The kawarimi BTL in network namespaces, no VMs: two "node" namespaces,
# each with a "fast" veth link (stands for the HCA) and a "slow" one (stands
# for virtio-net), mpirun in a third namespace on a bridge. A controller
# (kwb-controller.py) plays the agent on each node's control socket while
# kwb-stream ping-pongs and checks every message.
#   switch: fast -> quiesce -> fast links deleted -> resume on slow ->
#           fast links back -> quiesce/resume -> fast again; then a quiesce
#           while the application computes (reply time measured, printed).
#   cut:    the agent restarts (ranks register again by themselves); the
#           data connection killed from outside (ss -K) three times,
#           then the link taken down and up for 2 s (TCP may ride it
#           out), then down until the pair runs on slow and up again (only
#           the lower rank's probe of the best pair can bring it back to
#           fast now), then the fast link deleted without a quiesce:
#           healed by reconnect + resend (over slow at the end).
#   acklost: on the fast link rank 1's standalone BTL ACK frames are
#           dropped, everything else passes: rank 0's pipelined fragments
#           are TCP-acked, so only rank 1's connection times out, with
#           nothing of its own to resend. It must reconnect anyway, or
#           rank 0 (ob1 waits for those completions) and rank 1 (waits
#           for the next fragments) wait for each other forever. Run
#           with btl_kawarimi_flags send: the stream must be one-way.
#   peers:  during the quiesce both networks the ranks know each other by
#           go away and a new one comes; resume with "wait": false
#           answers at once with each rank's new addresses, nothing
#           connects over the old ones, and `peers` (the addresses over
#           the control plane) reconnects the pair on the new network.
#   In switch(4) and peers the controller also checks, with `ss -Hltnp`
#   in each node's namespace (net.sh listeners), that every rank listens
#   on exactly its addresses of the networks still there (never the
#   wildcard, never the mpirun network), and after the move in peers on
#   the new address only, already when its resume answers.
#   giveup: every link between the nodes deleted for good: the BTL gives
#           up after btl_kawarimi_reconnect_timeout_ms (3 s here) with an
#           error naming the peer, and the job fails.
# Args: <component dir> <prog dir> <switch|switch4|cut|acklost|giveup|peers>
set -u
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/netns-lib.sh"
kwb_init "$@"
scen=${KWB_ARGS[0]}
# switch4: the switch scenario with two ranks per node (pairs across the
# nodes, each rank with three peers, one of them on its own node).
per_node=1
if [ "$scen" = switch4 ]; then
	per_node=2
fi
here=$(cd "$(dirname "$0")" && pwd)

if [ "$(id -u)" != 0 ]; then
	echo "SKIP: network namespaces need root"
	exit 77
fi
command -v ip >/dev/null || { echo "SKIP: iproute2 missing"; exit 77; }

p=kwb${scen:0:1}${#scen}
N0=$p-n0 N1=$p-n1 M=$p-m
d=$(mktemp -d /tmp/kwb-netns-$scen.XXXXXX)
ctl_pid= mpi_pid=

cleanup() {
	[ -n "$ctl_pid" ] && kill "$ctl_pid" 2>/dev/null
	[ -n "$mpi_pid" ] && kill "$mpi_pid" 2>/dev/null
	sleep 0.2
	# Ranks still inside (a failed run) go with their namespace.
	kwn_del $N0 $N1 $M
	rm -rf "$d"
}
trap cleanup EXIT
kwn_del $N0 $N1 $M

set -e
kwn_add $N0 $N1 $M
cat >"$d/net.sh" <<NET
#!/bin/bash
# Network changes the controller asks for.
set -e
. "$here/netns-lib.sh"
case "\$1" in
fast-up) kwn_veth $N0 kwbf0 $N1 kwbf1 10.77.1 ;;
fast-down) ip -n $N0 link del kwbf0 ;;
slow-down) ip -n $N0 link del kwbs0 ;;
new-up) kwn_veth $N0 kwbn0 $N1 kwbn1 10.77.4 ;;
cut) ip netns exec $N0 ss -K dst 10.77.1.2 >/dev/null 2>&1 ;;
link-flap) ip -n $N0 link set kwbf0 down; sleep 2; ip -n $N0 link set kwbf0 up ;;
link-down) ip -n $N0 link set kwbf0 down ;;
link-up) ip -n $N0 link set kwbf0 up ;;
ack-loss)
	# Only IPv4 segments of exactly 76 bytes (20 IP + 32 TCP with
	# timestamps + a 24-byte BTL ACK frame) go to class 1:2, whose queue
	# holds nothing: dropped. Data, HELLOs and TCP's own ACKs pass.
	tc() { ip netns exec $N1 tc "\$@"; }
	tc qdisc add dev kwbf1 root handle 1: htb default 1
	tc class add dev kwbf1 parent 1: classid 1:1 htb rate 1gbit quantum 60000
	tc class add dev kwbf1 parent 1: classid 1:2 htb rate 1gbit quantum 60000
	tc qdisc add dev kwbf1 parent 1:2 handle 20: pfifo limit 0
	tc filter add dev kwbf1 parent 1: prio 1 protocol ip u32 match u16 76 0xffff at 2 flowid 1:2 ;;
ack-pass) ip netns exec $N1 tc qdisc del dev kwbf1 root ;;
listeners)
	# The listening TCP sockets in node \$2's namespace, with their process.
	case "\$2" in
	n0) ip netns exec $N0 ss -Hltnp ;;
	n1) ip netns exec $N1 ss -Hltnp ;;
	*) echo "net.sh: listeners: unknown node \$2" >&2; exit 2 ;;
	esac ;;
*) echo "net.sh: unknown action \$1" >&2; exit 2 ;;
esac
NET
chmod +x "$d/net.sh"
"$d/net.sh" fast-up
kwn_veth $N0 kwbs0 $N1 kwbs1 10.77.2
kwn_mpirun_net $M kwbm 10.77.3 $N0 $N1
set +e

if [ "$scen" = cut ] && ! ip netns exec $N0 ss -K dst 10.77.1.2 >/dev/null 2>&1; then
	echo "SKIP: ss -K (sock_diag destroy) is not available in this kernel"
	exit 77
fi
if [ "$scen" = acklost ] && ! { ip netns exec $N0 tc qdisc add dev kwbf0 root handle 1: htb &&
	ip netns exec $N0 tc filter add dev kwbf0 parent 1: prio 1 protocol ip \
		u32 match u16 0 0xffc0 at 2 flowid 1:1 &&
	ip netns exec $N0 tc qdisc del dev kwbf0 root; } >/dev/null 2>&1; then
	echo "SKIP: tc htb/u32 is not available in this kernel"
	exit 77
fi

python3 "$here/kwb-controller.py" --dir "$d" --nodes n0,n1 --scenario "${scen%4}" \
	--fast 10.77.1. --slow 10.77.2. --ranks-per-node $per_node >"$d/controller.log" 2>&1 &
ctl_pid=$!
for _ in $(seq 100); do
	[ -e "$d/controller.ready" ] && break
	sleep 0.1
done

prog=$KWB_PROG_DIR/kwb-stream
reconnect_ms=30000
user_timeout_ms=10000
[ "$scen" = cut ] || [ "$scen" = acklost ] && user_timeout_ms=3000
# acklost needs a one-way stream: with GET (the default) rank 1 would
# pull the large messages itself, and its GET_REQs would carry the acks.
flags=
[ "$scen" = acklost ] && flags="--mca btl_kawarimi_flags send"
if [ "$scen" = giveup ]; then
	reconnect_ms=3000
	user_timeout_ms=1500
fi
# Rank r runs on node r % 2 (kwn-rank.sh), so every pair (2k, 2k+1)
# crosses the nodes.
ip netns exec $M env PMIX_MCA_ptl_tcp_if_include=10.77.3.0/24 \
	timeout 180 mpirun --oversubscribe --mca pml ob1 --mca btl self,kawarimi \
	--mca oob_tcp_if_include 10.77.3.0/24 \
	--mca btl_kawarimi_if_include 10.77.1.0/24,10.77.2.0/24,10.77.4.0/24 \
	--mca btl_kawarimi_verbose 1 --mca btl_kawarimi_reconnect_timeout_ms $reconnect_ms --mca btl_kawarimi_tcp_user_timeout_ms $user_timeout_ms $flags ${KWB_MPIRUN_EXTRA:-} \
	-np $((2 * per_node)) "$here/kwn-rank.sh" "$N0 $N1" \
	env OMPI_MCA_btl_kawarimi_agent_socket="$d/n%n.sock" "$prog" "$d" >"$d/mpi.log" 2>&1 &
mpi_pid=$!

wait $ctl_pid
ctl_rc=$?
ctl_pid=
wait $mpi_pid
mpi_rc=$?
mpi_pid=
cat "$d/mpi.log"
# The controller's account last: its FAIL line says which step failed.
cat "$d/controller.log"
fail=0
if [ "$scen" = giveup ]; then
	if [ $ctl_rc -ne 0 ] || [ $mpi_rc -eq 0 ] || [ $mpi_rc -eq 124 ]; then
		echo "FAIL: controller $ctl_rc, mpirun $mpi_rc (expected a failed job, not a hang)"
		exit 1
	fi
	if ! grep -q "giving up on peer rank [01] (address 10.77.1.[12]" "$d/mpi.log"; then
		echo "FAIL: no error naming the unreachable peer"
		exit 1
	fi
	echo "PASS: giveup (the BTL gave up and named the peer)"
	exit 0
fi
if [ $ctl_rc -ne 0 ]; then
	echo "FAIL: controller exited $ctl_rc"
	fail=1
fi
if [ $mpi_rc -ne 0 ]; then
	echo "FAIL: mpirun exited $mpi_rc"
	fail=1
fi
for r in $(seq 0 $((2 * per_node - 1))); do
	if ! grep -q "kwb-stream rank $r: .* 0 errors" "$d/mpi.log"; then
		echo "FAIL: rank $r did not report a clean run"
		fail=1
	fi
done
if [ "$scen" = cut ]; then
	# The cuts must really have broken connections that were then healed.
	cuts=$(grep -c "broken: .*frames to resend" "$d/mpi.log")
	if [ "$cuts" -lt 3 ]; then
		echo "FAIL: only $cuts broken connections logged; the cut did not take"
		fail=1
	fi
	# The flap must have put the pair on slow, and the probe brought it back.
	if ! grep -q "rank 0: peer rank 1: the best pair answers again" "$d/mpi.log"; then
		echo "FAIL: rank 0 never moved back to the fast pair by itself after the link flap"
		fail=1
	fi
	# Large messages went by GET through those breaks (every byte checked
	# above), and no request was refused: resent GET_REQs and GET_REPLYs
	# were taken once.
	if ! grep -q "rank 1: GET: [1-9][0-9]* reads done .* 0 refused" "$d/mpi.log" ||
	   ! grep -q "rank 0: GET: .*, [1-9][0-9]* answered for peers, 0 refused" "$d/mpi.log"; then
		echo "FAIL: rank 1 did not read by GET from rank 0, or a request was refused"
		fail=1
	fi
fi
if [ "$scen" = acklost ]; then
	# The filter must really have broken the connection on rank 1's side.
	if ! grep -q "rank 1: connection to peer rank 0 .* broken: Connection timed out; 0 frames" \
		"$d/mpi.log"; then
		echo "FAIL: rank 1's connection never timed out; the ACK loss did not take"
		fail=1
	fi
fi
[ $fail -eq 0 ] && echo "PASS: $scen"
exit $fail
