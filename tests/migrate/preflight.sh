#!/usr/bin/env bash
# kawarimi plan: a good cluster passes and changes nothing; each kind of
# problem is refused before anything changes, with a message that says
# what and where; a bad cluster file names file:line:column.
. "$(dirname "$0")/lib.sh"

kwm_images 1
kwm_start_src 1
kwm_start_dst 1
kwm_cluster "$T/c.yaml" 1

expect() {	# expect RC PATTERN CMD...
	local want=$1 pat=$2 rc
	shift 2
	timeout 60 "$@" >"$T/out" 2>"$T/err"
	rc=$?
	[ $rc -eq "$want" ] || { cat "$T/out" "$T/err"; fail "$*: exit $rc, expected $want"; }
	grep -qE -- "$pat" "$T/out" "$T/err" || { cat "$T/out" "$T/err"; fail "$*: no '$pat'"; }
}

expect 0 'plan: OK' "$KAWARIMI" plan "$T/c.yaml"
[ "$(kwm_status "$T/d1.qmp")" = inmigrate ] || fail "plan changed the destination"
[ "$(kwm_status "$T/s1.qmp")" = running ] || fail "plan changed the source"

# Cluster-file errors: file:line:column and the fix.
sed 's/qmp: /qpm: /' "$T/c.yaml" >"$T/bad.yaml"
expect 2 "bad.yaml:[0-9]+:[0-9]+: vms\\[0\\]\\.source: unknown key 'qpm'" "$KAWARIMI" plan "$T/bad.yaml"
sed "s|qmp: $T/d1.qmp|qmp: ssh://-oProxyCommand=x$T/d1.qmp|" "$T/c.yaml" >"$T/ssh.yaml"
expect 2 "ssh.yaml:[0-9]+:[0-9]+: .*'-oProxyCommand=x' is not a host name" "$KAWARIMI" migrate "$T/ssh.yaml"
expect 2 'nothere.yaml: cannot open' "$KAWARIMI" plan "$T/nothere.yaml"

# The HCA named in the file is not at the source.
SRC_HCA='{driver: e1000e, id: hca9}' kwm_cluster "$T/hca.yaml" 1
expect 1 "looking for the HCA 'hca9'" "$KAWARIMI" plan "$T/hca.yaml"

# A destination with its own copy of the HCA id.
DST_HCA='{driver: e1000e, id: vblk0}' kwm_cluster "$T/dhca.yaml" 1
expect 1 "already has a device 'vblk0'" "$KAWARIMI" migrate "$T/dhca.yaml"

# Incremental, but the destination's overlay has no base.
kill "$DST_PID_1"; wait "$DST_PID_1" 2>/dev/null; rm -f "$T/d1.qmp"
qemu-img create -q -f qcow2 "$T/d1.qcow2" 256M
kwm_start_dst 1
expect 1 'base image of disk .disk0. is missing at the destination' "$KAWARIMI" migrate "$T/c.yaml"
[ "$(kwm_status "$T/s1.qmp")" = running ] || fail "refusal changed the source"
expect 0 'plan: OK' "$KAWARIMI" plan "$T/c.yaml" --storage full

# A destination that is not waiting for a migration.
kill "$DST_PID_1"; wait "$DST_PID_1" 2>/dev/null; rm -f "$T/d1.qmp"
"${QEMU_BASE[@]}" -qmp "unix:$T/d1.qmp,server=on,wait=off" 2>/dev/null & PIDS+=($!)
kwm_wait_sock "$T/d1.qmp"
expect 1 "is 'running', not waiting for a migration; start it with -incoming defer" \
	"$KAWARIMI" plan "$T/c.yaml" --storage shared

# Nothing listening.
rm -f "$T/d1.qmp"
expect 1 'cannot connect to the destination QMP socket' "$KAWARIMI" plan "$T/c.yaml"
echo PASS
