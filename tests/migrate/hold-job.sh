#!/usr/bin/env bash
# --hold-job (the original design) with shared storage: the job is quiesced
# at the source before the memory migration and resumed only at the
# destination, so its one blackout span covers the memory migration; no
# disk moves and no NBD server is started.
. "$(dirname "$0")/lib.sh"

kwm_images 1
kwm_agents 1
kwm_start_src 1
# Shared storage: the destination opens the same image (inactive until
# the migration completes, so QEMU's image locking allows it).
"${QEMU_BASE[@]}" -qmp "unix:$T/d1.qmp,server=on,wait=off" \
	-blockdev "driver=qcow2,node-name=disk0,file.driver=file,file.filename=$T/s1.qcow2" \
	-device virtio-blk-pci,drive=disk0,id=vblk0 -incoming defer -S 2>>"$T/qemu-d1.log" &
PIDS+=($!)
kwm_wait_sock "$T/d1.qmp"
STORAGE=shared AGENTS=yes kwm_cluster "$T/c.yaml" 1

# On a terminal (script(1) gives it one): the live lines per VM and cluster.
command -v script >/dev/null || { echo "SKIP: no script(1)"; exit 77; }
script -qec "timeout 120 '$KAWARIMI' migrate '$T/c.yaml' --hold-job --report '$T/r.json' \
	--journal '$T/j.log'" /dev/null >"$T/out" 2>&1
rc=$?
cat -v "$T/out"
[ $rc -eq 0 ] || fail "exit status $rc"
grep -q 'cluster test: 1/1 VMs done' "$T/out" || fail "no cluster line on the TTY"
grep -qE '  vm1 +finish +done' "$T/out" || fail "no VM line on the TTY"
grep -q $'\e\[' "$T/out" || fail "the TTY display is not redrawn in place"
[ "$(kwm_status "$T/d1.qmp")" = running ] || fail "destination not running"
grep -q nbd-server-start "$T/j.log" && fail "shared storage started an NBD server"
[ "$(awk '{print $2 $3}' "$T/agent1.log" | tr '\n' ' ')" = "0hello 0quiesce 1hello 1resume " ] ||
	fail "agent saw: $(awk '{print $2, $3}' "$T/agent1.log")"
python3 - "$T/r.json" <<'PY' || fail "blackout"
import json, sys
v = json.load(open(sys.argv[1]))["vms"][0]
ph = {p["phase"]: p for p in v["phases"]}
assert "storage" not in ph and "unplug" not in ph and "resume-source" not in ph, ph.keys()
s = v["blackout"]["spans"]
assert len(s) == 1 and s[0]["why"] == "held", s
assert s[0]["start"] <= ph["memory"]["start"] and s[0]["end"] >= ph["switchover"]["end"], s
assert v["blackout"]["includes-memory-migration"] is True
PY
echo PASS
