#!/usr/bin/env bash
# Two VMs, incremental storage, one migration at a time under a WAN cap,
# fake agents, an HCA added at the destination.  Afterwards: identical
# disks, only the overlays moved, destinations running with the HCA,
# sources gone, the parallel limit and barriers visible in the report.
. "$(dirname "$0")/lib.sh"

kwm_images 2
# vm2 has more to copy: with one slot it goes first (longest first).
qemu-io -c 'write -P 0x33 200M 4M' "$T/s2.qcow2" >/dev/null || fail "qemu-io"
# Each agent has one rank of a job: after the resume, every agent gets
# both ranks' address lists (peers), and never a malformed one.
KWM_AGENT_RANKS=yes kwm_agents 2
for i in 1 2; do kwm_start_src $i; kwm_start_dst $i; done
STORAGE=incremental PARALLEL=1 BANDWIDTH=40MB/s AGENTS=yes \
	DST_HCA='{driver: e1000e, id: hca0, netdev: hn0, bus: rp1}' kwm_cluster "$T/c.yaml" 2

timeout 120 "$KAWARIMI" migrate "$T/c.yaml" --report "$T/r.json" --journal "$T/j.log" \
	>"$T/out" 2>"$T/err"
rc=$?
cat "$T/out" "$T/err"
[ $rc -eq 0 ] || fail "kawarimi migrate exited $rc"

[ "$(kwm_json "$T/r.json" 'r["result"]')" = completed ] || fail "report result"
for i in 1 2; do
	qemu-img compare -U "$T/s$i.qcow2" "$T/d$i.qcow2" || fail "vm$i disks differ"
	ovl=$(kwm_overlay_bytes "$T/s$i.qcow2")
	moved=$(kwm_json "$T/r.json" "r['vms'][$((i - 1))]['storage']['bytes']")
	echo "vm$i: overlay $ovl bytes, moved $moved"
	[ "$moved" -ge "$ovl" ] || fail "vm$i moved $moved < overlay $ovl"
	[ "$moved" -le $((ovl * 11 / 10 + 1048576)) ] || fail "vm$i moved $moved > 1.1 x $ovl + 1 MiB"
	[ "$(kwm_status "$T/d$i.qmp")" = running ] || fail "vm$i destination not running"
	kwm_qmp "$T/d$i.qmp" qom-get '{"path":"/machine/peripheral/hca0","property":"type"}' |
		grep -q '"return": "e1000e"' || fail "vm$i: no HCA at the destination"
	eval "pid=\$SRC_PID_$i"
	for t in $(seq 1 50); do kwm_alive "$pid" || break; sleep 0.1; done
	kwm_alive "$pid" && fail "vm$i source QEMU still running"
	# The job moved onto the new HCA: quiesce then resume with verbs at
	# the destination's end (socket index 1).
	grep -q ' 0 hello ' "$T/agent$i.log" || fail "vm$i: no hello at the source"
	awk '$2 == 1 {print $3}' "$T/agent$i.log" | tr '\n' ' ' | grep -q '^hello quiesce resume peers $' ||
		fail "vm$i: destination agent saw $(awk '$2 == 1 {print $3}' "$T/agent$i.log")"
	grep -q ' 1 resume .*"verbs".*"wait":false' "$T/agent$i.log" || fail "vm$i: resume without verbs"
	peers=$(grep ' 1 peers ' "$T/agent$i.log")
	for r in 0 1; do
		grep -q "{\"jobid\":\"\[7,1\]\",\"rank\":$r,\"addrs\":\"3142574b010$r\"}" <<<"$peers" ||
			fail "vm$i: peers lacks rank $r's addresses: $peers"
	done
	grep -q '"rank":99' <<<"$peers" && fail "vm$i: a malformed address list was passed on: $peers"
done

# Limits and barriers, from the report's timestamps.
python3 - "$T/r.json" <<'PY' || fail "limits/barriers"
import json, sys
r = json.load(open(sys.argv[1]))
ph = {v["name"]: {p["phase"]: p for p in v["phases"]} for v in r["vms"]}
a, b = ph["vm1"], ph["vm2"]
for p in ("storage", "memory"):
    x, y = sorted([a[p], b[p]], key=lambda s: s["start"])
    assert x["end"] <= y["start"], f"{p} overlapped with parallel: 1"
assert r["max-parallel-seen"] == 1, r["max-parallel-seen"]
assert b["storage"]["start"] < a["storage"]["start"], "the larger overlay did not go first"
for before, after in (("preflight", "storage"), ("storage", "memory"),
                      ("memory", "switchover"), ("switchover", "resume")):
    assert max(v[before]["end"] for v in ph.values()) <= min(v[after]["start"] for v in ph.values()), \
        f"barrier {before} -> {after}"
for v in r["vms"]:
    spans = v["blackout"]["spans"]
    assert len(spans) == 1 and spans[0]["why"] == "replug" and spans[0]["end"], spans
    assert v["memory"]["bytes"] > 0 and v["memory"]["downtime-ms"] > 0, v["memory"]
    assert v["result"] == "migrated"
print("limits and barriers hold")
PY
grep -q '"execute":"blockdev-mirror"' "$T/j.log" || fail "journal lacks the mirror step"
# One at a time: each gets the whole 40 MB/s cap, mirror and migration.
[ "$(grep -c '"execute":"blockdev-mirror".*"speed":40000000' "$T/j.log")" = 2 ] ||
	fail "mirror speeds: $(grep blockdev-mirror "$T/j.log")"
[ "$(grep -c '"max-bandwidth":40000000' "$T/j.log")" = 2 ] || fail "max-bandwidth not the cap"
grep -q '"blk"' "$T/j.log" && fail "old block migration used"
echo PASS
