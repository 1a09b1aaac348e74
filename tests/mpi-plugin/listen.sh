#!/usr/bin/env bash
# Where the BTL's TCP listeners are bound, seen with `ss -Hltnp` inside a
# network namespace that holds four addresses besides loopback (two veth
# pairs, both ends inside): 10.78.1.1, 10.78.1.2, 10.78.2.1, 10.78.2.2.
#   include: btl_kawarimi_if_include=10.78.1.0/24: each rank listens on
#            10.78.1.1 and 10.78.1.2 only, both on one port;
#   default: btl_kawarimi_if_include empty: on the four non-loopback
#            addresses (what the modex publishes), not on loopback, never
#            on the wildcard;
#   taken:   btl_kawarimi_port=P while another socket holds 10.78.1.2:P:
#            the BTL disables itself with an error naming 10.78.1.2 and P
#            (with self,kawarimi only, the job cannot start).
# Args: <component dir> <prog dir>
set -u
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/netns-lib.sh"
kwb_init "$@"

if [ "$(id -u)" != 0 ]; then
	echo "SKIP: network namespaces need root"
	exit 77
fi
command -v ip >/dev/null && command -v ss >/dev/null || { echo "SKIP: iproute2 missing"; exit 77; }

NS=kwb-listen
d=$(mktemp -d /tmp/kwb-listen.XXXXXX)
job= holder=
cleanup() {
	[ -n "$job" ] && kill "$job" 2>/dev/null
	[ -n "$holder" ] && kill "$holder" 2>/dev/null
	sleep 0.2
	kwn_del $NS
	rm -rf "$d"
}
trap cleanup EXIT
kwn_del $NS
kwn_add $NS && kwn_veth $NS kwla $NS kwlb 10.78.1 && kwn_veth $NS kwlc $NS kwld 10.78.2 || {
	echo "FAIL: cannot set up the namespace"
	exit 1
}

# job NAME IF_INCLUDE [MPIRUN ARGS...]: two ranks of kwb-hold in the
# namespace, in the background, output in $d/NAME.out.
job() {
	local name=$1 inc=$2
	shift 2
	rm -f "$d/stop"
	ip netns exec $NS timeout 120 mpirun --oversubscribe -np 2 --mca pml ob1 \
		--mca btl self,kawarimi --mca btl_kawarimi_if_include "$inc" \
		--mca btl_kawarimi_agent_socket "" --mca btl_kawarimi_verbose 1 "$@" \
		"$KWB_PROG_DIR/kwb-hold" "$d/stop" >"$d/$name.out" 2>&1 &
	job=$!
}

# listeners: "PID ADDR PORT" for every listening TCP socket of kwb-hold.
listeners() {
	ip netns exec $NS ss -Hltnp | sed -n \
		's/^LISTEN *[0-9]* *[0-9]* *\([0-9.*]*\):\([0-9]*\) .*"kwb-hold",pid=\([0-9]*\),.*/\3 \1 \2/p' |
		sort
}

# expect NAME "ADDR ADDR...": every rank listens on exactly these
# addresses, on one port per rank; waits up to 30 s for both ranks.
expect() {
	local name=$1 want=$2 i pids pid got ports ok
	for i in $(seq 150); do
		ok=1
		pids=$(listeners | awk '{print $1}' | sort -u)
		[ "$(echo "$pids" | grep -c .)" -eq 2 ] || ok=0
		for pid in $pids; do
			got=$(listeners | awk -v p="$pid" '$1 == p {print $2}' | sort | paste -sd' ')
			[ "$got" = "$want" ] || ok=0
		done
		[ $ok -eq 1 ] && break
		sleep 0.2
	done
	echo "$name: listening sockets of kwb-hold (pid address port):"
	listeners | sed 's/^/  /'
	if [ $ok -ne 1 ]; then
		echo "FAIL: $name: each of the 2 ranks must listen on exactly: $want"
		return 1
	fi
	for pid in $pids; do
		ports=$(listeners | awk -v p="$pid" '$1 == p {print $3}' | sort -u | grep -c .)
		[ "$ports" -eq 1 ] || { echo "FAIL: $name: rank pid $pid listens on $ports ports"; return 1; }
	done
	echo "$name: OK, each rank on $want"
}

# finish NAME: stops the job; it must have run clean.
finish() {
	local name=$1 rc
	touch "$d/stop"
	wait $job
	rc=$?
	job=
	cat "$d/$name.out"
	[ $rc -eq 0 ] || { echo "FAIL: $name: mpirun exited $rc"; return 1; }
	grep -q "kwb-hold: [0-9]* rounds: OK" "$d/$name.out" ||
		{ echo "FAIL: $name: no OK from rank 0"; return 1; }
}

fail=0
job include 10.78.1.0/24
expect include "10.78.1.1 10.78.1.2" || fail=1
finish include || fail=1

job default ""
expect default "10.78.1.1 10.78.1.2 10.78.2.1 10.78.2.2" || fail=1
finish default || fail=1

port=47811
ip netns exec $NS python3 -c '
import socket, sys, time
s = socket.socket()
s.bind(("10.78.1.2", int(sys.argv[1])))
s.listen()
open(sys.argv[2], "w").close()
time.sleep(120)' $port "$d/held" &
holder=$!
for _ in $(seq 50); do
	[ -e "$d/held" ] && break
	sleep 0.1
done
job taken 10.78.1.0/24 --mca btl_kawarimi_port $port
wait $job
rc=$?
job=
cat "$d/taken.out"
if [ $rc -eq 0 ] || [ $rc -eq 124 ]; then
	echo "FAIL: taken: mpirun exited $rc; expected a failed start"
	fail=1
fi
if ! grep -q "btl:kawarimi: listening on 10\.78\.1\.2 port $port .*Address already in use; the BTL is disabled" \
	"$d/taken.out"; then
	echo "FAIL: taken: no error naming 10.78.1.2 port $port"
	fail=1
fi
[ $fail -eq 0 ] && echo "PASS: the listeners are on the included addresses only"
exit $fail
