#!/usr/bin/env bash
# TLS that must not let the VM through, each rolled back cleanly: the
# source keeps running with its disk untouched, no block job, no export,
# no TLS object left at either end.
#  1. a source-dn that is not the source's certificate's: the destination's
#     NBD server refuses the source in the TLS handshake (storage phase);
#  2. the same with storage: shared: the destination's migration listener
#     refuses it (memory phase);
#  3. a client certificate from another CA: the source's QEMU refuses to
#     load credentials its own CA does not vouch for (object-add).  Both
#     ends read one tls.dir path; here both QEMUs share one host, so that
#     is where a wrong CA shows.
. "$(dirname "$0")/lib.sh"

DN=$(kwm_pki "$T/pki")
kwm_pki "$T/other" intruder >/dev/null
# A directory whose CA and server certificate are right, its client one
# from the other CA.
mkdir -p "$T/mixed"
cp "$T/pki"/{ca-cert.pem,server-cert.pem,server-key.pem} "$T/mixed/"
cp "$T/other"/{client-cert.pem,client-key.pem} "$T/mixed/"
kwm_images 1
cp "$T/s1.qcow2" "$T/s1.orig.qcow2"

# refused NAME STORAGE TLS-DIR SOURCE-DN PHASE MESSAGE [DESTINATION-LOG]
refused() {
	local name=$1 storage=$2 dir=$3 dn=$4 phase=$5 msg=$6 dlog=${7:-} pm pn
	read -r pm pn <<<"$(kwm_free_ports 2)"
	rm -f "$T"/*.qmp
	kwm_start_src 1
	kwm_start_dst 1
	kwm_tcp_cluster "$T/c-$name.yaml" "$name" "$storage" "{dir: $dir, source-dn: \"$dn\"}" \
		"$pm" "$pn"
	timeout 120 "$KAWARIMI" migrate "$T/c-$name.yaml" --report "$T/r-$name.json" \
		>"$T/out-$name" 2>&1
	local rc=$?
	cat "$T/out-$name"
	[ $rc -eq 1 ] || fail "$name: exit status $rc, expected 1"
	grep -q "VM vm1 failed in phase $phase" "$T/out-$name" || fail "$name: not failed in $phase"
	grep -q "$msg" "$T/out-$name" || fail "$name: the message does not say '$msg'"
	[ "$(kwm_json "$T/r-$name.json" 'r["result"]')" = rolled-back ] || fail "$name: report result"
	[ "$(kwm_json "$T/r-$name.json" 'r["vms"][0]["rollback"]["complete"]')" = True ] ||
		fail "$name: rollback incomplete"
	[ "$(kwm_status "$T/s1.qmp")" = running ] || fail "$name: source not running"
	kwm_qmp "$T/s1.qmp" query-block-jobs | grep -q '"return": \[\]' || fail "$name: a block job is left"
	kwm_objects "$T/s1.qmp" | grep -q kwm-tls && fail "$name: TLS object left at the source"
	kwm_qmp "$T/s1.qmp" query-migrate-parameters | grep -q '"tls-creds": ""' ||
		fail "$name: the source's migration still names TLS credentials"
	if kwm_alive "$DST_PID_1"; then
		kwm_objects "$T/d1.qmp" | grep -q kwm-tls && fail "$name: TLS object left at the destination"
		kwm_qmp "$T/d1.qmp" query-block-exports | grep -q '"return": \[\]' ||
			fail "$name: an NBD export is left"
	fi
	[ -z "$dlog" ] || grep -q "$dlog" "$T/qemu-d1.log" ||
		fail "$name: the destination's log lacks '$dlog': $(cat "$T/qemu-d1.log")"
	qemu-img compare -U "$T/s1.orig.qcow2" "$T/s1.qcow2" || fail "$name: source disk changed"
	kill "$SRC_PID_1" "$DST_PID_1" 2>/dev/null
	wait "$SRC_PID_1" "$DST_PID_1" 2>/dev/null
	: >"$T/qemu-d1.log"
}

BAD="O=kawarimi-test,CN=someone-else"
refused wrong-dn-nbd incremental "$T/pki" "$BAD" storage "check the CA in tls.dir, tls.source-dn" \
	"authz check for $DN is denied"
refused wrong-dn-memory shared "$T/pki" "$BAD" memory "failed at the source (over TLS: check" \
	"authz check for $DN is denied"
refused wrong-ca shared "$T/mixed" "$DN" memory "client-cert.pem failed validation against"
echo PASS
