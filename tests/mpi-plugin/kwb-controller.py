#!/usr/bin/env python3
"""Test controller playing the kawarimi agent's part on each node's control
socket (docs/symvirt-protocol.md, "Agent <-> ranks"), driving the scenario
of the namespace tests. Exit 0 only if every check passed.

kwb-controller.py --dir D --nodes n0,n1 --scenario switch|cut --fast 10.77.1. --slow 10.77.2.
Node sockets are D/<node>.sock. Network changes are made by calling
D/net.sh <action> (written by the test script).
"""
import argparse, json, os, re, socket, subprocess, sys, time, select


# The network that appears during the move in the peers scenario.
NEW = "10.77.4."


def log(msg):
    print(f"[controller {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# How long a rank may take to answer a command that needs no network work.
# Generous: it catches a rank that stopped answering, not a slow machine
# (CI's 2 cores also run TCG guests; a 5 s limit failed there once).
STATUS_TIMEOUT = 20


class Fail(Exception):
    pass


class Rank:
    def __init__(self, node, sock):
        self.node, self.sock, self.buf, self.next_id = node, sock, b"", 100
        self.info = None

    def lines(self, timeout):
        """Yields parsed messages until timeout."""
        end = time.monotonic() + timeout
        while True:
            while b"\n" in self.buf:
                line, self.buf = self.buf.split(b"\n", 1)
                yield json.loads(line)
            left = end - time.monotonic()
            if left <= 0:
                return
            r, _, _ = select.select([self.sock], [], [], left)
            if r:
                data = self.sock.recv(65536)
                if not data:
                    raise Fail(f"{self.node}: rank closed the control socket")
                self.buf += data

    def send(self, obj):
        self.sock.sendall((json.dumps(obj) + "\n").encode())

    def command(self, name, args=None):
        self.next_id += 1
        msg = {"execute": name, "id": self.next_id}
        if args is not None:
            msg["arguments"] = args
        self.send(msg)
        return self.next_id

    def reply(self, cid, timeout):
        t0 = time.monotonic()
        for m in self.lines(timeout):
            if m.get("id") == cid:
                took = time.monotonic() - t0
                if took > 2:
                    # Not a failure (a loaded machine stalls processes),
                    # but worth seeing when a run fails later.
                    log(f"{self.node}: slow reply to command {cid}: {took:.1f} s")
                return m
            log(f"{self.node}: unexpected message {m}")
        raise Fail(f"{self.node}: no reply to command {cid} within {timeout} s")


def accept_ranks(listeners, timeout, per_node=1):
    ranks = []
    end = time.monotonic() + timeout
    pending = dict(listeners)
    todo = {n: per_node for n in listeners}
    while pending:
        left = end - time.monotonic()
        if left <= 0:
            raise Fail(f"ranks on {sorted(pending)} did not connect within {timeout} s")
        r, _, _ = select.select(list(pending.values()), [], [], left)
        for ls in r:
            node = [n for n, s in pending.items() if s is ls][0]
            conn, _ = ls.accept()
            rk = Rank(node, conn)
            for m in rk.lines(10):
                if m.get("execute") != "register":
                    raise Fail(f"{node}: first message is not register: {m}")
                a = m.get("arguments", {})
                for key, typ in (("pid", int), ("jobid", str), ("rank", int), ("paths", list)):
                    if not isinstance(a.get(key), typ):
                        raise Fail(f"{node}: register argument {key} missing or wrong: {m}")
                rk.info = a
                rk.send({"return": {"version": 1}, "id": m.get("id")})
                log(f"{node}: rank {a['rank']} registered (pid {a['pid']}, paths {a['paths']})")
                break
            ranks.append(rk)
            todo[node] -= 1
            if not todo[node]:
                del pending[node]
    return sorted(ranks, key=lambda r: r.info["rank"])


def all_cmd(ranks, name, args, timeout):
    t0 = time.monotonic()
    ids = [(r, r.command(name, args)) for r in ranks]
    out = []
    for r, cid in ids:
        m = r.reply(cid, timeout)
        m["_elapsed"] = time.monotonic() - t0
        out.append((r, m))
    return out


def check_paths(replies, prefix, what, kind="tcp"):
    for r, m in replies:
        ret = m.get("return")
        if ret is None:
            raise Fail(f"{r.node}: {what} failed: {m}")
        paths = ret.get("paths", [])
        log(f"{r.node}: {what}: {json.dumps(ret)}")
        if not paths:
            raise Fail(f"{r.node}: {what}: no paths reported")
        for p in paths:
            if p.get("path") != kind or not p["local"].startswith(prefix) \
               or not p["remote"].startswith(prefix):
                raise Fail(f"{r.node}: {what}: path {p} is not {kind} on {prefix}*")


def wait_paths(ranks, prefix, what, timeout=30, kind="tcp"):
    """Polls status until every rank reports all its paths on prefix."""
    end = time.monotonic() + timeout
    while True:
        reps = all_cmd(ranks, "status", None, STATUS_TIMEOUT)
        ok = all(m.get("return", {}).get("paths") and
                 all(p["local"].startswith(prefix) and p.get("path") == kind
                     for p in m["return"]["paths"])
                 for _, m in reps)
        if ok:
            check_paths(reps, prefix, what, kind)
            return
        if time.monotonic() > end:
            check_paths(reps, prefix, what, kind)
            raise Fail(f"{what}: paths not {kind} on {prefix}* within {timeout} s")
        time.sleep(0.2)


def quiesce(ranks, deadline_ms=5000):
    reps = all_cmd(ranks, "quiesce", {"deadline-ms": deadline_ms}, deadline_ms / 1000 + 5)
    for r, m in reps:
        ret = m.get("return")
        if not ret or ret.get("state") != "quiesced":
            raise Fail(f"{r.node}: quiesce failed: {m}")
        for k in ("peers", "frames-drained", "bytes-queued", "elapsed-ms"):
            if not isinstance(ret.get(k), int):
                raise Fail(f"{r.node}: quiesce reply lacks {k}: {m}")
        log(f"{r.node}: quiesced: {json.dumps(ret)} (reply after {m['_elapsed']:.3f} s)")
    st = all_cmd(ranks, "status", None, STATUS_TIMEOUT)
    for r, m in st:
        if m.get("return", {}).get("state") != "quiesced" or m["return"].get("paths"):
            raise Fail(f"{r.node}: status after quiesce: {m}")
    return reps


def resume(ranks, prefix, what, fabric_if, kind="tcp"):
    reps = all_cmd(ranks, "resume", {"fabrics": [{"name": kind, "ifname": fabric_if,
                                                  "addr": prefix + "0"}],
                                     "link-timeout-ms": 15000}, 25)
    for r, m in reps:
        if m.get("return", {}).get("state") != "resumed":
            raise Fail(f"{r.node}: resume failed: {m}")
    check_paths(reps, prefix, what, kind)


def net(d, action):
    log(f"network: {action}")
    subprocess.run([os.path.join(d, "net.sh"), action], check=True)


def published_port(addrs_hex):
    """The port of an address list as a rank publishes it (hex of the
    modex blob: u32 magic, u16 version, u16 port, little-endian)."""
    return int.from_bytes(bytes.fromhex(addrs_hex)[6:8], "little")


def check_listeners(d, ranks, prefixes, what, port_of=None):
    """The BTL's listening TCP sockets, as `ss -Hltnp` shows them in each
    rank's namespace, must be on exactly the rank's addresses in the given
    networks (node n0 has .1, n1 has .2 on every veth link): not the
    wildcard, not the mpirun network, not an address that is gone."""
    seen = {}
    for r in ranks:
        if r.node not in seen:
            out = subprocess.run([os.path.join(d, "net.sh"), "listeners", r.node],
                                 check=True, capture_output=True, text=True).stdout
            seen[r.node] = out
        host = "1" if r.node == "n0" else "2"
        want = sorted(p + host for p in prefixes)
        got, ports = [], set()
        for line in seen[r.node].splitlines():
            if f"pid={r.info['pid']}," not in line:
                continue
            local = line.split()[3]
            addr, _, port = local.rpartition(":")
            got.append(addr)
            ports.add(int(port))
        got.sort()
        if got != want:
            raise Fail(f"{r.node}: rank {r.info['rank']}: {what}: listening on {got or 'nothing'}, "
                       f"expected exactly {want}; ss says:\n{seen[r.node]}")
        if len(ports) != 1:
            raise Fail(f"{r.node}: rank {r.info['rank']}: {what}: listeners on ports "
                       f"{sorted(ports)}, expected one port")
        if port_of and port_of.get(r.info["rank"]) not in ports:
            raise Fail(f"{r.node}: rank {r.info['rank']}: {what}: listening on port "
                       f"{ports.pop()} but published port {port_of.get(r.info['rank'])}")
        log(f"{r.node}: rank {r.info['rank']}: {what}: listening on {got} port {ports.pop()}")


def protocol_errors(ranks):
    """The rank side must answer bad input with the documented errors."""
    r = ranks[0]
    cases = [
        ({"execute": "resume", "id": 1}, "InvalidState"),
        ({"execute": "quiesce", "arguments": {"deadline-ms": "soon"}, "id": 2},
         "InvalidParameter"),
        ({"execute": "quiesce", "arguments": {"bogus": 1}, "id": 3}, "InvalidParameter"),
        ({"execute": "frobnicate", "id": 4}, "CommandNotFound"),
        ({"execute": "peers", "arguments": {"ranks": [{"rank": 1, "addrs": "zz"}]}, "id": 5},
         "InvalidParameter"),
        ({"execute": "peers", "arguments": {"ranks": [{"rank": 1, "addrs": "00" * 12}]},
          "id": 6}, "InvalidParameter"),
        ({"execute": "resume", "arguments": {"wait": "no"}, "id": 7}, "InvalidParameter"),
    ]
    for msg, cls in cases:
        r.send(msg)
        m = r.reply(msg["id"], STATUS_TIMEOUT)
        if m.get("error", {}).get("class") != cls:
            raise Fail(f"{r.node}: {msg} answered {m}, expected class {cls}")
    log("protocol errors answered as documented")


def scenario_switch(d, ranks, a, listeners):
    protocol_errors(ranks)
    wait_paths(ranks, a.fast, "before the switch")
    check_listeners(d, ranks, [a.fast, a.slow], "before the switch")
    quiesce(ranks)
    net(d, "fast-down")
    resume(ranks, a.slow, "resumed without the fast fabric", "slow")
    check_listeners(d, ranks, [a.slow], "resumed without the fast fabric")
    time.sleep(1.5)
    wait_paths(ranks, a.slow, "running on slow")
    net(d, "fast-up")
    quiesce(ranks)
    resume(ranks, a.fast, "resumed with the fast fabric back", "fast")
    check_listeners(d, ranks, [a.fast, a.slow], "resumed with the fast fabric back")
    time.sleep(1.0)
    # Quiesce while the application computes without any MPI call.
    open(os.path.join(d, "compute"), "w").close()
    end = time.monotonic() + 20
    while not all(os.path.exists(os.path.join(d, f"computing.{r.info['rank']}")) for r in ranks):
        if time.monotonic() > end:
            raise Fail("the application did not enter its compute phase")
        time.sleep(0.02)
    t0 = time.monotonic()
    reps = all_cmd(ranks, "quiesce", {"deadline-ms": 1000}, 2)
    took = time.monotonic() - t0
    os.unlink(os.path.join(d, "compute"))
    for r, m in reps:
        if m.get("return", {}).get("state") != "quiesced":
            raise Fail(f"{r.node}: quiesce during computation: {m}")
    still = all(os.path.exists(os.path.join(d, f"computing.{r.info['rank']}")) for r in ranks)
    log(f"MEASURED: quiesce during computation answered by all ranks in {took * 1000:.1f} ms "
        f"(application still computing: {still})")
    if not still:
        raise Fail("the computation ended before the quiesce was answered; "
                   "the measurement does not show a quiesce during computation")
    resume(ranks, a.fast, "resumed after the computation quiesce", "fast")


def scenario_peers(d, ranks, a, listeners):
    """Every network the pair knew each other by goes away during the
    quiesce and a new one comes: only the addresses handed over the control
    plane (`peers`) let them find each other again."""
    wait_paths(ranks, a.fast, "before the move")
    check_listeners(d, ranks, [a.fast, a.slow], "before the move")
    quiesce(ranks)
    net(d, "fast-down")
    net(d, "slow-down")
    net(d, "new-up")
    reps = all_cmd(ranks, "resume", {"fabrics": [{"name": "tcp", "ifname": "kwbn",
                                                  "addr": NEW + "0"}],
                                     "link-timeout-ms": 15000, "deadline-ms": 10000,
                                     "wait": False}, 5)
    entries = []
    for r, m in reps:
        ret = m.get("return", {})
        if ret.get("state") != "resumed" or not isinstance(ret.get("addrs"), str):
            raise Fail(f"{r.node}: resume with wait false: {m}")
        if m["_elapsed"] > 3:
            raise Fail(f"{r.node}: resume with wait false answered after {m['_elapsed']:.1f} s, "
                       "not at once")
        log(f"{r.node}: resumed at once ({m['_elapsed'] * 1000:.0f} ms), addrs {ret['addrs'][:40]}...")
        entries.append({"rank": r.info["rank"], "addrs": ret["addrs"]})
    # By the time a rank answers, with the new addresses in the answer, its
    # listeners are on them, and the ones on the vanished networks closed.
    check_listeners(d, ranks, [NEW], "after the move, when resume answered",
                    {e["rank"]: published_port(e["addrs"]) for e in entries})
    # The old addresses lead nowhere: without the new ones nothing connects.
    time.sleep(2)
    for r, m in all_cmd(ranks, "status", None, STATUS_TIMEOUT):
        if m.get("return", {}).get("paths"):
            raise Fail(f"{r.node}: connected before it was told the new addresses: {m}")
    log("no pair connects over the vanished networks (as expected)")
    preps = all_cmd(ranks, "peers", {"ranks": entries, "deadline-ms": 15000}, 20)
    check_paths(preps, NEW, "after peers")
    check_listeners(d, ranks, [NEW], "after peers")
    for r, m in preps:
        log(f"{r.node}: peers answered after {m['_elapsed'] * 1000:.0f} ms")


def scenario_recipe(d, ranks, a, listeners):
    """The MCA recipe check (ompi5-recipe-guest.sh, in a guest with rxe):
    the ranks run over verbs, then quiesce; net.sh lists who still holds
    a uverbs descriptor; resume brings verbs back."""
    wait_paths(ranks, a.fast, "before the quiesce", timeout=90, kind="verbs")
    net(d, "uverbs-before")
    quiesce(ranks)
    net(d, "uverbs-quiesced")
    resume(ranks, a.fast, "resumed", a.fabric_if, kind="verbs")


def restart_agent(d, ranks, listeners):
    """The agent goes away and comes back: every rank must register again
    by itself (it retries every second) and answer commands."""
    for r in ranks:
        r.sock.close()
    for n, s in listeners.items():
        s.close()
        os.unlink(os.path.join(d, n + ".sock"))
    log("agent stopped")
    time.sleep(1.5)
    fresh = {}
    for n in listeners:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(os.path.join(d, n + ".sock"))
        s.listen(8)
        fresh[n] = s
    listeners.update(fresh)
    log("agent restarted")
    return accept_ranks(listeners, 15, len(ranks) // len(listeners))


def scenario_cut(d, ranks, a, listeners):
    ranks = restart_agent(d, ranks, listeners)
    wait_paths(ranks, a.fast, "before the cut")
    for i in range(3):
        net(d, "cut")
        time.sleep(1.0)
    wait_paths(ranks, a.fast, "after killing the connections")
    net(d, "link-flap")
    time.sleep(1.0)
    wait_paths(ranks, a.fast, "after the link went down and up")
    # Down long enough for the pair to settle on slow: its one switch
    # attempt at connection time finds fast still down, so only the
    # BTL's probe of the best pair can take it back once the link is up.
    net(d, "link-down")
    wait_paths(ranks, a.slow, "while the fast link is down", timeout=30)
    time.sleep(1.0)
    net(d, "link-up")
    wait_paths(ranks, a.fast, "after the fast link came back", timeout=30)
    # The fast link vanishes without a quiesce: the stream stalls until
    # TCP_USER_TIMEOUT breaks it, then the ranks reconnect over slow.
    net(d, "fast-down")
    wait_paths(ranks, a.slow, "after losing the fast link unannounced", timeout=40)


def wait_log(d, pattern, what, timeout):
    """Waits until the application log (mpi.log) has a line matching pattern."""
    end = time.monotonic() + timeout
    rx = re.compile(pattern)
    while time.monotonic() < end:
        try:
            with open(os.path.join(d, "mpi.log"), errors="replace") as f:
                if any(rx.search(line) for line in f):
                    log(f"log: {what}")
                    return
        except FileNotFoundError:
            pass
        time.sleep(0.2)
    raise Fail(f"{what}: not in the log within {timeout} s")


def scenario_acklost(d, ranks, a, listeners):
    """Rank 1's standalone ACK frames vanish on the fast link: only rank 1
    sees its connection time out, with nothing of its own to resend, and
    it must reconnect anyway, or the pair deadlocks."""
    wait_paths(ranks, a.fast, "before the ACK loss")
    net(d, "ack-loss")
    wait_log(d, r"rank 1: connection to peer rank 0 .* broken: Connection timed out; "
             r"0 frames", "rank 1 timed out with nothing to resend", 40)
    # The HELLO passes the filter: the pair must be connected again.
    wait_paths(ranks, a.fast, "after rank 1's ACKs were lost", timeout=20)
    net(d, "ack-pass")
    time.sleep(1.0)


def scenario_giveup(d, ranks, a, listeners):
    """Every link between the nodes goes away for good: the BTL must give
    up after btl_kawarimi_reconnect_timeout_ms with an error naming the
    peer (the test script checks mpirun's exit and output)."""
    wait_paths(ranks, a.fast, "before the links go away")
    net(d, "fast-down")
    net(d, "slow-down")
    log("all links between the nodes deleted; the job must now fail")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--nodes", required=True)
    ap.add_argument("--scenario", required=True, choices=["switch", "cut", "acklost", "giveup", "peers", "recipe"])
    ap.add_argument("--fast", required=True)
    ap.add_argument("--slow", required=True)
    ap.add_argument("--ranks-per-node", type=int, default=1)
    ap.add_argument("--fabric-if", default="eth0", help="recipe: the rxe netdev")
    a = ap.parse_args()
    listeners = {}
    for n in a.nodes.split(","):
        p = os.path.join(a.dir, n + ".sock")
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(p)
        s.listen(8)
        listeners[n] = s
    open(os.path.join(a.dir, "controller.ready"), "w").close()
    try:
        ranks = accept_ranks(listeners, int(os.environ.get("KWB_REGISTER_TIMEOUT", "60")),
                             a.ranks_per_node)
        {"switch": scenario_switch, "cut": scenario_cut, "acklost": scenario_acklost,
         "giveup": scenario_giveup, "peers": scenario_peers,
         "recipe": scenario_recipe}[a.scenario](a.dir, ranks, a, listeners)
        if a.scenario == "giveup":
            return 0
    except Exception as e:  # any failure must still stop the application
        log(f"FAIL: {type(e).__name__}: {e}")
        open(os.path.join(a.dir, "stop"), "w").close()
        return 1
    time.sleep(1.0)
    open(os.path.join(a.dir, "stop"), "w").close()
    log("scenario done, application told to stop")
    return 0


if __name__ == "__main__":
    sys.exit(main())
