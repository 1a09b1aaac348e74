#!/usr/bin/env bash
# kawarimi-pingpong over the kawarimi BTL: IMB PingPong format (header,
# columns, sizes, repetitions), --check verifies payloads, --continuous
# prints timestamped rounds, --offset places the buffers (and the GET
# replies' pads follow them: every payload checked at two offsets).
# Args: <component dir> <prog dir> <pingpong>.
set -u
. "$(dirname "$0")/lib.sh"
kwb_init "$@"
pp=${KWB_ARGS[0]}
run() {
	timeout 120 mpirun --oversubscribe -np 2 --mca pml ob1 --mca btl self,kawarimi \
		--mca btl_kawarimi_if_include lo --mca btl_kawarimi_agent_socket "" "$pp" "$@" 2>&1
}
fail=0
out=$(run --check --max-log 16) || { echo "$out"; echo "FAIL: pingpong exited non-zero"; exit 1; }
echo "$out"
echo "$out" | grep -qx "       #bytes #repetitions      t\[usec\]   Mbytes/sec" ||
	{ echo "FAIL: IMB column header missing"; fail=1; }
echo "$out" | grep -q "^# #processes = 2" || { echo "FAIL: IMB process header missing"; fail=1; }
rows=$(echo "$out" | awk 'NF == 4 && $1 ~ /^[0-9]+$/' | wc -l)
[ "$rows" -eq 18 ] || { echo "FAIL: $rows size rows, expected 18 (0 and 2^0..2^16)"; fail=1; }
# repetitions min(1000, max(1, 40 MiB / size)): 1000 up to 32 KiB, 640 at 64 KiB
echo "$out" | grep -Eq "^ +65536 +640 " || { echo "FAIL: repetitions at 64 KiB not 640"; fail=1; }
echo "$out" | grep -Eq "^ +0 +1000 " || { echo "FAIL: repetitions at 0 B not 1000"; fail=1; }
echo "$out" | grep -q "# check: all payloads verified (0 payload errors)" ||
	{ echo "FAIL: --check did not verify"; fail=1; }
out=$(run --continuous --check --size 100000 --round-ms 50 --rounds 5) ||
	{ echo "$out"; echo "FAIL: continuous run exited non-zero"; exit 1; }
echo "$out"
lines=$(echo "$out" | grep -Ec "^20[0-9]{2}-[0-9]{2}-[0-9]{2}T[0-9:.]+Z +[0-9]+ +[0-9]+ ")
[ "$lines" -eq 5 ] || { echo "FAIL: $lines timestamped rounds, expected 5"; fail=1; }
echo "$out" | grep -q "# check: all payloads verified (0 payload errors)" ||
	{ echo "FAIL: --continuous --check did not verify"; fail=1; }
for off in 0 40; do
	out=$(run --check --max-log 18 --offset $off) ||
		{ echo "$out"; echo "FAIL: --offset $off exited non-zero"; exit 1; }
	echo "$out" | grep -q "# check: all payloads verified (0 payload errors)" ||
		{ echo "$out"; echo "FAIL: --offset $off --check did not verify"; fail=1; }
done
if out=$(run --offset 4096); then
	echo "$out"; echo "FAIL: --offset 4096 accepted"; fail=1
elif ! echo "$out" | grep -q -- "--offset 0..4095"; then
	echo "$out"; echo "FAIL: --offset 4096 refused without naming the range"; fail=1
fi
[ $fail -eq 0 ] && echo "PASS"
exit $fail
