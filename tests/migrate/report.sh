#!/usr/bin/env bash
# `kawarimi report` on what a real run wrote: 2 VMs swap a usb-net "HCA"
# (two blackout spans each) with incremental storage under a 20 MB/s cap
# (so progress is sampled), saved both as --report and as a --json stream.
# Both read back to the same table, markdown and JSON; --plot writes a PNG
# with its data and script beside it, the data holding every VM's phases,
# blackouts and transfer curve; bad input is refused with the fix.
. "$(dirname "$0")/lib.sh"
command -v gnuplot >/dev/null || { echo "SKIP: gnuplot not installed"; exit 77; }

HCA='{driver: usb-net, id: hca0, netdev: hn0, bus: xhci.0}'
kwm_images 2
kwm_agents 2
for i in 1 2; do
	kwm_start_src $i -device usb-net,id=hca0,netdev=hn0,bus=xhci.0
	kwm_start_dst $i
done
AGENTS=yes SRC_HCA=$HCA DST_HCA=$HCA BANDWIDTH=20MB/s kwm_cluster "$T/c.yaml" 2
# A continuous PingPong on this machine meanwhile, for its picture.
PP=
if [ -n "${PINGPONG:-}" ] && command -v mpirun >/dev/null; then
	OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 ASAN_OPTIONS=detect_leaks=0 \
		timeout 60 mpirun -np 2 "$PINGPONG" --continuous --duration 4 --plot "$T/pp-live.png" \
		>"$T/pp.out" 2>&1 &
	PP=$!
	# The migration must start within the PingPong's rounds (checked
	# below): wait for its first timestamped round, not a fixed second
	# (under ASan on a loaded machine mpirun took longer to start).
	for _ in $(seq 300); do
		grep -q '^20[0-9][0-9]-' "$T/pp.out" 2>/dev/null && break
		sleep 0.1
	done
fi
timeout 120 "$KAWARIMI" migrate "$T/c.yaml" --json --report "$T/r.json" >"$T/stream" 2>"$T/err"
rc=$?
cat "$T/err"
[ $rc -eq 0 ] || fail "kawarimi migrate exited $rc"

# The same report from both inputs, in every format.
for f in table markdown json; do
	"$KAWARIMI" report "$T/r.json" --format $f >"$T/a.$f" || fail "report r.json --format $f"
	"$KAWARIMI" report "$T/stream" --format $f >"$T/b.$f" || fail "report stream --format $f"
	cmp -s "$T/a.$f" "$T/b.$f" || { diff "$T/a.$f" "$T/b.$f"; fail "$f differs between the inputs"; }
done
cat "$T/a.table"
grep -qE '^vm1 +migrated ' "$T/a.table" || fail "no vm1 row in the table"
grep -qE '^total +completed ' "$T/a.table" || fail "no total row in the table"
grep -q '^| vm2 | migrated |' "$T/a.markdown" || fail "no vm2 row in the markdown"
python3 - "$T/r.json" "$T/a.json" "$T/stream" <<'PY' || fail "json view / field names"
import json, sys
r, a = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
assert r == a, "--format json is not the report"
for v in r["vms"]:
    j = v["job"]
    for k in ("time_elapsed", "setup_time", "downtime", "data_total", "data_processed",
              "data_remaining", "memory_total", "memory_processed", "memory_remaining",
              "memory_dirty_rate", "disk_total", "disk_processed", "disk_remaining"):
        assert k in j, (v["name"], k)
    assert j["disk_processed"] == v["storage"]["bytes"] and j["downtime"] == v["memory"]["downtime-ms"], j
    assert j["data_processed"] == j["disk_processed"] + j["memory_processed"], j
    assert len(v["samples"]) >= 3, v["samples"]
    assert v["samples"][-1]["disk_processed"] == v["storage"]["bytes"], v["samples"][-1]
prog = [json.loads(l) for l in open(sys.argv[3]) if '"progress"' in l]
assert prog, "no progress events"
for e in prog:
    assert e["data_processed"] == e["disk_processed"] + e["memory_processed"], e
    assert "disk_bps" in e and "memory_bps" in e and "time_elapsed" in e, e
PY

# The picture, its data and its script.
mkdir "$T/plot"
"$KAWARIMI" report "$T/r.json" --plot "$T/plot/m.png" >/dev/null 2>"$T/perr" || {
	cat "$T/perr"; fail "report --plot"; }
grep -q "wrote $T/plot/m.png" "$T/perr" || fail "report --plot did not say where: $(cat "$T/perr")"
python3 - "$T/plot" "$T/r.json" <<'PY' || fail "plot files"
import json, struct, sys
d, r = sys.argv[1], json.load(open(sys.argv[2]))
png = open(d + "/m.png", "rb").read()
assert png[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
w, h = struct.unpack(">II", png[16:24])
assert w >= 800 and h >= 400, (w, h)
rows = [l.split() for l in open(d + "/m-phases.dat") if l[0].isdigit()]
for i, v in enumerate(r["vms"]):
    got = {x[3] for x in rows if x[0] == str(i)}
    assert got == {v["name"]}, got
    assert sum(1 for x in rows if x[0] == str(i)) == len(v["phases"]), (v["name"], rows)
black = [l.split() for l in open(d + "/m-blackout.dat") if l[0].isdigit()]
assert sorted((x[3], x[4]) for x in black) == [("vm1", "replug"), ("vm1", "unplug"),
                                                ("vm2", "replug"), ("vm2", "unplug")], black
blocks = open(d + "/m-transfer.dat").read().split("\n\n\n")
assert len([b for b in blocks if b.strip()]) == 2, blocks
assert "m-phases.dat" in open(d + "/m.gp").read()
PY
# The script runs again by itself, as a researcher would after restyling.
rm "$T/plot/m.png"
(cd "$T/plot" && gnuplot m.gp) && [ -s "$T/plot/m.png" ] || fail "gnuplot m.gp does not redraw"

# kawarimi-pingpong's pictures: its own at the end of the run, and one
# drawn again from its saved output with the migration's phases on it.
if [ -n "$PP" ]; then
	wait $PP || { cat "$T/pp.out"; fail "kawarimi-pingpong --continuous --plot"; }
	[ -s "$T/pp-live.png" ] && [ -s "$T/pp-live.txt" ] || fail "no pingpong picture or output"
	"$PINGPONG" --from "$T/pp-live.txt" --plot "$T/pp.png" --report "$T/r.json" 2>"$T/pperr" ||
		{ cat "$T/pperr"; fail "kawarimi-pingpong --from --report"; }
	python3 - "$T" "$T/r.json" <<'PY' || fail "pingpong picture data"
import json, sys
d, r = sys.argv[1], json.load(open(sys.argv[2]))
rows = [l.split() for l in open(d + "/pp-pingpong.dat") if not l.startswith("#")]
assert len(rows) >= 20 and float(rows[-1][0]) >= 3, rows[-1:]
ph = [l.split() for l in open(d + "/pp-cluster-phases.dat") if l[0].isalpha() and len(l.split()) == 3]
ran = {p["phase"] for v in r["vms"] for p in v["phases"]}
assert {p[0] for p in ph} == ran, (ph, ran)
# The migration ran within the PingPong's rounds: its phases on the axis.
assert all(0 < float(p[1]) <= float(p[2]) < float(rows[-1][0]) for p in ph), ph
gp = open(d + "/pp.gp").read()
assert gp.count("set object") == len(ph) + 4, gp     # a rect per phase and per blackout
PY
	"$PINGPONG" --from "$T/pp-live.txt" --plot "$T/pp.jpg" 2>"$T/pperr" &&
		fail "pingpong --plot pp.jpg accepted"
	grep -q -- "--plot '$T/pp.jpg': name a .png file" "$T/pperr" || fail "pingpong: $(cat "$T/pperr")"
else
	echo "no mpirun or kawarimi-pingpong: its pictures not checked"
fi

# Bad input: the message names the file or value and the fix.
expect_fail() {
	local want=$1 code=$2
	shift 2
	"$KAWARIMI" report "$@" >/dev/null 2>"$T/e"
	local rc=$?
	[ $rc -eq "$code" ] || fail "report $*: exit $rc, expected $code"
	grep -qF -- "$want" "$T/e" || fail "report $*: said '$(cat "$T/e")', expected '$want'"
}
head -3 "$T/stream" >"$T/cut"
echo '{"report": "something-else", "version": 1}' >"$T/other"
expect_fail "$T/cut: no \"report\" event" 2 "$T/cut"
expect_fail "expected 'kawarimi-migration'" 2 "$T/other"
expect_fail "$T/c.yaml:1: not a JSON object" 2 "$T/c.yaml"
expect_fail "cannot read $T/none" 2 "$T/none"
expect_fail "--format 'html': write table, json or markdown" 2 "$T/r.json" --format html
expect_fail "--plot 'x.jpg': name a .png file" 2 "$T/r.json" --plot x.jpg
env PATH=/nonexistent "$KAWARIMI" report "$T/r.json" --plot "$T/plot/n.png" >/dev/null 2>"$T/e"
[ $? -eq 1 ] && grep -q "gnuplot not found: install it (Debian: apt-get install gnuplot-nox)" "$T/e" ||
	fail "without gnuplot: $(cat "$T/e")"
echo PASS
