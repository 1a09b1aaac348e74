#!/usr/bin/env bash
# tests/verbs/lab-verbs.sh: the kawarimi BTL's verbs path on the lab's
# soft-RoCE "HCAs", in one run:
#   1. an MPI job across two node VMs runs over verbs (agent status shows
#      path "verbs", rxe0's hw_counters grow); its 256 KiB messages take
#      the zero-copy path (btl_kawarimi_verbs_rdma_min 65536: the receiver
#      RDMA-READs them), counted in the "verbs" object of the resumed reply;
#   1b. node2's rxe netdev down for 3 s: the connection breaks, the ranks
#      reconnect, the job goes on; and btl_kawarimi_verbs_fault_read 30
#      has broken it with a READ in flight at each rank's 30th zero-copy
#      frame (resent; the job still verifies every message);
#   2. quiesce both ranks -> no /dev/infiniband/uverbs* descriptor in any
#      process -> device_del of both HCAs completes;
#   3. resume -> the ranks reconnect over TCP (virtio-net), the job goes on;
#   4. quiesce, HCAs plugged back, rxe0 recreated by the guest, resume ->
#      the ranks reconnect over verbs (resumed reply: path "verbs", verbs
#      state "up"), counters grow again;
#   5. the job stops and verifies every message (KWL_MPIJOB OK), and each
#      rank's zero-copy totals at finalize exceed those of step 4's resume
#      (zero-copy again after the return).
# Alongside, kwv-devlist shows how libibverbs' device list behaves in one
# process across the removal and the re-add (rxe0, none, rxe0 again, and
# the new device opens with an ACTIVE port).
# Uses the lab helper's scripts unchanged (tests/lab/lib.sh, lab/lab.sh).
# Skips (77) in the ASan run, without root, or when the lab cannot be built.
# TEST_PREFIX from the environment lets two checkouts run it side by side.
TEST_PREFIX=${TEST_PREFIX:-kwvlab}
HERE=$(cd "$(dirname "$0")" && pwd)
SRC=${KAWARIMI_SOURCE:?}
if [ "${KAWARIMI_SANITIZE:-0}" != 1 ] && [ "$(id -u)" = 0 ]; then
	# The guest image needs the host kernel's modules and these tools.
	for t in qemu-system-x86_64 mke2fs cpio socat; do
		command -v "$t" >/dev/null || {
			echo "SKIP: '$t' is missing: the lab guest image cannot be built (tests/setup.sh installs it)"
			exit 77
		}
	done
	ls /boot/vmlinuz-* >/dev/null 2>&1 || {
		echo "SKIP: no /boot/vmlinuz-*: the lab guest image cannot be built"
		exit 77
	}
fi
. "$SRC/tests/lab/lib.sh"

[ -f "$BUILD/mpi-plugin/mca_btl_kawarimi.so" ] && [ -x "$BUILD/agent/kawarimi-agent" ] || {
	echo "SKIP: the BTL or kawarimi-agent is not built in $BUILD"
	exit 77
}
QMPW=$SRC/lab/kwl-qmp.py
WAIT_RXE='i=0; until rdma link show 2>/dev/null | grep -q "rxe0.*ACTIVE"; do i=$((i+1)); [ $i -gt 80 ] && exit 1; sleep 0.5; done'
NODES="1 2"

agent() { # NODE COMMAND [ARGS]
	local n=$1
	shift
	"$KAWARIMI" agent --timeout 60 "$S/a-node$n.symvirt" "$@"
}

hca() { echo "{\"driver\":\"e1000e\",\"netdev\":\"hcanet\",\"bus\":\"rp1\",\"id\":\"hca0\",\"mac\":\"52:54:00:71:00:0$1\"}"; }

rx_pkts() { # NODE: rxe0's packet counters (sent + received), 0 without rxe0
	gexec "$1" -- 'c=/sys/class/infiniband/rxe0/ports/1/hw_counters; echo $(( $(cat $c/sent_pkts 2>/dev/null || echo 0) + $(cat $c/rcvd_pkts 2>/dev/null || echo 0) ))' | tr -dc 0-9
}

# Before any resume the agent has no path report: the ranks' verbose log
# (btl_kawarimi_verbose 1) says how each connection came up.
wait_log_paths() { # KIND WHAT
	local end=$((SECONDS + 60)) out
	while [ $SECONDS -lt $end ]; do
		out=$(gexec 1 -- 'grep "connected over" /root/job.log')
		if grep -q "rank 0: peer rank 1: connected over $1 " <<<"$out" &&
			grep -q "rank 1: peer rank 0: connected over $1 " <<<"$out"; then
			log "$2: $(tr '\n' ';' <<<"$out")"
			return 0
		fi
		sleep 2
	done
	fail "$2: no connection over $1 in both directions within 60 s: $(gexec 1 -- 'cat /root/job.log')"
	return 1
}

# The resumed replies (S/kwv-resume-N.json): every rank's paths are KIND;
# with ZC, every rank has sent and received zero-copy frames (the counts in
# its "verbs" object, over the process's life).
check_resumed() { # KIND WHAT [ZC]
	local n out
	for n in $NODES; do
		out=$(python3 - "$1" "$S/kwv-resume-$n.json" "${3:-}" <<'PY'
import json, sys
kind, path, zc = sys.argv[1:]
r = json.load(open(path))
ranks = r.get("ranks", [])
paths = [p for k in ranks for p in k.get("paths", [])]
if not ranks or not paths:
    print("no rank or no path in the reply"); sys.exit(1)
bad = [p for p in paths if p.get("path") != kind]
if bad:
    print("paths not %s: %s" % (kind, bad)); sys.exit(1)
for k in ranks:
    v = k.get("verbs", {})
    if kind == "verbs" and v.get("state") != "up":
        print("rank %s reports the verbs path %s" % (k.get("rank"), v)); sys.exit(1)
    if zc and not (v.get("zero-copy-frames-sent", 0) > 0 and
                   v.get("zero-copy-frames-received", 0) > 0):
        print("rank %s sent or received no zero-copy frame over verbs: %s" %
              (k.get("rank"), v)); sys.exit(1)
PY
) || fail "$2: node$n: $out: $(cat "$S/kwv-resume-$n.json")"
	done
}

job_progress() { # WHAT: the job's disk writes grow on both nodes (an
	# iteration takes seconds under TCG, so allow 40 s for one)
	local a1 a2 b1 b2 end=$((SECONDS + 40))
	a1=$(gexec 1 -- 'stat -c %s /data/kwl-mpijob.0 2>/dev/null || echo 0' | tr -dc 0-9)
	a2=$(gexec 2 -- 'stat -c %s /data/kwl-mpijob.1 2>/dev/null || echo 0' | tr -dc 0-9)
	while [ $SECONDS -lt $end ]; do
		sleep 3
		b1=$(gexec 1 -- 'stat -c %s /data/kwl-mpijob.0 2>/dev/null || echo 0' | tr -dc 0-9)
		b2=$(gexec 2 -- 'stat -c %s /data/kwl-mpijob.1 2>/dev/null || echo 0' | tr -dc 0-9)
		if [ "${b1:-0}" -gt "${a1:-0}" ] && [ "${b2:-0}" -gt "${a2:-0}" ]; then
			log "$1: the job progresses (node1 $a1->$b1 B, node2 $a2->$b2 B written)"
			return 0
		fi
	done
	fail "$1: the job does not progress in 40 s (node1 $a1->$b1 B, node2 $a2->$b2 B)"
}

counters_grow() { # WHAT
	local n a b
	for n in $NODES; do
		a=$(rx_pkts "$n")
		sleep 2
		b=$(rx_pkts "$n")
		if [ "${b:-0}" -gt "${a:-0}" ]; then
			log "$1: node$n rxe0 packets $a -> $b"
		else
			fail "$1: node$n rxe0 counters do not grow ($a -> $b): no traffic over verbs"
		fi
	done
}

agent_all() { # COMMAND ARGS-JSON: on every node at once, replies in
	# S/kwv-COMMAND-N.json; fails if any node's command failed
	local n pids=() rc=0
	for n in $NODES; do
		agent "$n" "$1" "$2" >"$S/kwv-$1-$n.json" 2>&1 &
		pids+=($!)
	done
	for n in "${pids[@]}"; do
		wait "$n" || rc=1
	done
	return $rc
}

quiesce_all() { # WHAT
	local n rc=0
	agent_all quiesce '{"deadline-ms": 30000}' || rc=1
	for n in $NODES; do
		[ $rc = 0 ] || echo "node$n: $(cat "$S/kwv-quiesce-$n.json")"
	done
	[ $rc = 0 ] || die "$1: quiesce failed"
	log "$1: both ranks quiesced"
}

resume_all() { # WHAT ARGS-JSON -> S/kwv-resume-N.json
	local n rc=0
	agent_all resume "$2" || rc=1
	for n in $NODES; do
		log "$1: node$n resumed: $(python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))
for k in r.get("ranks", []):
    print("rank", k.get("rank"), "paths", [(p["path"], p["local"], p["remote"]) for p in k.get("paths", [])],
          "elapsed-ms", k.get("elapsed-ms"), "verbs", k.get("verbs"))
print("agent: verbs-ready", r.get("verbs-ready"), "link-wait-ms", r.get("link-wait-ms"))' "$S/kwv-resume-$n.json" 2>&1 | tr '\n' ' ')"
	done
	[ $rc = 0 ] || die "$1: resume failed: $(cat "$S"/kwv-resume-*.json)"
}

# push_file NODE HOSTPATH GUESTPATH: a file into the guest through its serial
# console (raw tty, see kwv-push.py).
push_file() {
	python3 "$HERE/kwv-push.py" "$S/a-node$1.console" "$2" "$3" --timeout 120 &&
		gexec "$1" -- "chmod +x $3" >/dev/null
}

no_uverbs_fds() { # WHAT
	local n out
	for n in $NODES; do
		out=$(gexec "$n" -- 'for f in /proc/[0-9]*/fd/*; do l=$(readlink $f 2>/dev/null); case $l in /dev/infiniband/uverbs*) echo "$f -> $l";; esac; done')
		[ -z "$out" ] || fail "$1: node$n still has uverbs descriptors open: $out"
	done
}

lab_up --nodes 2 --rtt 0ms
for n in $NODES; do
	gexec "$n" --timeout 60 -- "$WAIT_RXE" || die "node$n: rxe0 not ACTIVE after boot"
done

for n in $NODES; do
	# The BTL loads librdmacm into its own link-map namespace (dlmopen),
	# whose libc looks the dynamic loader up by soname in the library
	# directories, where every Debian system has it; the lab image keeps
	# it only under /lib64.
	gexec "$n" -- 'ln -sf /lib64/ld-linux-x86-64.so.2 /usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2' ||
		die "node$n: cannot link the dynamic loader"
done

DEVLIST=0
if [ -x "$BUILD/tests/verbs/kwv-devlist" ] && push_file 1 "$BUILD/tests/verbs/kwv-devlist" /tmp/kwv-devlist; then
	gexec 1 -- '/tmp/kwv-devlist 600 /tmp/kwv-devlist.open >/tmp/devlist.log 2>&1 </dev/null &' && DEVLIST=1
fi
[ $DEVLIST = 1 ] || fail "cannot run kwv-devlist in node1"

log "start the MPI job across node1 and node2 (btl self,vader,kawarimi)"
gexec 1 -- 'mpirun --host node1,node2 -np 2 --mca btl self,vader,kawarimi --mca btl_kawarimi_verbose 1 --mca btl_kawarimi_verbs_rdma_min 65536 --mca btl_kawarimi_verbs_fault_read 30 kwl-mpijob --seconds 100000 --stop-file /tmp/kwv.stop --interval-ms 20 --msg-kb 256 >/root/job.log 2>&1 </dev/null &' ||
	die "cannot start the job"

# 1. on verbs
wait_log_paths verbs "at start" || die "the job did not come up over verbs"
counters_grow "at start"
job_progress "at start"

# 1b. a connection break while zero-copy frames are in flight: node2's rxe
# netdev down for 3 s, so the RC QP runs out of retries (the QP errors,
# READs and all); the ranks reconnect and the reliability layer resends
# (the job verifies every message at the end).
gexec 2 -- 'ip link set eth1 down; sleep 3; ip link set eth1 up' || die "cannot flap node2's eth1"
gexec 2 --timeout 60 -- "$WAIT_RXE" || die "node2: rxe0 not ACTIVE again after the link flap"
job_progress "after the link flap"
out=$(gexec 1 -- 'grep -E "broken|zero-copy frames in flight" /root/job.log')
grep -q "broken" <<<"$out" || fail "the link flap broke no connection: $(gexec 1 -- 'tail -20 /root/job.log')"
log "link flap: $(tr '\n' ';' <<<"$out" | cut -c1-600)"
# btl_kawarimi_verbs_fault_read 30 broke a connection with a READ in flight
# (at the 30th zero-copy frame each rank received, seconds into the job,
# so the pair is connected again before the quiesce): the frame was resent.
grep -q "closed with zero-copy frames in flight (one being read" <<<"$out" ||
	fail "no connection closed with a zero-copy READ in flight (btl_kawarimi_verbs_fault_read)"

# 2. quiesce, nothing holds the HCA, unplug
quiesce_all "before unplug"
no_uverbs_fds "after quiesce"
for n in $NODES; do
	out=$("$QMPW" "$S/a-node$n.qmp" device_del '{"id":"hca0"}' --wait-event DEVICE_DELETED --timeout 40) ||
		die "node$n: device_del of the HCA did not complete (DEVICE_DELETED) within 40 s: $out"
	log "node$n: HCA unplugged: $(tail -1 <<<"$out")"
done

# 3. TCP over virtio-net
resume_all "without HCA" '{"fabrics": ["verbs", "tcp"], "link-timeout-ms": 3000}'
# the 256 KiB messages went zero-copy before the unplug
check_resumed tcp "without HCA" zc
job_progress "without HCA"

# 4. back to verbs
quiesce_all "before plug"
for n in $NODES; do
	qmp "$S/a-node$n.qmp" device_add "$(hca "$n")" >/dev/null || die "node$n: device_add of the HCA failed"
done
for n in $NODES; do
	gexec "$n" --timeout 60 -- "$WAIT_RXE" || die "node$n: rxe0 not recreated and ACTIVE after the plug"
done
resume_all "HCA back" '{"fabrics": ["verbs", "tcp"], "link-timeout-ms": 20000}'
check_resumed verbs "HCA back"
counters_grow "HCA back"
job_progress "HCA back"

if [ $DEVLIST = 1 ]; then
	gexec 1 -- 'touch /tmp/kwv-devlist.open'
	gexec 1 --timeout 30 -- 'i=0; until grep -q "KWV_DEVLIST END" /tmp/devlist.log; do i=$((i+1)); [ $i -gt 40 ] && exit 1; sleep 0.5; done' ||
		fail "kwv-devlist did not finish"
	out=$(gexec 1 -- 'cat /tmp/devlist.log')
	log "one process's ibv_get_device_list across unplug and plug: $(grep -v END <<<"$out" | cut -d' ' -f2- | tr '\n' ';')"
	seq=$(awk '$1 == "KWV_DEVLIST" && $2 ~ /^[0-9]/ { print $3 }' <<<"$out" | tr '\n' ' ')
	[[ $seq == "rxe0 none rxe0 " ]] || fail "device list in one process: expected rxe0, none, rxe0; got '$seq'"
	grep -q 'OPEN rxe0 port1 active' <<<"$out" || fail "the re-added rxe0 does not open with an ACTIVE port in the same process: $out"
fi

# 5. the verdict
gexec 1 -- 'touch /tmp/kwv.stop'
gexec 1 --timeout 150 -- 'i=0; until grep -q KWL_MPIJOB /root/job.log; do i=$((i+1)); [ $i -gt 280 ] && exit 1; sleep 0.5; done' ||
	fail "the job did not finish within 140 s of the stop"
out=$(gexec 1 -- 'cat /root/job.log')
grep -q 'KWL_MPIJOB OK ranks=2' <<<"$out" || fail "the job did not verify: $(grep KWL_MPIJOB <<<"$out")"
log "$(grep KWL_MPIJOB <<<"$out")"
# Zero-copy after the return too: each rank's totals at finalize exceed
# those of the "HCA back" resume (nothing went zero-copy over TCP).
gexec 1 --timeout 40 -- 'i=0; until [ "$(grep -c "finalize: verbs zero-copy" /root/job.log)" -ge 2 ]; do i=$((i+1)); [ $i -gt 60 ] && exit 1; sleep 0.5; done' ||
	fail "no zero-copy totals from both ranks at finalize"
out=$(gexec 1 -- 'cat /root/job.log')
for n in $NODES; do
	before=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["ranks"][0]["verbs"]["zero-copy-frames-received"])' "$S/kwv-resume-$n.json" 2>/dev/null)
	rank=$((n - 1))
	after=$(grep "rank $rank: finalize: verbs zero-copy" <<<"$out" | sed -n 's/.*received \([0-9]*\) .*/\1/p' | tail -1)
	if [ -n "$before" ] && [ -n "$after" ] && [ "$after" -gt "$before" ]; then
		log "rank $rank: zero-copy frames received $before before the HCA came back, $after at the end"
	else
		fail "rank $rank: no zero-copy frame after the HCA came back (received '$before' at resume, '$after' at the end)"
	fi
done
grep 'btl:kawarimi' <<<"$out" | grep -E 'verbs path|connected over|resumed after' | head -20
finish
