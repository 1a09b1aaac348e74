#!/usr/bin/env bash
# The HCA phases without a guest OS: the source has an e1000e "HCA" on a
# pcie-root-port; nothing in the guest answers the unplug request, so
# DEVICE_DELETED never comes: the unplug times out and everything rolls
# back: the mirror is cancelled, the HCA is still in place at the source,
# and the job (a fake agent) is resumed there after its quiesce.  (A
# cooperating guest is the lab's end-to-end test.)
. "$(dirname "$0")/lib.sh"

kwm_images 1
kwm_agents 1
kwm_start_src 1 -device e1000e,netdev=hn0,bus=rp1,id=hca0
kwm_start_dst 1
STORAGE=incremental AGENTS=yes TIMEOUTS='{unplug: 2s, storage: 60s}' \
	SRC_HCA='{driver: e1000e, id: hca0, netdev: hn0, bus: rp1}' kwm_cluster "$T/c.yaml" 1

timeout 120 "$KAWARIMI" migrate "$T/c.yaml" --report "$T/r.json" >"$T/out" 2>"$T/err"
rc=$?
cat "$T/out" "$T/err"
[ $rc -eq 1 ] || fail "exit status $rc, expected 1"
grep -q 'VM vm1 failed in phase unplug: .*DEVICE_DELETED' "$T/err" || fail "message does not name the unplug"
[ "$(kwm_json "$T/r.json" 'r["result"]')" = rolled-back ] || fail "report result"
[ "$(kwm_json "$T/r.json" 'r["vms"][0]["rollback"]["hca-restored"]')" = True ] || fail "HCA not restored"
[ "$(kwm_status "$T/s1.qmp")" = running ] || fail "source not running"
kwm_qmp "$T/s1.qmp" qom-get '{"path":"/machine/peripheral/hca0","property":"type"}' |
	grep -q '"return": "e1000e"' || fail "the HCA is gone at the source"
kwm_qmp "$T/s1.qmp" query-block-jobs | grep -q '"return": \[\]' || fail "a block job is left"
# The agent: hello, quiesce, then (rollback asks where it stands) resume on
# the HCA (fabrics verbs) at the source.  Lease renewals aside.
[ "$(awk '$3 != "renew" {print $2 $3}' "$T/agent1.log" | tr '\n' ' ')" = "0hello 0quiesce 0status 0resume " ] ||
	fail "agent saw: $(awk '{print $2, $3}' "$T/agent1.log")"
grep -q ' 0 resume .*"verbs"' "$T/agent1.log" || fail "resume without verbs"
python3 - "$T/r.json" <<'PY' || fail "blackout"
import json, sys
v = json.load(open(sys.argv[1]))["vms"][0]
s = v["blackout"]["spans"]
assert len(s) == 1 and s[0]["why"] == "unplug" and s[0]["end"] and s[0]["duration-ms"] >= 2000, s
PY
echo PASS
