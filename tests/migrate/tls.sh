#!/usr/bin/env bash
# TLS on the wire: one VM migrated over TCP through a relay that keeps
# every byte of the migration and NBD streams.  A marker string sits in
# guest RAM and another in the source's disk overlay.  With tls: the
# migration completes, the disks match, neither marker is in either
# capture, and no TLS object is left behind.  With tls: none the markers
# are in the captures (what shows that this test can see them).
. "$(dirname "$0")/lib.sh"

DN=$(kwm_pki "$T/pki")
kwm_images 1
MRAM="kawarimi-ram-marker-$RANDOM$RANDOM-in-guest-memory"
MDISK="kawarimi-disk-marker-$RANDOM$RANDOM-in-the-overlay"
# 4 MiB of RAM and 64 KiB of overlay filled with the markers.
python3 -c 'import sys; m = sys.argv[1].encode(); open(sys.argv[2], "wb").write((m * (4 * 2**20 // len(m) + 1))[:4 * 2**20])' \
	"$MRAM" "$T/ram.bin"
python3 -c 'import sys; m = sys.argv[1].encode(); open(sys.argv[2], "wb").write((m * 2000)[:65536])' \
	"$MDISK" "$T/disk.bin"
qemu-io -c "write -s $T/disk.bin 60M 64k" "$T/s1.qcow2" >/dev/null || fail "qemu-io marker"

# run MODE (tls | none): a fresh destination, a fresh relay, one migration.
run() {
	local mode=$1 pm pn rm rn tls
	read -r pm pn rm rn <<<"$(kwm_free_ports 4)"
	rm -f "$T/d1.qcow2" "$T"/*.qmp
	qemu-img create -q -f qcow2 -b "$T/dbase.qcow2" -F qcow2 "$T/d1.qcow2"
	kwm_start_src 1 -device "loader,file=$T/ram.bin,addr=0x2000000,force-raw=on"
	kwm_start_dst 1
	kwm_relay "$T/cap-$mode" "$rm=$pm" "$rn=$pn"
	tls="{dir: $T/pki, source-dn: \"$DN\"}"
	[ "$mode" = none ] && tls=none
	kwm_tcp_cluster "$T/c-$mode.yaml" "tls-$mode" incremental "$tls" "$pm:$rm" "$pn:$rn"
	"$KAWARIMI" plan "$T/c-$mode.yaml" >"$T/plan-$mode" 2>&1 || { cat "$T/plan-$mode"; fail "$mode: plan"; }
	timeout 120 "$KAWARIMI" migrate "$T/c-$mode.yaml" --report "$T/r-$mode.json" \
		--journal "$T/j-$mode.log" >"$T/out-$mode" 2>&1
	local rc=$?
	cat "$T/out-$mode"
	[ $rc -eq 0 ] || fail "$mode: kawarimi migrate exited $rc"
	qemu-img compare -U "$T/s1.qcow2" "$T/d1.qcow2" || fail "$mode: disks differ"
	[ "$(kwm_status "$T/d1.qmp")" = running ] || fail "$mode: destination not running"
	MIG=$T/cap-$mode/$rm.dump NBD=$T/cap-$mode/$rn.dump
	[ "$(kwm_json "$T/r-$mode.json" 'r["vms"][0]["tls"]')" = "${mode/tls/x509}" ] ||
		fail "$mode: the report's tls is not ${mode/tls/x509}"
	[ "$(stat -c %s "$MIG")" -gt $((4 << 20)) ] || fail "$mode: the migration did not go through the relay"
	[ "$(stat -c %s "$NBD")" -gt 65536 ] || fail "$mode: NBD did not go through the relay"
}

stop() {
	kill "$RELAY_PID" "$DST_PID_1" 2>/dev/null
	wait "$RELAY_PID" "$DST_PID_1" 2>/dev/null
}

run tls
kwm_has "$MIG" "$MRAM" && fail "tls: the RAM marker crossed the wire in clear"
kwm_has "$NBD" "$MDISK" && fail "tls: the disk marker crossed the wire in clear"
kwm_has "$MIG" "$MDISK" && fail "tls: the disk marker is in the migration stream"
grep -q 'encrypted: TLS' "$T/plan-tls" || fail "plan does not say what is encrypted: $(cat "$T/plan-tls")"
j=$T/j-tls.log
grep -q '"execute":"nbd-server-start".*"max-connections":1' "$j" || fail "NBD not limited to 1 connection"
grep -q '"execute":"nbd-server-start".*"tls-authz":"kwm-tls-authz"' "$j" || fail "NBD without tls-authz"
grep -q '"execute":"blockdev-add".*"tls-creds":"kwm-tls".*"tls-hostname":"127.0.0.1"' "$j" ||
	grep -q '"execute":"blockdev-add".*"tls-hostname":"127.0.0.1"' "$j" || fail "NBD client without TLS"
grep -q '"execute":"block-export-del"' "$j" || fail "the export was not removed after its mirror"
# The destination runs on with no TLS object and no NBD export left.
[ -z "$(kwm_objects "$T/d1.qmp" | grep -o 'kwm-tls[a-z-]*')" ] ||
	fail "TLS objects left at the destination: $(kwm_objects "$T/d1.qmp")"
kwm_qmp "$T/d1.qmp" query-block-exports | grep -q '"return": \[\]' || fail "an NBD export is left"
kwm_qmp "$T/d1.qmp" query-migrate-parameters | grep -q '"tls-creds": ""' ||
	fail "the destination's migration still names TLS credentials"
stop

run none
grep -q 'NOT encrypted (tls: none)' "$T/plan-none" || fail "plan does not say tls: none"
kwm_has "$MIG" "$MRAM" || fail "none: the RAM marker is not in the capture: the test cannot see it"
kwm_has "$NBD" "$MDISK" || fail "none: the disk marker is not in the capture: the test cannot see it"
echo PASS
