#!/usr/bin/env bash
# The coordinator is killed (SIGKILL) 1 s into vm1's memory phase: vm1's
# source is mid-migration, both mirrors run, both destinations export
# their disks.  `kawarimi recover` must leave every VM running on exactly
# one side (here the sources: no destination has a whole VM), nothing
# behind (no block job, no NBD export, no migration), the disks intact;
# run again it has nothing to do.
. "$(dirname "$0")/lib.sh"

kwm_vms 2 24
AGENTS=yes kwm_agents 2
STORAGE=incremental BANDWIDTH=6MB/s PARALLEL=2 AGENTS=yes kwm_cluster "$T/c.yaml" 2
J=$KAWARIMI_STATE_DIR/test.journal

"$KAWARIMI" migrate "$T/c.yaml" --hold-job --json >"$T/out" 2>"$T/err" &
kpid=$!
kwm_wait_line "$T/out" '"vm":"vm1","phase":"memory","state":"start"'
sleep 1
grep -q '"vm":"vm1","phase":"memory","state":"end"' "$T/out" && fail "memory too fast to interrupt"
kill -9 "$kpid"
wait "$kpid" 2>/dev/null
[ -s "$J" ] || fail "no journal at $J"
grep -q '"end"' "$J" && fail "the journal of a killed run has an end line"
# What the dead coordinator left: a migration, mirrors, NBD exports.
kwm_qmp "$T/s1.qmp" query-block-jobs | grep -q kwm-mirror || fail "setup: no mirror running"
# A second migrate refuses while the journal is unfinished.
"$KAWARIMI" migrate "$T/c.yaml" >"$T/out2" 2>&1 && fail "migrate ran over an unfinished journal"
grep -q 'kawarimi recover' "$T/out2" || fail "refusal does not say recover: $(cat "$T/out2")"

timeout 120 "$KAWARIMI" recover "$T/c.yaml" --report "$T/r.json" >"$T/rout" 2>&1
rc=$?
cat "$T/rout"
[ $rc -eq 1 ] || fail "recover: exit status $rc, expected 1 (rolled back)"
[ "$(kwm_json "$T/r.json" 'r["result"]')" = rolled-back ] || fail "report result"
for i in 1 2; do
	[ "$(kwm_status "$T/s$i.qmp")" = running ] || fail "vm$i source not running"
	kwm_qmp "$T/s$i.qmp" query-block-jobs | grep -q '"return": \[\]' || fail "vm$i: a block job is left"
	kwm_qmp "$T/s$i.qmp" query-named-block-nodes | grep -q kwm-nbd && fail "vm$i: NBD client left"
	if [ -S "$T/d$i.qmp" ] && kwm_alive "$(eval echo "\$DST_PID_$i")"; then
		kwm_qmp "$T/d$i.qmp" query-block-exports | grep -q '"return": \[\]' ||
			fail "vm$i: an NBD export is left"
		[ "$(kwm_status "$T/d$i.qmp")" = running ] && fail "vm$i runs on both sides"
	fi
	qemu-img compare -U "$T/s$i.orig.qcow2" "$T/s$i.qcow2" >/dev/null || fail "vm$i source disk changed"
done
kwm_qmp "$T/s1.qmp" query-migrate | grep -qE '"status": "(cancelled|failed)"' || fail "vm1 migration not stopped"
# The job quiesced by --hold-job was resumed.
grep -q ' resume ' "$T/agent1.log" || fail "vm1's job was not resumed"
grep -q '"end":"rolled-back"' "$J" || fail "the journal has no end line"

"$KAWARIMI" recover "$T/c.yaml" >"$T/rout2" 2>&1 || fail "second recover: $(cat "$T/rout2")"
grep -q 'nothing to do' "$T/rout2" || fail "second recover: $(cat "$T/rout2")"
echo PASS
