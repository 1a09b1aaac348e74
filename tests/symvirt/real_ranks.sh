#!/usr/bin/env bash
# kawarimi-agent with real MPI ranks: the kawarimi BTL (mpi-plugin/) in an
# mpirun job on this machine registers with the agent, quiesces and resumes
# on the agent's word while the job exchanges verified messages; a lease
# nobody renews resumes it, and an agent killed while the job is quiesced
# adopts the ranks when they register again (suite 'symvirt').
#
# Usage: real_ranks.sh KAWARIMI-AGENT KAWARIMI KWS-RANKS BTL-COMPONENT-DIR
set -u
AGENT=$1
KAWARIMI=$2
PROG=$3
BTL_DIR=$4
NP=3

command -v mpirun >/dev/null || { echo "SKIP: mpirun is not installed"; exit 77; }
[ -e "$BTL_DIR/mca_btl_kawarimi.so" ] || { echo "SKIP: the kawarimi BTL is not built"; exit 77; }
export OMPI_MCA_mca_base_component_path="$BTL_DIR:/usr/lib/x86_64-linux-gnu/openmpi/lib/openmpi3"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# Open MPI leaks by design; in the sanitizer run the ranks (built by us with
# the runtime) would report it.
export ASAN_OPTIONS=detect_leaks=0${ASAN_OPTIONS:+:$ASAN_OPTIONS}

T=$(mktemp -d /tmp/kws-ranks-XXXXXX)
APID= MPID=
cleanup() {
	[ -n "$MPID" ] && kill "$MPID" 2>/dev/null && wait "$MPID" 2>/dev/null
	[ -n "$APID" ] && kill "$APID" 2>/dev/null && wait "$APID" 2>/dev/null
	rm -rf "$T"
}
trap cleanup EXIT
fail() {
	echo "FAIL: $*"
	echo "---- mpirun ----"
	tail -n 30 "$T/mpirun.log"
	echo "---- agent ----"
	tail -n 30 "$T/agent.log"
	exit 1
}

agent() { "$KAWARIMI" agent --timeout 60 "$T/ch.sock" "$@"; }
start_agent() { # [ADOPT-LEASE-MS]
	"$AGENT" --foreground --channel "listen:$T/ch.sock" --socket "$T/ranks.sock" \
		--adopt-lease-ms "${1:-2000}" 2>>"$T/agent.log" &
	APID=$!
	for _ in $(seq 1 100); do
		agent hello >/dev/null 2>&1 && break
		sleep 0.1
	done
}
start_agent

timeout 200 mpirun --oversubscribe -np $NP --mca pml ob1 --mca btl self,kawarimi \
	--mca btl_kawarimi_if_include lo --mca btl_kawarimi_agent_socket "$T/ranks.sock" \
	"$PROG" "$T" >"$T/mpirun.log" 2>&1 &
MPID=$!

count_ranks() {
	agent status | python3 -c 'import json, sys; print(len(json.load(sys.stdin)["ranks"]))'
}
for _ in $(seq 1 600); do
	[ "$(count_ranks 2>/dev/null)" = $NP ] && break
	kill -0 "$MPID" 2>/dev/null || fail "mpirun ended before its ranks registered"
	sleep 0.1
done
[ "$(count_ranks)" = $NP ] || fail "$NP ranks did not register with the agent"
echo "ok   $NP ranks registered"
live=$(agent status '{"ranks": true, "deadline-ms": 10000}') || fail "live status: $live"
python3 - "$live" $NP <<'PY' || fail "live status: $live"
import json, sys
s, np = json.loads(sys.argv[1]), int(sys.argv[2])
assert len(s["ranks"]) == np and all(r["live"]["state"] == "running" for r in s["ranks"]), s["ranks"]
PY
echo "ok   every rank answers status: running"

for cycle in 1 2; do
	q=$(agent quiesce '{"deadline-ms": 20000}') || fail "quiesce $cycle: $q"
	python3 - "$q" $NP <<'PY' || fail "quiesce $cycle: $q"
import json, sys
q, np = json.loads(sys.argv[1]), int(sys.argv[2])
assert sorted(r["rank"] for r in q["ranks"]) == list(range(np)), q["ranks"]
assert all(r["peers"] >= 0 and r["bytes-queued"] >= 0 for r in q["ranks"]), q["ranks"]
PY
	[ "$(agent status | grep -c '"state": "quiesced"')" -ge $((NP + 1)) ] ||
		fail "status after quiesce: $(agent status)"
	sleep 1	# the job keeps computing and queueing meanwhile
	r=$(agent resume '{"fabrics": ["tcp"], "rescan": false}') || fail "resume $cycle: $r"
	python3 - "$r" $NP <<'PY' || fail "resume $cycle: $r"
import json, sys
r, np = json.loads(sys.argv[1]), int(sys.argv[2])
assert sorted(x["rank"] for x in r["ranks"]) == list(range(np)), r["ranks"]
# "paths" are the connections up when the rank answered (others come back
# on first use): all over tcp here, and peers of this job
for x in r["ranks"]:
    assert all(p["path"] == "tcp" and 0 <= p["peer"] < np for p in x["paths"]), x
PY
	echo "ok   quiesce/resume cycle $cycle: $NP ranks resumed on tcp"
	sleep 1
done

# waits up to $1 s for the agent's state to be $2 with every rank in it
wait_state() {
	for _ in $(seq 1 $(($1 * 10))); do
		agent status | python3 -c '
import json, sys
s, want, np = json.load(sys.stdin), sys.argv[1], int(sys.argv[2])
sys.exit(not (s["state"] == want and len(s["ranks"]) == np and all(r["state"] == want for r in s["ranks"])))
' "$2" $NP 2>/dev/null && return 0
		sleep 0.1
	done
	return 1
}

# A lease nobody renews: the agent resumes the job by itself.
# (The lease counts from the quiesce's arrival, after start: a slow drain
# must not make it look early.)
start=$(date +%s%N)
q=$(agent quiesce '{"deadline-ms": 20000, "lease-ms": 1500}') || fail "quiesce with a lease: $q"
wait_state 10 running || fail "the lease ran out but the ranks are not running: $(agent status)"
ms=$((($(date +%s%N) - start) / 1000000))
[ $ms -ge 1500 ] || fail "resumed $ms ms after the quiesce, before its lease of 1500 ms ran out"
grep -q "lease of 1500 ms ran out" "$T/agent.log" || fail "no log line for the lease: $(cat "$T/agent.log")"
echo "ok   a lease of 1500 ms nobody renewed: the agent resumed the $NP ranks"

# The agent dies while the job is quiesced; the ranks register again
# quiesced and the new agent adopts them: resume reaches them, or else
# its lease does.
# The lease counts from the first rank adopted: for the resume, long
# enough that slow ranks (the sanitizer run, a loaded machine) are all
# back before it; for the lease, short, and then its log line is the proof
# (the quiesced window may be too short to see from here).
for how in resume lease; do
	q=$(agent quiesce '{"deadline-ms": 20000}') || fail "quiesce: $q"
	kill -9 "$APID"
	wait "$APID" 2>/dev/null
	: >"$T/agent.log"
	if [ $how = resume ]; then
		start_agent 30000
		wait_state 20 quiesced || fail "the restarted agent did not adopt $NP quiesced ranks: $(agent status)"
	else
		start_agent 3000
		for _ in $(seq 1 200); do
			grep -q "lease of 3000 ms ran out" "$T/agent.log" && break
			sleep 0.1
		done
		grep -q "registered quiesced: adopting its quiesce with a lease of 3000 ms" "$T/agent.log" ||
			fail "the restarted agent did not adopt the quiesced ranks: $(cat "$T/agent.log")"
		grep -q "lease of 3000 ms ran out" "$T/agent.log" ||
			fail "the adopted quiesce's lease did not run out: $(cat "$T/agent.log")"
	fi
	if [ $how = resume ]; then
		r=$(agent resume '{"fabrics": ["tcp"], "rescan": false}') || fail "resume of adopted ranks: $r"
		[ "$(echo "$r" | grep -c '"rank"')" = $NP ] || fail "resume of adopted ranks: $r"
	fi
	wait_state 10 running || fail "adopted ranks not running ($how): $(agent status)"
	echo "ok   agent killed while quiesced: $NP ranks adopted, resumed by $how"
done

touch "$T/stop"
wait "$MPID"
rc=$?
MPID=
[ $rc = 0 ] || fail "mpirun exited $rc"
grep -q "kws-ranks: $NP ranks, [0-9]* rounds, 0 errors" "$T/mpirun.log" || fail "no clean result line"
echo "ok   $(grep kws-ranks: "$T/mpirun.log")"
kill "$APID"
wait "$APID"
rc=$?
APID=
[ $rc = 0 ] || { cat "$T/agent.log"; fail "the agent exited $rc on SIGTERM"; }
exit 0
