#!/usr/bin/env bash
# The coordinator at scale, simulated (README.md): `kawarimi migrate` of
# 10, 100 and 1000 VMs whose QEMUs are kwsim-qemu, and a table of what the
# coordinator cost (CPU per VM, loop turns, timer lateness, max RSS) and
# how the run's makespan compares with the bound total bytes / WAN cap.
#
#   bench/scale/run.sh [BUILD_DIR]          (default: build-dev)
#
# Knobs (environment): SIZES ("10 100 1000"), WAN (the cap, bytes/s, both
# the cluster file's limits.bandwidth and the simulated link: 12.5e9, i.e.
# 100 Gbit/s), PARALLEL (32), RAM (256 MiB per VM), DISK (the overlay each
# VM's mirror copies, 32 MiB), DIRTY (the guests' dirty rate while memory
# migrates, bytes/s: 0), STORAGE (incremental | shared), OUTPUT (quiet:
# `--quiet`; plain: the phase lines to a file; tty: the live display on a
# pseudo-terminal via script(1), to a file), NOFILE (a soft RLIMIT_NOFILE
# to run kawarimi under, e.g. 1024 as a login shell has it; default: as
# inherited), KAWARIMI (the binary to measure; default BUILD_DIR's).
# Every run's files stay in $OUT (default /tmp/kwscale.XXXXXX).
set -u
here=$(cd "$(dirname "$0")" && pwd)
build=${1:-$here/../../build-dev}
build=$(cd "$build" && pwd)
KAWARIMI=${KAWARIMI:-$build/migrate/kawarimi}
SIM=$build/bench/scale/kwsim-qemu
SIZES=${SIZES:-10 100 1000}
WAN=${WAN:-12.5e9}
PARALLEL=${PARALLEL:-32}
RAM=${RAM:-268435456}
DISK=${DISK:-33554432}
DIRTY=${DIRTY:-0}
STORAGE=${STORAGE:-incremental}
OUTPUT=${OUTPUT:-quiet}
NOFILE=${NOFILE:-}
OUT=${OUT:-$(mktemp -d /tmp/kwscale.XXXXXX)}
for f in "$KAWARIMI" "$SIM"; do
	[ -x "$f" ] || { echo "run.sh: $f not built (ninja -C $build)" >&2; exit 2; }
done
command -v python3 >/dev/null || { echo "run.sh: needs python3" >&2; exit 2; }
SIMPID=
trap '[ -n "$SIMPID" ] && kill "$SIMPID" 2>/dev/null' EXIT

# cluster N DIR: the cluster file, no agents and no HCAs.
cluster() {
	python3 - "$1" "$2" "$WAN" "$PARALLEL" "$STORAGE" <<'PY'
import sys
n, d, wan, par, storage = int(sys.argv[1]), sys.argv[2], float(sys.argv[3]), sys.argv[4], sys.argv[5]
with open(d + "/c.yaml", "w") as f:
    f.write("format: 1\ncluster: kwscale\nstorage: %s\nlimits:\n  parallel: %s\n"
            "  bandwidth: %dB/s\nvms:\n" % (storage, par, wan))
    for i in range(1, n + 1):
        f.write("  - name: vm%d\n"
                "    source: {qmp: %s/s%d.qmp, symvirt: none}\n"
                "    destination:\n      qmp: %s/d%d.qmp\n      symvirt: none\n"
                "      migration: {listen: \"unix:%s/m%d.sock\"}\n"
                "      nbd: {listen: \"unix:%s/nbd%d.sock\"}\n"
                "    disks: [{source: disk0}]\n" % (i, d, i, d, i, d, i, d, i))
PY
}

# measure DIR: runs kawarimi and prints its rusage as JSON (children's).
measure() {
	python3 - "$1" "$KAWARIMI" "$OUTPUT" "$NOFILE" <<'PY'
import json, os, resource, subprocess, sys, time
d, kw, output, nofile = sys.argv[1:5]
cmd = [kw, "migrate", d + "/c.yaml", "--report", d + "/r.json"]
if output == "quiet":
    cmd.append("--quiet")
env = dict(os.environ, KAWARIMI_STATE_DIR=d + "/state")
def limit():
    if nofile:
        resource.setrlimit(resource.RLIMIT_NOFILE,
                           (int(nofile), resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
if output == "tty":
    # script(1) gives kawarimi a pseudo-terminal; its bytes go to a file.
    # Without a terminal of its own script's has no size, and kawarimi
    # draws for 80x24.
    import shlex
    cmd = ["script", "-qfec", " ".join(map(shlex.quote, cmd)) + " 2>" + d + "/err",
           d + "/tty.out"]
t0 = time.monotonic()
with open(d + "/out", "w") as out, open(d + "/err" if output != "tty" else os.devnull, "w") as err:
    rc = subprocess.call(cmd, stdout=out, stderr=err, env=env, preexec_fn=limit)
wall = time.monotonic() - t0
ru = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"rc": rc, "wall": wall, "cpu": ru.ru_utime + ru.ru_stime,
                  "maxrss_kb": ru.ru_maxrss}))
PY
}

printf '%s\n' "kawarimi $KAWARIMI; storage $STORAGE, WAN cap $WAN B/s, parallel $PARALLEL," \
	"per VM: RAM $RAM B, disk overlay $DISK B, dirty $DIRTY B/s; output $OUTPUT${NOFILE:+, RLIMIT_NOFILE soft $NOFILE}"
printf '%6s %-10s %7s %9s %7s %7s %8s %8s %8s %8s %8s %8s %8s %6s\n' VMs result wall_s \
	cpu_ms/VM rss_MB turns/s work_p99 work_max turn_p99 fsyncs fsync_p99 late_max makespan ratio
for n in $SIZES; do
	d=$OUT/n$n
	rm -rf "$d"
	mkdir -p "$d"
	cluster "$n" "$d"
	"$SIM" --dir "$d" --vms "$n" --wan "$WAN" --ram "$RAM" --disk "$DISK" --dirty "$DIRTY" \
		2>"$d/sim.log" &
	SIMPID=$!
	for _ in $(seq 1 100); do
		grep -q listening "$d/sim.log" 2>/dev/null && break
		sleep 0.1
	done
	measure "$d" >"$d/rusage.json"
	kill "$SIMPID" 2>/dev/null
	wait "$SIMPID" 2>/dev/null
	SIMPID=
	python3 - "$d" "$n" "$WAN" <<'PY'
import json, sys
d, n, wan = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
ru = json.load(open(d + "/rusage.json"))
try:
    r = json.load(open(d + "/r.json"))
except Exception:
    r = None
if not r:
    err = open(d + "/err").read().strip().splitlines()
    print("%6d %-10s %8.2f   (no report, rc %d: %s)" % (n, "FAILED", ru["wall"], ru["rc"],
          err[-1][:90] if err else "?"))
    sys.exit(0)
ok = sum(v["result"] == "migrated" for v in r["vms"])
res = r["result"] if ok == n else "%s %d/%d" % (r["result"], ok, n)
make = r["duration-ms"] / 1000
bound = r["totals"]["bytes"] / wan
loop = r.get("coordinator", {}).get("loop", {})
turns = loop.get("turns", 0) / make if make else 0
g = lambda k, q: loop.get(k, {}).get(q)
f = lambda v: ("%8.2f" % (v / 1000)) if v is not None else "%8s" % "-"
syncs = r.get("coordinator", {}).get("journal-syncs")
print("%6d %-10s %7.2f %9.2f %7.1f %7.0f %s %s %s %8s %s %s %8.2f %6.3f" % (
    n, res, ru["wall"], ru["cpu"] * 1000 / n, ru["maxrss_kb"] / 1024, turns,
    f(g("turn-work-us", "p99")), f(g("turn-work-us", "max")), f(g("turn-us", "p99")),
    "-" if syncs is None else syncs, f(g("fsync-us", "p99")), f(g("tick-late-us", "max")),
    make, make / bound if bound else 0))
PY
done
cat <<EOF
(ms: work_p99, work_max: one loop turn less the journal's fsyncs, 99th percentile and
worst; turn_p99: a whole turn; fsync_p99: one journal fsync; late_max: how late the
0.5 s progress tick fired at worst.  s: makespan; ratio: makespan / (total bytes / WAN
cap).  Files in $OUT)
EOF
