#!/usr/bin/env bash
# `kawarimi qmp ssh://root@127.0.0.1:PORT/PATH` against real bare QEMUs
# through a real, private sshd (sshd-lib.sh): it works; three sockets on
# one host share one master and one login; each session's ssh is gone when
# its command ends; a wrong host key, an unknown one, a key the host does
# not accept and a missing remote socket each fail at once with ssh's
# reason and the fix; a socket past the host's MaxSessions still works (ssh
# logs in once more for it); a master that dies ends its connections like a QEMU
# that closed its socket, and the next command starts a new one.
# Usage: test-ssh.sh PATH/TO/kawarimi
set -u
kawarimi=${1:?usage: $0 PATH/TO/kawarimi}
for tool in qemu-system-x86_64 python3 socat ss pgrep; do
	command -v "$tool" >/dev/null || { echo "SKIP: $tool not installed"; exit 77; }
done
T=$(mktemp -d /tmp/kwq-ssh-XXXXXX)
PIDS=()
fails=0
fail() {
	echo "FAIL: $*" >&2
	fails=$((fails + 1))
}
die() {
	echo "FAIL: $*" >&2
	exit 1
}
cleanup() {
	kws_stop
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
	wait 2>/dev/null
	rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 1' TERM INT
. "$(dirname "$0")/sshd-lib.sh"

# Runs kawarimi qmp, bounded, never on a terminal; sets rc, out, err.
kq() {
	timeout 60 "$kawarimi" qmp "$@" </dev/null >"$T/out" 2>"$T/err"
	rc=$?
	out=$(cat "$T/out")
	err=$(cat "$T/err")
}

kws_start_sshd

# Three bare QEMUs, one QMP socket each.
for i in 1 2 3; do
	qemu-system-x86_64 -M none -nodefaults -display none \
		-qmp "unix:$T/q$i.qmp,server=on,wait=off" </dev/null >"$T/qemu$i.log" 2>&1 &
	PIDS+=($!)
done
for i in 1 2 3; do
	for _ in $(seq 100); do [ -S "$T/q$i.qmp" ] && break; sleep 0.05; done
	[ -S "$T/q$i.qmp" ] || die "QEMU $i did not create its socket"
done

# 1. One command through ssh.
kq "$(kws_uri "$T/q1.qmp")" query-status
[ $rc -eq 0 ] || fail "query-status over ssh: rc $rc: $err"
grep -q '"status": "running"' <<<"$out" || fail "query-status over ssh printed: $out"
[ "$(kws_masters ok)" = 1 ] || fail "after one command: $(kws_masters ok) masters, want 1 (ControlPersist)"
[ "$(kws_sessions ok)" = 0 ] || fail "the session's ssh outlived kawarimi qmp"

# 2. Three sockets at once on one host: one master, one login, one TCP
# connection.  A fresh client, so that the three race to start the master.
kws_client many "$T/sshd/id" "$T/sshd/known_hosts"
kws_use many
logins=$(kws_logins)
for i in 1 2 3; do
	timeout 60 "$kawarimi" qmp "$(kws_uri "$T/q$i.qmp")" --events 8 </dev/null \
		>"$T/ev$i.out" 2>"$T/ev$i.err" &
	evpid[i]=$!
done
# A session's ssh shows once its helper got past the master and exec'd it.
for _ in $(seq 70); do [ "$(kws_sessions many)" = 3 ] && break; sleep 0.1; done
echo "3 sockets: $(kws_masters many) master, $(kws_sessions many) sessions, $(kws_conns) connections to sshd"
[ "$(kws_masters many)" = 1 ] || fail "3 sockets: $(kws_masters many) masters, want 1"
[ "$(kws_sessions many)" = 3 ] || fail "3 sockets: $(kws_sessions many) sessions, want 3"
[ "$(kws_conns)" = 2 ] || fail "3 sockets: $(kws_conns) TCP connections to sshd, want 2 (client ok's and many's)"
for i in 1 2 3; do
	wait "${evpid[i]}" || fail "--events on q$i over ssh: rc $?: $(cat "$T/ev$i.err")"
done
[ $(($(kws_logins) - logins)) = 1 ] || fail "3 sockets: $(($(kws_logins) - logins)) logins, want 1"
[ "$(kws_sessions many)" = 0 ] || fail "session ssh processes left after their commands ended"
# The remote socat ended with its session: each monitor takes a client again.
for i in 1 2 3; do
	kq "$(kws_uri "$T/q$i.qmp")" query-status
	[ $rc -eq 0 ] || fail "q$i's monitor still busy after its ssh session ended: $err"
done
[ $(($(kws_logins) - logins)) = 1 ] || fail "the next commands logged in again instead of reusing the master"
kws_use ok

# 3. The failures, each with ssh's words and the fix, each at once.
expect_fail() {	# expect_fail WHAT URI PATTERN...
	local what=$1 uri=$2 pat start=$SECONDS
	shift 2
	kq "$uri" query-status
	[ $rc -eq 2 ] || fail "$what: rc $rc, want 2: $err"
	for pat in "$@"; do
		grep -qF -- "$pat" <<<"$err" || fail "$what: no '$pat' in: $err"
	done
	[ $((SECONDS - start)) -lt 15 ] || fail "$what took $((SECONDS - start)) s"
}
expect_fail "missing remote socket" "$(kws_uri "$T/nope.qmp")" \
	"$T/nope.qmp" "No such file or directory" "is the QEMU there running"

echo "[127.0.0.1]:$SSHD_PORT $(cat "$T/sshd/id.pub")" >"$T/kh-wrong"
kws_client wrongkey "$T/sshd/id" "$T/kh-wrong"
kws_use wrongkey
expect_fail "changed host key" "$(kws_uri "$T/q1.qmp")" \
	"has changed" "ssh-keygen -R"

: >"$T/kh-empty"
kws_client unknownkey "$T/sshd/id" "$T/kh-empty"
kws_use unknownkey
expect_fail "unknown host key" "$(kws_uri "$T/q1.qmp")" \
	"Host key verification failed" "known_hosts"

kws_client nokey "$T/sshd/id_other" "$T/sshd/known_hosts"
kws_use nokey
expect_fail "key not accepted" "$(kws_uri "$T/q1.qmp")" \
	"Permission denied (publickey)" "authorized_keys" "BatchMode=yes"
for c in wrongkey unknownkey nokey; do
	[ "$(kws_masters $c)" = 0 ] || fail "$c: a master is left although it never logged in"
done
kws_use ok

expect_fail "no sshd" "ssh://root@127.0.0.1:1$T/q1.qmp" \
	"Connection refused" "is sshd running on 127.0.0.1"
# An ssh option in the host's place never reaches ssh.
kq "ssh://-oProxyCommand=x$T/q1.qmp" query-status
[ $rc -eq 2 ] && grep -q "'-oProxyCommand=x' is not a host name" <<<"$err" ||
	fail "an option as host: rc $rc: $err"

# 4. More sockets on one host than its sshd's MaxSessions: ssh falls back
# to a login of its own for the one over, which works.  One QEMU with that
# many monitors.
args=()
for i in $(seq 0 "$KWS_MAX_SESSIONS"); do args+=(-qmp "unix:$T/m$i.qmp,server=on,wait=off"); done
qemu-system-x86_64 -M none -nodefaults -display none "${args[@]}" </dev/null >"$T/qemu-m.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do [ -S "$T/m$KWS_MAX_SESSIONS.qmp" ] && break; sleep 0.05; done
kws_client cap "$T/sshd/id" "$T/sshd/known_hosts"
kws_use cap
logins=$(kws_logins)
sessions=$(grep -c 'Starting session: command' "$SSHD_LOG")
capped=()
for i in $(seq 1 "$KWS_MAX_SESSIONS"); do
	timeout 60 "$kawarimi" qmp "$(kws_uri "$T/m$i.qmp")" --events 8 </dev/null \
		>/dev/null 2>"$T/cap$i.err" &
	capped+=($!)
done
for _ in $(seq 70); do
	[ "$(grep -c 'Starting session: command' "$SSHD_LOG")" -ge $((sessions + KWS_MAX_SESSIONS)) ] && break
	sleep 0.1
done
kq "$(kws_uri "$T/m0.qmp")" query-status
[ $rc -eq 0 ] || fail "a socket past MaxSessions: rc $rc: $err"
for p in "${capped[@]}"; do wait "$p" || fail "a socket within MaxSessions failed: $(cat "$T"/cap*.err)"; done
[ $(($(kws_logins) - logins)) = 2 ] ||
	fail "$KWS_MAX_SESSIONS + 1 sockets: $(($(kws_logins) - logins)) logins, want 2 (the master's, the fallback's)"
[ "$(kws_masters cap)" = 1 ] || fail "past MaxSessions: $(kws_masters cap) masters, want 1"
kws_use ok

# 5. The master dies under a running connection: kawarimi qmp sees the
# connection close, as when QEMU quits, and exits 2 at once.
timeout 60 "$kawarimi" qmp "$(kws_uri "$T/q2.qmp")" --events 30 </dev/null \
	>"$T/drop.out" 2>"$T/drop.err" &
drop=$!
for _ in $(seq 50); do [ "$(kws_sessions ok)" = 1 ] && break; sleep 0.1; done
sleep 0.5
master=$(pgrep -f -- "-S $T/run-ok/kawarimi-ssh/.*ControlMaster=yes")
[ -n "$master" ] || die "no master to kill"
start=$SECONDS
kill -9 $master
wait $drop
rc=$?
[ $rc -eq 2 ] || fail "master killed: kawarimi qmp --events exited $rc, want 2"
[ $((SECONDS - start)) -lt 10 ] || fail "master killed: noticed after $((SECONDS - start)) s"
cat "$T/drop.err"
grep -q "connection closed by the peer.*the ssh connection to 127.0.0.1 broke" "$T/drop.err" ||
	fail "master killed: $(cat "$T/drop.err")"
[ "$(kws_sessions ok)" = 0 ] || fail "master killed: its session ssh is left"
# Its control socket is left behind (kill -9): the next command replaces it.
kq "$(kws_uri "$T/q2.qmp")" query-status
[ $rc -eq 0 ] || fail "after the master died: rc $rc: $err"
[ "$(kws_masters ok)" = 1 ] || fail "after the master died: $(kws_masters ok) masters, want 1"

[ $fails -eq 0 ] || { echo "sshd log:"; tail -20 "$SSHD_LOG"; exit 1; }
echo PASS
