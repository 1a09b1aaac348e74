#!/usr/bin/env bash
# A forged HELLO (anyone on the network can connect to a rank's port)
# naming a sender rank outside the job: 2^31, where the endpoint table's
# doubling used to wrap to 0 and spin for ever with the BTL's lock held,
# and NP, one past the last rank. Every rank must close such a connection,
# log the peer's address and the bad rank once, and the job's own traffic
# must go on intact. Args: <component dir> <prog dir>.
set -u
. "$(dirname "$0")/lib.sh"
kwb_init "$@"
np=2
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
timeout 120 mpirun --oversubscribe -np $np --mca pml ob1 --mca btl self,kawarimi \
	--mca btl_kawarimi_if_include lo --mca btl_kawarimi_agent_socket "" \
	"$KWB_PROG_DIR/kwb-hold" "$tmp/stop" >"$tmp/out" 2>&1 &
job=$!
python3 "$(dirname "$0")/kwb-forge-hello.py" $job kwb-hold $np
forge=$?
touch "$tmp/stop"
wait $job
rc=$?
cat "$tmp/out"
[ $forge -eq 0 ] || { echo "FAIL: a forged HELLO was not refused"; exit 1; }
[ $rc -eq 0 ] || { echo "FAIL: mpirun exited $rc"; exit 1; }
grep -q "kwb-hold: [0-9]* rounds: OK" "$tmp/out" || { echo "FAIL: no OK from rank 0"; exit 1; }
for bad in 2147483648 $np; do
	n=$(grep -c "HELLO from 127\.0\.0\.1: HELLO names sender rank $bad but the job has $np ranks" \
		"$tmp/out")
	[ "$n" -eq $np ] || {
		echo "FAIL: $n lines (expected $np, one per rank) name the peer and rank $bad"
		exit 1
	}
done
echo "PASS: $np ranks closed forged HELLOs and kept their traffic intact"
