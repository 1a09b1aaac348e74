#!/usr/bin/env bash
# One cell of the fault matrix (docs/reliability.md): fault.sh FAULT PHASE.
#
# Two VMs, each with a usb-net "HCA" at both ends and a fake agent, so that
# every phase runs; the migration and NBD connections go through relays
# (the "WAN link").  When PHASE starts for vm1, FAULT strikes:
#   kill-dst    kill -9 of vm1's destination QEMU
#   kill-src    kill -9 of vm1's source QEMU
#   agent-kill  kill -9 of vm1's guest agent (the fake one)
#   agent-hang  SIGSTOP of vm1's guest agent (SIGCONT once the run is over)
#   blackhole   SIGSTOP of every relay: the link drops everything, no RST
#   coord-kill  kill -9 of the coordinator, then `kawarimi recover`
# Then the outcome is checked against the table below (the same as the
# document's): the exit status and the report's result, where each VM runs
# (exactly one side, never both, neither only when the report says lost),
# nothing left behind (block job, NBD export or client, migration), the
# disks (the source's unchanged when the VM went back, the destination's
# equal to it when it went forward), and the job (not left quiesced: vm1's
# agent resumed by the coordinator, or by its lease where the table says so).
. "$(dirname "$0")/lib.sh"

FAULT=${1:?usage: fault.sh FAULT PHASE} PHASE=${2:?usage: fault.sh FAULT PHASE}

# FAULT/PHASE: exit status, result, where vm1 and vm2 run, vm1's job:
# "coordinator" (resumed by the coordinator onto the HCA, or never
# quiesced), "coordinator-tcp" (resumed, but left on TCP beside an HCA),
# "lease" (resumed by its agent when the lease ran out), "agent-dead:STATE"
# (the agent is gone, leaving the job STATE), "lost" (the VM is).
# A sixth word "mirror": the cell leaves vm1's mirror running (not handled
# yet); the rest must still hold.
expect() {
	case "$FAULT/$PHASE" in
	kill-dst/unplug) echo "1 rolled-back source source coordinator" ;;
	kill-dst/resume) echo "3 vm-lost lost destination lost" ;;
	kill-dst/*) echo "1 rolled-back source source coordinator" ;;
	kill-src/switchover|kill-src/resume) echo "0 completed destination destination coordinator" ;;
	kill-src/*) echo "3 vm-lost lost source lost" ;;
	agent-kill/storage) echo "1 rolled-back source source agent-dead:running" ;;
	agent-kill/quiesce) echo "3 rollback-incomplete source source agent-dead:quiescing" ;;
	agent-kill/unplug) echo "3 rollback-incomplete source source agent-dead:resuming" ;;
	agent-kill/resume) echo "3 failed-after-switchover destination destination agent-dead:quiescing" ;;
	agent-kill/*) echo "3 failed-after-switchover destination destination agent-dead:running" ;;
	agent-hang/storage|agent-hang/quiesce) echo "3 rollback-incomplete source source lease" ;;
	agent-hang/unplug) echo "3 rollback-incomplete source source coordinator-tcp" ;;
	agent-hang/resume) echo "3 failed-after-switchover destination destination lease" ;;
	agent-hang/*) echo "3 failed-after-switchover destination destination coordinator-tcp" ;;
	blackhole/storage) echo "3 rollback-incomplete source source coordinator mirror" ;;
	blackhole/resume) echo "0 completed destination destination coordinator" ;;
	blackhole/*) echo "1 rolled-back source source coordinator" ;;
	coord-kill/quiesce) echo "1 rolled-back source source lease" ;;
	coord-kill/memory) echo "4 partial source destination coordinator" ;;
	coord-kill/switchover) echo "4 partial destination source coordinator" ;;
	coord-kill/resume) echo "0 rolled-forward destination destination lease" ;;
	coord-kill/*) echo "1 rolled-back source source coordinator" ;;
	*) fail "unknown cell $FAULT/$PHASE" ;;
	esac
}
read -r X_RC X_RESULT X_VM1 X_VM2 X_JOB X_LEFT <<<"$(expect)"
X_LEFT=${X_LEFT:--}

LEASE_S=3
TIMEOUTS="{preflight: 10s, storage: 60s, quiesce: 3s, unplug: 3s, memory: 60s,
    switchover: 5s, resume: 4s, rollback: 60s, stall: 5s, lease: ${LEASE_S}s}"
HCA='{driver: usb-net, id: hca0, netdev: hn0, bus: xhci.0}'
BW=unlimited PAR=2 RAM1=0 RAM2=0 AGENT1=() KEEP=()
# Each phase gets a window long enough to strike in (the TCG QEMUs and the
# fake agent are fast otherwise).
case $PHASE in
# 10 MiB of overlay per VM.  A mirror under a cap copies in bursts and
# sleeps in between (8 MiB at 3 MB/s: 2.7 s), hence the stall bound of 5 s.
storage) BW=6MB/s ;;
quiesce) AGENT1=(--delay quiesce@0:1500) ;;	# the agent takes its time
# A usb-net leaves at once: the fault finds the HCA gone and the job
# resuming on TCP at the source.
unplug) AGENT1=(--delay resume@0:1500) ;;
memory) BW=8MB/s RAM1=16 ;;
# One VM's memory at a time: vm1's is all at its destination while vm2's
# is still on its way, before anyone's switchover.
switchover) BW=8MB/s PAR=1 RAM2=16 ;;
# Moving the job onto the destination's HCA takes its time.
resume) AGENT1=(--delay quiesce@1:1500) ;;
*) fail "unknown phase '$PHASE' (storage quiesce unplug memory switchover resume)" ;;
esac
case $FAULT in
kill-dst|agent-kill|agent-hang|blackhole|coord-kill) ;;
# The sources are quit right after the switchover: keep them for a source
# to die during the resume.
kill-src) [ "$PHASE" = resume ] && KEEP=(--keep-source) ;;
*) fail "unknown fault '$FAULT' (kill-dst kill-src agent-kill agent-hang blackhole coord-kill)" ;;
esac

kwm_images 2
for i in 1 2; do
	cp "$T/s$i.qcow2" "$T/s$i.orig.qcow2"
	ram=$(eval echo "\$RAM$i") extra=()
	if [ "$ram" != 0 ]; then
		head -c $((ram << 20)) /dev/urandom >"$T/ram$i.bin"
		extra=(-device "loader,file=$T/ram$i.bin,addr=0x2000000,force-raw=on")
	fi
	kwm_start_src "$i" -device usb-net,id=hca0,netdev=hn0,bus=xhci.0 "${extra[@]}"
	kwm_start_dst "$i"
done
"$FAKE_AGENT" "$T/agent1.log" "$T/s1.sv" "$T/d1.sv" "${AGENT1[@]}" &
AGENT_PID=$!
PIDS+=($!)
"$FAKE_AGENT" "$T/agent2.log" "$T/s2.sv" "$T/d2.sv" &
PIDS+=($!)
kwm_wait_sock "$T/d1.sv"
kwm_wait_sock "$T/d2.sv"
kwm_relays 2
STORAGE=incremental BANDWIDTH=$BW PARALLEL=$PAR AGENTS=yes RELAY=yes SRC_HCA=$HCA \
	DST_HCA=$HCA kwm_cluster "$T/c.yaml" 2
J=$KAWARIMI_STATE_DIR/test.journal

"$KAWARIMI" migrate "$T/c.yaml" --json --report "$T/r.json" "${KEEP[@]}" >"$T/out" 2>"$T/err" &
kpid=$!
PIDS+=($kpid)

# until FILE PATTERN: waits (up to 60 s) for PATTERN in FILE.
until_seen() {
	local t
	for t in $(seq 1 1200); do
		grep -q "$2" "$1" 2>/dev/null && return 0
		kwm_alive "$kpid" || break
		sleep 0.05
	done
	cat "$T/err" >&2
	fail "never saw $2 in $(basename "$1")"
}
start='"vm":"vm1","phase":"'$PHASE'","state":"start"'
case $PHASE in
storage) until_seen "$T/out" "$start"
	until_seen "$T/out" '"vm":"vm1","phase":"storage","time_elapsed":[0-9]*,"disk_total":[0-9]*,"disk_processed":[1-9]' ;;
# The agent has the resume on TCP that follows the unplug.
unplug) until_seen "$J" '"vm":"vm1","fact":"hca-removed"'
	until_seen "$T/agent1.log" ' 0 resume ' ;;
memory) until_seen "$T/out" "$start"
	until_seen "$T/out" '"vm":"vm1","phase":"memory",.*"memory_processed":[1-9]' ;;
switchover) until_seen "$J" '"vm":"vm1","fact":"memory-complete"' ;;
*) until_seen "$T/out" "$start" ;;
esac
grep -q '"vm":"vm1","phase":"'$PHASE'","state":"end"' "$T/out" &&
	[ "$PHASE" != unplug ] && fail "setup: $PHASE was over before the fault"
case $FAULT in
kill-dst) kill -9 "$DST_PID_1" ;;
kill-src) kill -9 "$SRC_PID_1" ;;
agent-kill) kill -9 "$AGENT_PID" ;;
agent-hang) kill -STOP "$AGENT_PID" ;;
blackhole) kwm_blackhole ;;
coord-kill) kill -9 "$kpid" ;;
esac
echo "fault $FAULT struck in $PHASE at $(date +%s.%N)"

timeout 150 tail --pid="$kpid" -f /dev/null
wait "$kpid" 2>/dev/null
rc=$?
cat "$T/err"
if [ "$FAULT" = coord-kill ]; then
	[ -s "$J" ] && ! grep -q '"end"' "$J" || fail "the killed run's journal is missing or ended"
	# Without any recover, the lease gives the job back within LEASE_S.
	sleep $((LEASE_S + 1))
	[ "$(cat "$T/agent1.log.state")" = running ] ||
		fail "$LEASE_S s after the coordinator died, vm1's job is $(cat "$T/agent1.log.state")"
	timeout 120 "$KAWARIMI" recover "$T/c.yaml" --report "$T/r.json" >"$T/rout" 2>&1
	rc=$?
	cat "$T/rout"
fi
[ "$FAULT" = agent-hang ] && kill -CONT "$AGENT_PID"
[ -s "$T/r.json" ] || fail "no report"
result=$(kwm_json "$T/r.json" 'r["result"]')
where1=$(kwm_json "$T/r.json" 'r["vms"][0]["where"]')
where2=$(kwm_json "$T/r.json" 'r["vms"][1]["where"]')

# Where each VM runs, what is left behind, the disks.
left=0
qemu_up() { kwm_alive "$1" && [ -S "$2" ]; }
for i in 1 2; do
	where=$(eval echo "\$where$i")
	src_up=no dst_up=no
	qemu_up "$(eval echo "\$SRC_PID_$i")" "$T/s$i.qmp" && src_up=$(kwm_status "$T/s$i.qmp")
	qemu_up "$(eval echo "\$DST_PID_$i")" "$T/d$i.qmp" && dst_up=$(kwm_status "$T/d$i.qmp")
	echo "vm$i: where $where, source $src_up, destination $dst_up"
	[ "$src_up" = running ] && [ "$dst_up" = running ] && fail "vm$i runs on both sides"
	case $where in
	source) [ "$src_up" = running ] || fail "vm$i: report says source, which is '$src_up'"
		qemu-img compare -U "$T/s$i.orig.qcow2" "$T/s$i.qcow2" >/dev/null ||
			fail "vm$i went back but its source disk changed" ;;
	destination) [ "$dst_up" = running ] || fail "vm$i: report says destination, which is '$dst_up'"
		qemu-img compare -U "$T/s$i.qcow2" "$T/d$i.qcow2" >/dev/null ||
			fail "vm$i went forward but its destination disk differs from the source's" ;;
	lost) [ "$src_up" != running ] && [ "$dst_up" != running ] ||
			fail "vm$i: report says lost, yet one side runs"
		kwm_json "$T/r.json" 'r["vms"]['$((i - 1))']["lost"]' | grep -q "s$i.qcow2" ||
			fail "vm$i lost, but the report does not say where its source disk is" ;;
	*) fail "vm$i: report says where '$where'" ;;
	esac
	# The HCA is where the VM runs: back at the source after a rollback,
	# plugged at the destination after a move.
	hca_at=""
	[ "$where" = source ] && hca_at=s
	[ "$where" = destination ] && hca_at=d
	if [ -n "$hca_at" ]; then
		kwm_qmp "$T/$hca_at$i.qmp" qom-get '{"path":"/machine/peripheral/hca0","property":"type"}' |
			grep -q '"return": "usb-net"' || fail "vm$i: no HCA where it runs ($where)"
	fi
	if [ "$src_up" != no ]; then
		jobs=$(kwm_qmp "$T/s$i.qmp" query-block-jobs)
		if [ "$X_LEFT" = mirror ]; then
			grep -q '"kwm-mirror-0"' <<<"$jobs" && ((left++))
		else
			grep -q '"return": \[\]' <<<"$jobs" ||
				fail "vm$i: a block job is left at the source: $jobs"
		fi
		[ "$X_LEFT" != mirror ] && kwm_qmp "$T/s$i.qmp" query-named-block-nodes |
			grep -q kwm-nbd && fail "vm$i: an NBD client is left at the source"
		kwm_qmp "$T/s$i.qmp" query-migrate | grep -qE '"status": "(active|setup|pre-switchover|device)"' &&
			fail "vm$i: a migration is left at the source"
	fi
	if [ "$dst_up" != no ]; then
		kwm_qmp "$T/d$i.qmp" query-block-exports | grep -q '"return": \[\]' ||
			fail "vm$i: an NBD export is left at the destination"
	fi
done

# A cell that leaves a mirror behind (not handled yet) leaves at least one.
[ "$X_LEFT" = mirror ] && [ "$left" = 0 ] && fail "no mirror left behind: update the table"

# The job.  A dead agent's state file says where it left the job.
job=coordinator
for t in $(seq 1 $((LEASE_S * 10 + 30))); do
	[ "$(cat "$T/agent1.log.state")" = running ] && break
	kwm_alive "$AGENT_PID" || break
	sleep 0.1
done
grep -q ' lease-expired ' "$T/agent1.log" && job=lease
[ "$(cat "$T/agent1.log.state")" = running ] || job="left-$(cat "$T/agent1.log.state")"
# A job the coordinator resumed runs on the HCA again (verbs) unless the
# table says it was left on TCP.
if [ "$job" = coordinator ] && grep -q ' resume ' "$T/agent1.log"; then
	grep ' resume ' "$T/agent1.log" | tail -1 | grep -q '"verbs"' || job=coordinator-tcp
fi
kwm_alive "$AGENT_PID" || job="agent-dead:$(cat "$T/agent1.log.state")"
[ "$where1" = lost ] && job=lost
[ "$(cat "$T/agent2.log.state")" = running ] || fail "vm2's job left $(cat "$T/agent2.log.state")"
# Only a dead coordinator leaves vm2's job to its lease.
grep -q ' lease-expired ' "$T/agent2.log" && [ "$FAULT" != coord-kill ] &&
	fail "vm2's job was resumed by its lease, not by us"

echo "outcome: $rc $result $where1 $where2 $job"
[ "$rc" = "$X_RC" ] || fail "exit status $rc, expected $X_RC"
[ "$result" = "$X_RESULT" ] || fail "report result '$result', expected '$X_RESULT'"
[ "$where1" = "$X_VM1" ] || fail "vm1 at the $where1, expected $X_VM1"
[ "$where2" = "$X_VM2" ] || fail "vm2 at the $where2, expected $X_VM2"
[ "$job" = "$X_JOB" ] || fail "vm1's job: $job, expected $X_JOB"
echo PASS
