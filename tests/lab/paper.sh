#!/usr/bin/env bash
# bench/paper's whole chain, cut to the bone (--smoke, ~3 min): a small
# storage case (kawarimi and QEMU's old block migration, one VM, A->B) and
# one A->B->A of the lab with the MPI job and PingPong running.  Checks
# that every part of the report has measured numbers, that the CSVs and
# pictures were written from them, and that nothing is left behind.  It
# checks no figure's size: speed is the benchmark's to report.
TEST_PREFIX=kwtpp
. "$(dirname "$0")/lib.sh"

out=$BUILD/paper-smoke
KWL_PREFIX=$TEST_PREFIX "$SRC/bench/paper" --smoke --out "$out" >"$BUILD/paper-smoke.log" 2>&1
rc=$?
cat "$BUILD/paper-smoke.log"
[ $rc -eq 0 ] || fail "bench/paper --smoke exited $rc"
grep -q '^RESULT: OK' "$BUILD/paper-smoke.log" || fail "no RESULT: OK from bench/paper"
r=$out/report.md
[ -s "$r" ] || die "no $r"
grep -q 'Not measured' "$r" && fail "a part of the report was not measured: $(grep -B2 'Not measured' "$r" | head -3)"
for s in "## 1. Storage" "## 2. Migration overhead" "## 3. PingPong goodput" "## 4. The pause" "## 5. Against"; do
	grep -q "^$s" "$r" || fail "the report has no section '$s'"
done
grep -q '^| A->B #1 | [0-9]' "$r" || fail "no measured A->B row in the report"
grep -q '^| B->A #1 | [0-9]' "$r" || fail "no measured B->A row in the report"
grep -q '^| incremental | A->B | 1 | [0-9.]* ([0-9.-]*) | [0-9.]* ([0-9.-]*) | [0-9.]* (' "$r" ||
	fail "no kawarimi against qemu-blk row in the report"
for f in storage.csv blockmig.csv phases.csv goodput.csv pauses.csv; do
	[ "$(wc -l <"$out/$f" 2>/dev/null || echo 0)" -ge 2 ] || fail "$f has no data row"
done
# the B->A row of the phases: the agent's link wait was traced (bench/paper-ssh.py)
awk -F, 'NR > 1 && $2 == "b2a" && $11 != "" { ok = 1 } END { exit !ok }' "$out/phases.csv" ||
	fail "no link-up time for B->A in phases.csv (the symvirt trace)"
for f in goodput.png phases.png storage.png; do
	head -c 8 "$out/$f" 2>/dev/null | grep -q PNG || fail "$f is not a PNG"
done
ip netns list | grep -q "^$TEST_PREFIX" && fail "namespaces left: $(ip netns list | grep "^$TEST_PREFIX")"
finish
