#!/usr/bin/env bash
# Three VMs of different sizes, two slots, one WAN cap: a slot that frees
# is taken at once by the next VM, not when the whole batch has ended.
# vm1 (40 MiB of overlay) and vm3 (14 MiB) go first (longest first); vm2
# (10 MiB) must start when vm3 ends, while vm1 is still copying.  Before
# the fix a VM busy in storage kept the scheduler at "preflight", so vm2
# waited for vm1 too (docs/performance.md, "Scale, real VMs").
. "$(dirname "$0")/lib.sh"

kwm_images 3
qemu-io -c 'write -P 0x41 120M 30M' "$T/s1.qcow2" >/dev/null || fail "qemu-io vm1"
qemu-io -c 'write -P 0x43 120M 4M' "$T/s3.qcow2" >/dev/null || fail "qemu-io vm3"
for i in 1 2 3; do kwm_start_src $i; kwm_start_dst $i; done
STORAGE=incremental PARALLEL=2 BANDWIDTH=20MB/s kwm_cluster "$T/c.yaml" 3

timeout 120 "$KAWARIMI" migrate "$T/c.yaml" --report "$T/r.json" --quiet >"$T/out" 2>&1
rc=$?
cat "$T/out"
[ $rc -eq 0 ] || fail "kawarimi migrate exited $rc"
for i in 1 2 3; do
	qemu-img compare -U "$T/s$i.qcow2" "$T/d$i.qcow2" || fail "vm$i disks differ"
done

python3 - "$T/r.json" <<'PY' || fail "slot refill"
import json, sys
r = json.load(open(sys.argv[1]))
ph = {v["name"]: {p["phase"]: p for p in v["phases"]} for v in r["vms"]}
s = {n: (v["storage"]["start"] - r["started"], v["storage"]["end"] - r["started"])
     for n, v in ph.items()}
print("storage start/end s:", {n: tuple(round(x, 2) for x in t) for n, t in s.items()})
assert r["max-parallel-seen"] == 2, r["max-parallel-seen"]
assert s["vm1"][0] < s["vm2"][0] and s["vm3"][0] < s["vm2"][0], "not longest first"
assert s["vm2"][0] >= s["vm3"][1] - 0.01, "vm2 started before a slot was free"
# taken at once: within a few loop turns of vm3's end, well before vm1's
assert s["vm2"][0] - s["vm3"][1] < 0.5, "the freed slot waited %.2f s" % (s["vm2"][0] - s["vm3"][1])
assert s["vm2"][0] < s["vm1"][1], "vm2 waited for vm1 to end: batches, not slots"
# the barriers still hold
for before, after in (("preflight", "storage"), ("storage", "memory"), ("memory", "switchover")):
    assert max(v[before]["end"] for v in ph.values()) <= min(v[after]["start"] for v in ph.values()), \
        f"barrier {before} -> {after}"
print("slots refilled one by one, barriers hold")
PY
echo PASS
