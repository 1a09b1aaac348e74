#!/usr/bin/env bash
# 50 VMs through a whole `kawarimi migrate`, their QEMUs simulated by
# bench/scale/kwsim-qemu (incremental storage, a 2 GB/s cap shared by 8
# at a time, no agents): every VM migrated with its disk and memory bytes,
# at most 8 in flight, the destinations running and the sources gone; run
# under a soft RLIMIT_NOFILE too low for its 100 sockets (raised to the
# hard limit); refused before any change under a hard limit that low; and
# 30 VMs on a pseudo-terminal shown as a summary, not 30 rows.  A
# correctness check: no timing is asserted (bench/scale/run.sh measures).
. "$(dirname "$0")/lib.sh"

KWSIM=${KWSIM:?set by meson}
N=50
DISK=8388608
RAM=67108864

# sim DIR N: a kwsim-qemu for VMs 1..N in DIR, waited for.
sim() {
	"$KWSIM" --dir "$1" --vms "$2" --wan 2e9 --ram $RAM --disk $DISK 2>"$1/sim.log" &
	PIDS+=($!)
	kwm_wait_line "$1/sim.log" listening 10 || fail "kwsim-qemu did not start"
}

sim "$T" $N
PARALLEL=8 BANDWIDTH=2GB/s kwm_cluster "$T/c.yaml" $N

# A hard limit below the 100 sockets: refused, nothing touched, no journal.
(ulimit -n 100; exec "$KAWARIMI" migrate "$T/c.yaml" --quiet) >"$T/out0" 2>"$T/err0"
rc=$?
cat "$T/err0"
[ $rc -eq 1 ] || fail "under a hard RLIMIT_NOFILE of 100 kawarimi exited $rc, not 1"
grep -q 'RLIMIT_NOFILE allows 100' "$T/err0" || fail "no word about RLIMIT_NOFILE"
grep -q 'ulimit -n' "$T/err0" || fail "the refusal does not say how to raise the limit"
[ ! -e "$T/state/test.journal" ] || fail "a refused run left a journal"
[ "$(kwm_status "$T/s1.qmp")" = running ] || fail "vm1's source is not running after the refusal"

# A soft limit below it (as in a login shell), the hard one above: raised.
(ulimit -S -n 64; exec timeout 120 "$KAWARIMI" migrate "$T/c.yaml" --quiet \
	--report "$T/r.json") >"$T/out" 2>"$T/err"
rc=$?
tail -3 "$T/err"
[ $rc -eq 0 ] || fail "kawarimi migrate of $N simulated VMs exited $rc"
[ "$(grep -c 'no symvirt agent' "$T/err")" = 1 ] ||
	fail "the missing agents were not said once for all"

python3 - "$T/r.json" $N $DISK $RAM <<'PY' || fail "report"
import json, sys
r = json.load(open(sys.argv[1]))
n, disk, ram = map(int, sys.argv[2:5])
assert r["result"] == "completed", r["result"]
assert len(r["vms"]) == n and all(v["result"] == "migrated" for v in r["vms"]), \
    [(v["name"], v["result"]) for v in r["vms"] if v["result"] != "migrated"]
for v in r["vms"]:
    assert v["storage"]["bytes"] == disk, (v["name"], v["storage"])
    assert v["memory"]["bytes"] >= ram, (v["name"], v["memory"])
    assert v["destination"]["status"] == "running", (v["name"], v["destination"])
    ph = [p["phase"] for p in v["phases"]]
    assert ph == ["preflight", "storage", "memory", "switchover", "finish"], ph
assert 1 <= r["max-parallel-seen"] <= 8, r["max-parallel-seen"]
c = r["coordinator"]
assert c["fds"] == 2 * n, c
assert c["nofile"] >= 2 * n, c
assert 0 < c["journal-syncs"] < c["journal-lines"], c
assert c["loop"]["turns"] > 0 and c["loop"]["ticks"] > 0, c
print("report OK:", n, "migrated;", c["journal-syncs"], "fsyncs for", c["journal-lines"],
      "journal lines")
PY
for i in 1 $N; do
	[ "$(kwm_status "$T/d$i.qmp")" = running ] || fail "vm$i's destination is not running"
	[ ! -S "$T/s$i.qmp" ] || fail "vm$i's source was not quit"
done

# The live display of 30 VMs on a 24-row pseudo-terminal: a summary.
if command -v script >/dev/null; then
	mkdir "$T/tty"
	sim "$T/tty" 30
	(T=$T/tty; PARALLEL=8 BANDWIDTH=2GB/s kwm_cluster "$T/c.yaml" 30)
	KAWARIMI_STATE_DIR=$T/tty/state timeout 120 script -qfec \
		"stty rows 24 cols 100; $KAWARIMI migrate $T/tty/c.yaml" "$T/tty/screen" \
		</dev/null >/dev/null 2>&1 || fail "kawarimi migrate on a pseudo-terminal failed"
	grep -q 'more VMs; of all 30' "$T/tty/screen" || fail "no summary line for 30 VMs"
	grep -q '30/30 VMs done' "$T/tty/screen" || fail "the last frame does not say done"
	if grep -q 'vm30 .*waiting' "$T/tty/screen"; then
		fail "a waiting VM got a row of its own although not all fit"
	fi
else
	echo "script(1) not installed: the pseudo-terminal part is skipped"
fi
echo PASS
