#!/usr/bin/env bash
# `kawarimi qmp` against a real QEMU: a command, its reply and errors, the
# exit codes, and --events.  Usage: test-cli.sh PATH/TO/kawarimi
set -u
kawarimi=${1:?usage: $0 PATH/TO/kawarimi}
dir=$(mktemp -d /tmp/kwq-cli-XXXXXX)
qemu_pid=
cleanup() {
	[ -n "$qemu_pid" ] && kill -9 "$qemu_pid" 2>/dev/null && wait "$qemu_pid" 2>/dev/null
	[ -n "${events_pid:-}" ] && kill "$events_pid" 2>/dev/null
	rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 1' TERM INT

fails=0
fail() {
	echo "FAIL: $*" >&2
	fails=$((fails + 1))
}

# Runs kawarimi qmp, bounded; sets rc, out, err.
kq() {
	timeout 60 "$kawarimi" qmp "$@" >"$dir/out" 2>"$dir/err"
	rc=$?
	out=$(cat "$dir/out")
	err=$(cat "$dir/err")
}

sock=$dir/qmp.sock
evsock=$dir/events.sock
qemu-system-x86_64 -machine q35 -accel tcg -nodefaults -display none -m 64 -S \
	-qmp "unix:$sock,server=on,wait=off" -qmp "unix:$evsock,server=on,wait=off" \
	</dev/null >"$dir/qemu.log" 2>&1 &
qemu_pid=$!
for _ in $(seq 200); do
	[ -S "$sock" ] && [ -S "$evsock" ] && break
	sleep 0.05
done
[ -S "$sock" ] || { cat "$dir/qemu.log"; echo "QEMU did not create $sock" >&2; exit 1; }
# The socket file appears before QEMU listens on it: wait until both accept.
python3 - "$sock" "$evsock" <<'PY' || { echo "QEMU does not listen on $sock" >&2; exit 1; }
import socket, sys, time
for path in sys.argv[1:]:
    for _ in range(200):
        try:
            socket.socket(socket.AF_UNIX).connect(path)
            break
        except OSError:
            time.sleep(0.05)
    else:
        sys.exit(1)
PY

kq "$sock" query-status
[ $rc -eq 0 ] || fail "query-status: rc $rc: $err"
grep -q '"status": "prelaunch"' <<<"$out" || fail "query-status printed: $out"

kq "$sock" device_del '{"id":"nope"}'
[ $rc -eq 1 ] || fail "device_del nope: rc $rc"
grep -q '^DeviceNotFound: ' <<<"$err" || fail "device_del nope said: $err"
[ -z "$out" ] || fail "device_del nope printed on stdout: $out"

kq "$sock" device_del '{"id":nope}'
[ $rc -eq 2 ] || fail "bad ARGS-JSON: rc $rc"
grep -qF "'{\"id\":nope}'" <<<"$err" || fail "bad ARGS-JSON not quoted: $err"

kq "$sock" device_del '[1]'
[ $rc -eq 2 ] && grep -q 'not a JSON object' <<<"$err" || fail "array ARGS-JSON: rc $rc: $err"

kq "$sock" query-pci
[ $rc -eq 0 ] && python3 -c 'import json,sys; d=json.load(sys.stdin); assert d[0]["devices"]' <<<"$out" ||
	fail "query-pci: rc $rc, not the JSON expected"

# Nothing behind the path: a missing file, then a stale socket file.
kq "$dir/nothing.sock" query-status
[ $rc -eq 2 ] || fail "missing socket: rc $rc"
grep -qF "$dir/nothing.sock" <<<"$err" || fail "missing socket not named: $err"
python3 -c 'import socket,sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])' "$dir/stale.sock"
kq "$dir/stale.sock" query-status
[ $rc -eq 2 ] && grep -qF "$dir/stale.sock" <<<"$err" && grep -q 'refused' <<<"$err" ||
	fail "stale socket: rc $rc: $err"

kq --help
[ $rc -eq 0 ] && grep -q 'ARGS-JSON' <<<"$out" && grep -q 'Exit status' <<<"$out" ||
	fail "--help: rc $rc"
kq "$sock"
[ $rc -eq 2 ] && grep -q Usage <<<"$err" || fail "usage error: rc $rc"
kq "$sock" --events soon
[ $rc -eq 2 ] && grep -qF "'soon'" <<<"$err" || fail "--events soon: rc $rc: $err"

# --events on the second monitor while the first one stops and resumes the
# guest; repeat until both events were seen (bounded by the window).
"$kawarimi" qmp "$evsock" --events 5 >"$dir/events" 2>"$dir/events.err" &
events_pid=$!
for _ in $(seq 30); do
	kq "$sock" cont
	kq "$sock" stop
	grep -q '"RESUME"' "$dir/events" && grep -q '"STOP"' "$dir/events" && break
	sleep 0.2
done
wait "$events_pid"
erc=$?
events_pid=
[ $erc -eq 0 ] || fail "--events: rc $erc: $(cat "$dir/events.err")"
python3 - "$dir/events" <<'PY' || fail "--events output: $(head -5 "$dir/events")"
import json, sys
names = []
for line in open(sys.argv[1]):
    e = json.loads(line)          # one JSON object per line
    assert e["timestamp"]["seconds"] > 0, e
    names.append(e["event"])
assert "STOP" in names and "RESUME" in names, names
PY

kill -9 "$qemu_pid"
wait "$qemu_pid" 2>/dev/null
qemu_pid=
kq "$sock" query-status
[ $rc -eq 2 ] && grep -qF "$sock" <<<"$err" || fail "after QEMU died: rc $rc: $err"

[ $fails -eq 0 ] && echo "ok: kawarimi qmp" && exit 0
exit 1
