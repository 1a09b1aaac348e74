#!/usr/bin/env bash
# kawarimi-agent inside the sandbox its systemd unit gives it, rebuilt
# from the unit file without systemd (none runs as PID 1 here): a mount
# namespace with ProtectSystem=full (/usr, /boot, /efi, /etc read-only),
# ProtectHome=read-only and PrivateTmp, then NoNewPrivileges and the
# CapabilityBoundingSet through setpriv.  The agent must work as it does
# outside: hello, inventory, two real MPI ranks (the kawarimi BTL, a
# continuous PingPong with --check) registering, quiesced and resumed, a
# resume hook run and a PCI rescan (into a stand-in sysfs file: not the
# host's bus).  The hook shows that the sandbox holds: /usr cannot be
# written, /tmp is private, the capability bounding set is the unit's.
# (RestrictAddressFamilies, SystemCallArchitectures, RestrictNamespaces and
# the Protect* settings that systemd enforces with seccomp are not rebuilt.)
# The ranks and a process holding the stand-in HCA run as another user, as
# in a guest, so that the agent needs its capabilities to see them.
#
# Usage: agent-sandbox.sh AGENT KAWARIMI UNIT-FILE PINGPONG BTL-DIR
set -u
AGENT=$1 KAWARIMI=$2 UNIT=$3 PINGPONG=$4 BTL_DIR=$5
[ "$(id -u)" -eq 0 ] || { echo "SKIP: the sandbox needs root (mount namespace)"; exit 77; }
for t in unshare setpriv mpirun; do
	command -v $t >/dev/null || { echo "SKIP: $t not installed"; exit 77; }
done
fail() { echo "FAIL: $*" >&2; [ -f "$R/agent.log" ] && tail -20 "$R/agent.log" >&2; exit 1; }

prop() { sed -n "s/^$1=//p" "$UNIT" | tail -1; }
[ "$(prop ProtectSystem)" = full ] || fail "the unit's ProtectSystem is '$(prop ProtectSystem)'; this test rebuilds 'full'"
[ "$(prop ProtectHome)" = read-only ] || fail "the unit's ProtectHome is '$(prop ProtectHome)'"
[ "$(prop PrivateTmp)" = yes ] || fail "the unit's PrivateTmp is '$(prop PrivateTmp)'"
[ "$(prop NoNewPrivileges)" = yes ] || fail "the unit's NoNewPrivileges is '$(prop NoNewPrivileges)'"
caps=$(prop CapabilityBoundingSet)
[ -n "$caps" ] || fail "the unit sets no CapabilityBoundingSet"
bset=-all
for c in $caps; do bset+=",+$(tr 'A-Z' 'a-z' <<<"${c#CAP_}")"; done

# /run: not private in the unit, where the ranks reach the agent's socket.
R=$(mktemp -d /run/kw-sandbox.XXXXXX)
APID= MPID=
cleanup() {
	[ -n "$MPID" ] && kill "$MPID" 2>/dev/null
	[ -n "$APID" ] && kill "$APID" 2>/dev/null
	wait 2>/dev/null
	rm -rf "$R"
}
trap cleanup EXIT
mkdir -p "$R/sys/bus/pci" "$R/dev/infiniband" && : >"$R/sys/bus/pci/rescan" &&
	: >"$R/dev/infiniband/uverbs0" && chmod 0755 "$R" "$R/dev" "$R/dev/infiniband" &&
	chmod 0666 "$R/dev/infiniband/uverbs0" || fail "the stand-in /sys and /dev"

# The build may live under /tmp (CI clones there), which the private /tmp
# hides: the agent and the libraries of ours it loads go along to $R, as
# an installed agent has them under /usr.
mkdir -p "$R/lib" && cp "$AGENT" "$R/kawarimi-agent" || fail "copying the agent"
for l in $(ldd "$AGENT" | awk '$3 ~ /^\// && $3 !~ /^\/(usr|lib)/ {print $3}'); do
	cp "$l" "$R/lib/" || fail "copying $l"
done
LD_LIBRARY_PATH=$R/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} \
KAWARIMI_AGENT_SYS_ROOT=$R/sys KAWARIMI_AGENT_DEV_ROOT=$R/dev unshare --mount --propagation private sh -ec '
	ro() { [ -d "$1" ] || return 0; mount --bind "$1" "$1"; mount -o remount,bind,ro "$1"; }
	for d in /usr /boot /efi /etc /home /root; do ro "$d"; done
	mount -t tmpfs tmpfs /tmp
	mount -t tmpfs tmpfs /var/tmp
	exec setpriv --no-new-privs --bounding-set "$1" --inh-caps -all "$2" --foreground \
		--channel "listen:$3/ch.sock" --socket "$3/agent.sock" -v' _ "$bset" "$R/kawarimi-agent" "$R" \
	2>"$R/agent.log" &
APID=$!
agent() { "$KAWARIMI" agent --timeout 60 "$R/ch.sock" "$@"; }
for _ in $(seq 1 100); do
	agent hello >/dev/null 2>&1 && break
	sleep 0.1
done
agent hello >/dev/null || fail "no hello from the sandboxed agent"
agent inventory | grep -q '"pci"' || fail "inventory: $(agent inventory 2>&1 | head -5)"

# Another user's process holding the "HCA" open: the agent must see it
# through /proc/PID/fd (root with the unit's capabilities) and refuse.
setpriv --reuid=65534 --regid=65534 --clear-groups sh -c 'exec 3<"$1"; exec sleep 60' _ \
	"$R/dev/infiniband/uverbs0" &
HPID=$!
sleep 0.3
out=$(agent quiesce '{"deadline-ms": 5000}' 2>&1) && fail "quiesce with a holder succeeded: $out"
grep -q "DeviceBusy: process $HPID (sleep) holds $R/dev/infiniband/uverbs0" <<<"$out" ||
	fail "quiesce with another user's holder: $out"
kill $HPID; wait $HPID 2>/dev/null
agent resume '{"fabrics": ["tcp"], "rescan": false}' >/dev/null 2>&1	# the refused quiesce left it quiesced

# The ranks run as another user (nobody), as a job does: the agent, root
# with the unit's capabilities only, must still see them (/proc/PID/fd).
# The unit gives the socket no group (kawarimi-agent --group), so it is
# opened to them here.
chmod 0755 "$R" && chmod 0666 "$R/agent.sock" || fail "opening the ranks' socket"
export OMPI_MCA_mca_base_component_path="$BTL_DIR:/usr/lib/x86_64-linux-gnu/openmpi/lib/openmpi3"
export ASAN_OPTIONS=detect_leaks=0 HOME=/tmp
timeout 120 setpriv --reuid=65534 --regid=65534 --clear-groups mpirun -np 2 --mca pml ob1 --mca btl self,kawarimi --mca btl_kawarimi_if_include lo \
	--mca btl_kawarimi_agent_socket "$R/agent.sock" "$PINGPONG" --continuous --duration 8 \
	--round-ms 50 --check >"$R/pp.log" 2>&1 &
MPID=$!
for _ in $(seq 1 300); do
	[ "$(agent status 2>/dev/null | grep -c '"pid"')" -ge 2 ] && break
	sleep 0.1
done
[ "$(agent status | grep -c '"pid"')" -ge 2 ] || fail "the ranks did not register: $(agent status)"

q=$(agent quiesce '{"deadline-ms": 20000}') || fail "quiesce: $q"
grep -q '"holders-unreadable": 0' <<<"$q" || fail "the agent could not read every process's fds: $q"
hook='touch /usr/kw-sandbox-probe 2>/dev/null && echo usr-writable || echo usr-read-only
	ls /tmp | wc -l; grep CapBnd /proc/self/status'
r=$(agent resume "$(python3 -c 'import json, sys; print(json.dumps({"fabrics": ["tcp"], "rescan": True, "hook": sys.argv[1]}))' "$hook")") ||
	fail "resume: $r"
python3 - "$r" "$caps" <<'PY' || fail "resume in the sandbox: $r"
import json, sys
r, caps = json.loads(sys.argv[1]), sys.argv[2].split()
assert r["rescan"] == "done", r["rescan"]
h = r["hook"]
assert h["exit-status"] == 0, h
out = h["output"].split("\n")
assert out[0] == "usr-read-only", out
assert out[1] == "0", f"/tmp is not private: {out[1]} entries"
have = int(out[2].split()[1], 16)
bits = {"CAP_CHOWN": 0, "CAP_DAC_OVERRIDE": 1, "CAP_DAC_READ_SEARCH": 2, "CAP_FOWNER": 3,
        "CAP_KILL": 5, "CAP_NET_ADMIN": 12, "CAP_IPC_LOCK": 14, "CAP_SYS_MODULE": 16,
        "CAP_SYS_PTRACE": 19, "CAP_SYS_ADMIN": 21}
want = sum(1 << bits[c] for c in caps)
assert have == want, f"CapBnd {have:#x}, the unit's {want:#x}"
assert len(r["ranks"]) == 2, r["ranks"]
PY
[ -e /usr/kw-sandbox-probe ] && { rm -f /usr/kw-sandbox-probe; fail "the hook wrote /usr"; }
wait $MPID
rc=$?
MPID=
tail -2 "$R/pp.log"
[ $rc -eq 0 ] && grep -q 'all payloads verified' "$R/pp.log" || fail "the MPI job: $(tail -5 "$R/pp.log")"
echo PASS
