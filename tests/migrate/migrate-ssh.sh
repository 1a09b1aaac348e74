#!/usr/bin/env bash
# A whole migration with every endpoint behind ssh:// (the source's and
# the destination's QMP and symvirt sockets), through a real private sshd
# on 127.0.0.1 (tests/qmp/sshd-lib.sh); the migration's own streams stay
# local.  One VM, incremental storage, fake agents.  Afterwards: identical
# disks, the destination running, the agents quiesced and resumed, and all
# four sockets carried by one ssh login; no ssh process left of the run.
# Then `kawarimi agent` through ssh, and a preflight that fails on a remote
# socket that is not there, with ssh's words, changing nothing.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/../qmp/sshd-lib.sh"
command -v pgrep >/dev/null || { echo "SKIP: pgrep not installed"; exit 77; }
trap 'kws_stop; kwm_cleanup' EXIT

kws_start_sshd
kwm_images 2
kwm_agents 1
kwm_start_src 1
kwm_start_dst 1
# An HCA at the destination, so that the agents quiesce and resume the job.
STORAGE=incremental AGENTS=yes DST_HCA='{driver: e1000e, id: hca0, netdev: hn0, bus: rp1}' \
	kwm_cluster "$T/local.yaml" 1
# Every QMP and symvirt socket as ssh://root@127.0.0.1:PORT/PATH.
sed -E "s#(qmp|symvirt): $T/#\\1: $(kws_uri "$T")/#g" "$T/local.yaml" >"$T/c.yaml"
[ "$(grep -o "ssh://" "$T/c.yaml" | wc -l)" = 4 ] || { cat "$T/c.yaml"; fail "not 4 ssh:// endpoints"; }
grep -q "listen: \"unix:$T/m1.sock\"" "$T/c.yaml" || fail "the migration stream moved off the local socket"

logins=$(kws_logins)
timeout 120 "$KAWARIMI" migrate "$T/c.yaml" --report "$T/r.json" </dev/null >"$T/out" 2>"$T/err"
rc=$?
cat "$T/out" "$T/err"
[ $rc -eq 0 ] || fail "kawarimi migrate over ssh exited $rc"
[ "$(kwm_json "$T/r.json" 'r["result"]')" = completed ] || fail "report result"
qemu-img compare -U "$T/s1.qcow2" "$T/d1.qcow2" || fail "disks differ"
[ "$(kwm_status "$T/d1.qmp")" = running ] || fail "destination not running"
for t in $(seq 1 50); do kwm_alive "$SRC_PID_1" || break; sleep 0.1; done
kwm_alive "$SRC_PID_1" && fail "source QEMU still running"
grep -q ' 0 hello ' "$T/agent1.log" || fail "no hello at the source agent through ssh"
awk '$2 == 1 {print $3}' "$T/agent1.log" | tr '\n' ' ' | grep -q '^hello quiesce resume ' ||
	fail "the destination agent through ssh saw $(awk '$2 == 1 {print $3}' "$T/agent1.log")"
kwm_qmp "$T/d1.qmp" qom-get '{"path":"/machine/peripheral/hca0","property":"type"}' |
	grep -q '"return": "e1000e"' || fail "no HCA at the destination"
[ $(($(kws_logins) - logins)) = 1 ] ||
	fail "4 sockets on one host took $(($(kws_logins) - logins)) ssh logins, want 1"
[ "$(kws_masters ok)" = 1 ] || fail "$(kws_masters ok) ssh masters, want 1"
[ "$(kws_sessions ok)" = 0 ] || fail "$(kws_sessions ok) ssh sessions left after the run"

# kawarimi agent through the same master.
timeout 30 "$KAWARIMI" agent "$(kws_uri "$T/d1.sv")" hello </dev/null >"$T/out" 2>"$T/err" ||
	fail "kawarimi agent over ssh: $(cat "$T/err")"
grep -q '"protocol"' "$T/out" || fail "agent hello over ssh printed: $(cat "$T/out")"
[ $(($(kws_logins) - logins)) = 1 ] || fail "kawarimi agent logged in again"

# A preflight failure through ssh: the destination's socket is not there.
kwm_start_src 2
AGENTS=no kwm_cluster "$T/bad-local.yaml" 1
sed -E "s#$T/d1.qmp#$T/nothere.qmp#; s#$T/s1.qmp#$T/s2.qmp#; s#qmp: $T/#qmp: $(kws_uri "$T")/#" \
	"$T/bad-local.yaml" >"$T/bad.yaml"
timeout 60 "$KAWARIMI" migrate "$T/bad.yaml" </dev/null >"$T/out" 2>"$T/err"
rc=$?
grep -h "nothere" "$T/out" "$T/err"
[ $rc -ne 0 ] || fail "migrate to a missing remote socket succeeded"
grep -q "nothere.qmp.*No such file or directory" "$T/out" "$T/err" ||
	{ cat "$T/out" "$T/err"; fail "no ssh reason for the missing remote socket"; }
[ "$(kwm_status "$T/s2.qmp")" = running ] || fail "the source changed on a failed preflight"
[ "$(kws_sessions ok)" = 0 ] || fail "ssh sessions left after the failed preflight"
echo PASS
