#!/usr/bin/env bash
# --hold-job (the original design) with shared storage, two VMs: each job
# is quiesced at the source before the memory migration and resumed only at
# the destination, so its one blackout span covers the memory migration;
# the quiesce and resume barriers hold across the VMs (every quiesce before
# any memory migration, every cont before any resume); no disk moves and no
# NBD server is started.  Run on a terminal, to see the live display.
. "$(dirname "$0")/lib.sh"
command -v script >/dev/null || { echo "SKIP: no script(1)"; exit 77; }

kwm_images 2
kwm_agents 2
for i in 1 2; do
	kwm_start_src $i
	# Shared storage: the destination opens the same image (inactive
	# until the migration completes, so QEMU's image locking allows it).
	"${QEMU_BASE[@]}" -qmp "unix:$T/d$i.qmp,server=on,wait=off" \
		-blockdev "driver=qcow2,node-name=disk0,file.driver=file,file.filename=$T/s$i.qcow2" \
		-device virtio-blk-pci,drive=disk0,id=vblk0 -incoming defer -S 2>>"$T/qemu-d$i.log" &
	PIDS+=($!)
	kwm_wait_sock "$T/d$i.qmp"
done
STORAGE=shared AGENTS=yes PARALLEL=1 kwm_cluster "$T/c.yaml" 2

# script(1) gives it a terminal: the live lines per VM and the cluster's.
script -qec "timeout 120 '$KAWARIMI' migrate '$T/c.yaml' --hold-job --report '$T/r.json' \
	--journal '$T/j.log'" /dev/null >"$T/out" 2>&1
rc=$?
cat -v "$T/out"
[ $rc -eq 0 ] || fail "exit status $rc"
grep -q 'cluster test: 2/2 VMs done' "$T/out" || fail "no cluster line on the TTY"
grep -qE '  vm2 +resume +done' "$T/out" || fail "no VM line on the TTY"
grep -q $'\e\[' "$T/out" || fail "the TTY display is not redrawn in place"
grep -q nbd-server-start "$T/j.log" && fail "shared storage started an NBD server"
for i in 1 2; do
	[ "$(kwm_status "$T/d$i.qmp")" = running ] || fail "vm$i destination not running"
	[ "$(awk '{print $2 $3}' "$T/agent$i.log" | tr '\n' ' ')" = "0hello 0quiesce 1hello 1resume " ] ||
		fail "vm$i's agent saw: $(awk '{print $2, $3}' "$T/agent$i.log")"
done
# The barrier, seen by the agents: the last quiesce came before the first resume.
[ "$(cat "$T"/agent*.log | awk '$3 == "quiesce" {print $1}' | sort -n | tail -1)" \< \
  "$(cat "$T"/agent*.log | awk '$3 == "resume" {print $1}' | sort -n | head -1)" ] ||
	fail "a resume came before every job was quiesced"
python3 - "$T/r.json" <<'PY' || fail "report"
import json, sys
r = json.load(open(sys.argv[1]))
ph = {v["name"]: {p["phase"]: p for p in v["phases"]} for v in r["vms"]}
for before, after in (("quiesce", "memory"), ("switchover", "resume")):
    assert max(v[before]["end"] for v in ph.values()) <= min(v[after]["start"] for v in ph.values()), \
        f"barrier {before} -> {after}"
for v in r["vms"]:
    p = ph[v["name"]]
    assert "storage" not in p and "unplug" not in p and "resume-source" not in p, p.keys()
    s = v["blackout"]["spans"]
    assert len(s) == 1 and s[0]["why"] == "held", s
    assert s[0]["start"] <= p["memory"]["start"] and s[0]["end"] >= p["switchover"]["end"], s
    assert v["blackout"]["includes-memory-migration"] is True
PY
echo PASS
