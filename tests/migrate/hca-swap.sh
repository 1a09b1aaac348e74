#!/usr/bin/env bash
# The whole device swap without a guest OS, with a usb-net as the "HCA"
# (USB unplug needs no guest cooperation, so DEVICE_DELETED comes at once):
# 1. success: quiesce, unplug, resume on TCP at the source, memory,
#    device_add at the destination, quiesce/resume onto it (verbs): two
#    blackout spans, the device at the destination, disks identical;
# 2. rollback after the unplug: the agent refuses the first resume at the
#    source: the device is plugged back at the source and the job resumed
#    onto it (verbs); the source runs with its HCA.
. "$(dirname "$0")/lib.sh"

HCA='{driver: usb-net, id: hca0, netdev: hn0, bus: xhci.0}'
kwm_images 2
"$FAKE_AGENT" "$T/agent1.log" "$T/s1.sv" "$T/d1.sv" & PIDS+=($!)
"$FAKE_AGENT" "$T/agent2.log" "$T/s2.sv" "$T/d2.sv" --refuse-once resume & PIDS+=($!)
kwm_wait_sock "$T/d1.sv"; kwm_wait_sock "$T/d2.sv"
for i in 1 2; do
	cp "$T/s$i.qcow2" "$T/s$i.orig.qcow2"
	kwm_start_src $i -device usb-net,id=hca0,netdev=hn0,bus=xhci.0
	kwm_start_dst $i
done
AGENTS=yes SRC_HCA=$HCA DST_HCA=$HCA kwm_cluster "$T/all.yaml" 2
# One cluster file per VM: the second run must fail on its own.
python3 - "$T/all.yaml" "$T/c1.yaml" "$T/c2.yaml" <<'PY'
import sys
text = open(sys.argv[1]).read()
head, vms = text.split("vms:\n")
parts = vms.split("  - name: ")[1:]
for i, part in enumerate(parts):
    open(sys.argv[2 + i], "w").write(head + "vms:\n  - name: " + part)
PY

# 1. success
timeout 120 "$KAWARIMI" migrate "$T/c1.yaml" --report "$T/r1.json" >"$T/out1" 2>&1
rc=$?
cat "$T/out1"
[ $rc -eq 0 ] || fail "vm1: exit status $rc"
[ "$(awk '{print $2 $3}' "$T/agent1.log" | tr '\n' ' ')" = \
	"0hello 0quiesce 0resume 1hello 1quiesce 1resume " ] ||
	fail "vm1's agent saw: $(awk '{print $2, $3}' "$T/agent1.log")"
grep -q ' 0 resume {"fabrics":\["tcp"\],"rescan":false,"wait":false}' "$T/agent1.log" || fail "source resume args"
grep -q ' 1 resume {"fabrics":\["verbs","tcp"\]' "$T/agent1.log" || fail "destination resume args"
kwm_qmp "$T/d1.qmp" qom-get '{"path":"/machine/peripheral/hca0","property":"type"}' |
	grep -q '"return": "usb-net"' || fail "no HCA at the destination"
qemu-img compare -U "$T/s1.qcow2" "$T/d1.qcow2" || fail "vm1 disks differ"
python3 - "$T/r1.json" <<'PY' || fail "vm1 report"
import json, sys
v = json.load(open(sys.argv[1]))["vms"][0]
ph = {p["phase"]: p for p in v["phases"]}
for p in ("quiesce", "unplug", "resume-source", "memory", "switchover", "resume"):
    assert p in ph, p
s = v["blackout"]["spans"]
assert [x["why"] for x in s] == ["unplug", "replug"] and all(x["end"] for x in s), s
# resumed on what is left: the memory migration is outside both spans
assert s[0]["end"] <= ph["memory"]["start"] and s[1]["start"] >= ph["memory"]["end"], s
assert v["blackout"]["includes-memory-migration"] is False
PY

# 2. rollback after the unplug
timeout 120 "$KAWARIMI" migrate "$T/c2.yaml" --report "$T/r2.json" >"$T/out2" 2>&1
rc=$?
cat "$T/out2"
[ $rc -eq 1 ] || fail "vm2: exit status $rc, expected 1"
grep -q 'VM vm2 failed in phase resume-source' "$T/out2" || fail "vm2 message"
[ "$(kwm_json "$T/r2.json" 'r["result"]')" = rolled-back ] || fail "vm2 report result"
[ "$(kwm_json "$T/r2.json" 'r["vms"][0]["rollback"]["hca-restored"]')" = True ] || fail "HCA not restored"
kwm_qmp "$T/s2.qmp" qom-get '{"path":"/machine/peripheral/hca0","property":"type"}' |
	grep -q '"return": "usb-net"' || fail "the HCA is not back at the source"
[ "$(kwm_status "$T/s2.qmp")" = running ] || fail "vm2 source not running"
[ "$(kwm_status "$T/d2.qmp")" = inmigrate ] || fail "vm2 destination changed"
[ "$(awk '$3 != "renew" {print $2 $3}' "$T/agent2.log" | tr '\n' ' ')" = "0hello 0quiesce 0resume 0status 0resume " ] ||
	fail "vm2's agent saw: $(awk '{print $2, $3}' "$T/agent2.log")"
tail -1 "$T/agent2.log" | grep -q '"fabrics":\["verbs","tcp"\]' || fail "job not moved onto the HCA"
qemu-img compare -U "$T/s2.orig.qcow2" "$T/s2.qcow2" || fail "vm2 source disk changed"
echo PASS
