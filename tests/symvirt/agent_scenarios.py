#!/usr/bin/env python3
"""kawarimi-agent against fake ranks over real unix sockets (suite 'symvirt').

Usage: agent_scenarios.py KAWARIMI-AGENT [SCENARIO...]

The host side speaks raw JSON lines to the agent's listen: channel, so the
test sees exactly what goes over the wire.  Each fake rank is a thread with
a behaviour for quiesce/resume (answer after a delay, never answer, die,
answer with an error).  Everything lives in a /tmp/kws-* directory that is
removed at exit, and every process started here is killed at exit.
"""
import json
import os
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

AGENT = sys.argv[1]
ONLY = set(sys.argv[2:])
procs = []
failures = []


def connect(path):
    """A unix socket bound but not yet listening refuses: retry a little."""
    end = time.monotonic() + 5
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(path)
            return s
        except (ConnectionRefusedError, FileNotFoundError):
            s.close()
            if time.monotonic() > end:
                raise
            time.sleep(0.02)


def fail(msg):
    raise AssertionError(msg)


def check(cond, msg):
    if not cond:
        fail(msg)


class Lines:
    """Line-delimited JSON over a socket, with a receive timeout."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def send(self, obj_or_bytes):
        data = obj_or_bytes if isinstance(obj_or_bytes, bytes) else (json.dumps(obj_or_bytes) + "\n").encode()
        self.sock.sendall(data)

    def recv(self, timeout=10.0):
        """Next message, or None on EOF; raises on timeout."""
        end = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = end - time.monotonic()
            if left <= 0:
                fail("no message within %.1f s" % timeout)
            r, _, _ = select.select([self.sock], [], [], left)
            if not r:
                continue
            try:
                chunk = self.sock.recv(65536)
            except (ConnectionResetError, OSError):
                chunk = b""
            if not chunk:
                return None
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)


class Host(Lines):
    def __init__(self, path):
        super().__init__(connect(path))
        self.events = []
        self.next_id = 1

    def reply(self, id_, timeout=20.0):
        while True:
            m = self.recv(timeout)
            check(m is not None, "agent closed the channel")
            if "event" in m:
                self.events.append(m)
                continue
            if m.get("id") == id_:
                return m
            fail("unexpected message %r while waiting for id %r" % (m, id_))

    def execute(self, cmd, args=None, timeout=20.0):
        id_ = self.next_id
        self.next_id += 1
        msg = {"execute": cmd, "id": id_}
        if args is not None:
            msg["arguments"] = args
        self.send(msg)
        m = self.reply(id_, timeout)
        m["_t"] = time.monotonic()
        return m

    def ok(self, cmd, args=None, timeout=20.0):
        m = self.execute(cmd, args, timeout)
        check("return" in m, "%s failed: %r" % (cmd, m))
        return m["return"]

    def err(self, cmd, args=None, cls=None, timeout=20.0):
        m = self.execute(cmd, args, timeout)
        check("error" in m, "%s should fail but returned %r" % (cmd, m))
        if cls:
            check(m["error"]["class"] == cls, "%s: class %s, expected %s (%s)" %
                  (cmd, m["error"]["class"], cls, m["error"]["desc"]))
        return m["error"]

    def event(self, name, timeout=10.0):
        """The first event NAME, already received or arriving within timeout."""
        end = time.monotonic() + timeout
        while True:
            for e in self.events:
                if e["event"] == name:
                    self.events.remove(e)
                    e["_t"] = time.monotonic()
                    return e
            m = self.recv(max(0.01, end - time.monotonic()))
            check(m is not None, "agent closed the channel while we waited for %s" % name)
            check("event" in m, "unexpected message %r while waiting for event %s" % (m, name))
            self.events.append(m)

    def close(self):
        self.sock.close()


class Rank(threading.Thread):
    """A fake BTL: registers, then obeys a behaviour per command."""

    def __init__(self, path, rank, quiesce="ok", resume="ok", delay=0.0, sysroot=None, state=None):
        super().__init__(daemon=True)
        self.io = Lines(connect(path))
        self.rank = rank
        self.behaviour = {"quiesce": quiesce, "resume": resume}
        self.delay = delay
        self.sysroot = sysroot
        self.npaths = 1
        self.log = []           # (time, "got"/"sent", command, args)
        self.rescan_seen = None
        self.state = state or "running"
        args = {"pid": os.getpid(), "jobid": "kws-job", "rank": rank, "paths": ["verbs", "tcp"]}
        if state:
            args["state"] = state
        self.io.send({"execute": "register", "id": "r%d" % rank, "arguments": args})
        m = self.io.recv()
        check(m == {"return": {"version": 1}, "id": "r%d" % rank}, "register reply %r" % (m,))
        self.start()

    def run(self):
        while True:
            try:
                m = self.io.recv(timeout=3600)
            except Exception:
                return
            if m is None:
                return
            if "execute" not in m:
                continue
            cmd, args = m["execute"], m.get("arguments", {})
            self.log.append((time.monotonic(), "got", cmd, args))
            how = self.behaviour.get(cmd, "ok")
            if cmd == "resume" and self.sysroot:
                with open(os.path.join(self.sysroot, "bus/pci/rescan")) as f:
                    self.rescan_seen = f.read()
            if how == "ignore":
                continue
            if how == "die":
                self.io.sock.close()
                return
            time.sleep(self.delay)
            if how == "error":
                self.io.send({"error": {"class": "Timeout", "desc": "fake drain timeout"}, "id": m["id"]})
            elif cmd == "quiesce":
                self.state = "quiesced"
                self.io.send({"return": {"state": "quiesced", "peers": 3, "frames-drained": 7,
                                         "bytes-queued": 0, "elapsed-ms": int(self.delay * 1000),
                                         "future-member": True}, "id": m["id"]})
            elif cmd == "resume":
                self.state = "running"
                f = args["fabrics"][0] if args["fabrics"] else {"name": "tcp", "addr": "0.0.0.0"}
                self.io.send({"return": {"state": "resumed", "elapsed-ms": 1,
                                         "paths": [{"peer": (self.rank + 1 + k) % 100000, "path": f["name"],
                                                    "local": f["addr"], "remote": "10.0.0.9"}
                                                   for k in range(self.npaths)]},
                              "id": m["id"]})
            else:
                self.io.send({"return": {"state": self.state, "paths": []}, "id": m["id"]})
            self.log.append((time.monotonic(), "sent", cmd, args))

    def got(self, cmd):
        return [e for e in self.log if e[1] == "got" and e[2] == cmd]

    def sent(self, cmd):
        return [e for e in self.log if e[1] == "sent" and e[2] == cmd]

    def close(self):
        self.io.sock.close()


class Env:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="kws-")
        self.ch = os.path.join(self.dir, "ch.sock")
        self.ranks = os.path.join(self.dir, "ranks.sock")
        self.sys = os.path.join(self.dir, "sys")
        self.dev = os.path.join(self.dir, "dev")
        os.makedirs(os.path.join(self.sys, "bus/pci"))
        os.makedirs(os.path.join(self.dev, "infiniband"))
        open(os.path.join(self.sys, "bus/pci/rescan"), "w").close()
        self.agent = None

    def start(self, channel=None, max_fds=None, extra=()):
        channel = channel or "listen:" + self.ch

        def limit():
            if max_fds:
                import resource
                resource.setrlimit(resource.RLIMIT_NOFILE, (max_fds, max_fds))
        self.agent = subprocess.Popen([AGENT, "--foreground", "-v", "--channel", channel,
                                       "--socket", self.ranks, "--sys-root", self.sys,
                                       "--dev-root", self.dev] + list(extra), preexec_fn=limit)
        procs.append(self.agent)
        end = time.monotonic() + 10
        while not os.path.exists(self.ranks) or (channel.startswith("listen:") and not os.path.exists(self.ch)):
            check(time.monotonic() < end, "agent did not create its sockets")
            check(self.agent.poll() is None, "agent exited with %s" % self.agent.returncode)
            time.sleep(0.02)
        return Host(self.ch) if channel.startswith("listen:") else None

    def crash(self):
        """SIGKILL: the agent's exit path never runs, its sockets stay behind."""
        self.agent.kill()
        self.agent.wait()
        for p in (self.ranks, self.ch):
            os.unlink(p)

    def alive(self):
        check(self.agent.poll() is None, "the agent died (rc %s)" % self.agent.returncode)

    def stop(self):
        if self.agent and self.agent.poll() is None:
            self.agent.terminate()
            try:
                rc = self.agent.wait(10)
            except subprocess.TimeoutExpired:
                self.agent.kill()
                fail("agent ignored SIGTERM")
            check(rc == 0, "agent exit status %d after SIGTERM" % rc)
            check(not os.path.exists(self.ranks), "agent left its socket behind")
        shutil.rmtree(self.dir, ignore_errors=True)


# ---- scenarios -------------------------------------------------------------

def sc_order(env):
    """quiesce waits for every rank; resume rescans, then tells every rank."""
    host = env.start()
    env.agent.send_signal(__import__("signal").SIGHUP)
    hello = host.ok("hello", {"client": "kws-test"})
    check(hello["protocol"] == 1 and hello["state"] == "running", "hello %r" % hello)
    ranks = [Rank(env.ranks, i, delay=d, sysroot=env.sys) for i, d in enumerate([0.3, 0.1, 0.5])]
    time.sleep(0.2)
    st = host.ok("status")
    check(sorted(r["rank"] for r in st["ranks"]) == [0, 1, 2], "status ranks %r" % st)
    t0 = time.monotonic()
    q = host.execute("quiesce", {"deadline-ms": 10000})
    check("return" in q, "quiesce: %r" % q)
    last_reply = max(r.sent("quiesce")[0][0] for r in ranks)
    first_reply = min(r.sent("quiesce")[0][0] for r in ranks)
    check(q["_t"] >= last_reply, "quiesce answered before the slowest rank")
    for r in ranks:
        got = r.got("quiesce")
        check(len(got) == 1, "rank %d got %d quiesce" % (r.rank, len(got)))
        check(got[0][0] >= t0 and got[0][0] <= first_reply, "quiesce not sent to all ranks at once")
        check(0 < got[0][3]["deadline-ms"] <= 10000, "rank deadline %r" % got[0][3])
    rs = {x["rank"]: x for x in q["return"]["ranks"]}
    check(sorted(rs) == [0, 1, 2] and rs[0]["frames-drained"] == 7, "quiesce ranks %r" % rs)
    check(q["return"]["gone"] == [], "gone %r" % q["return"]["gone"])
    check(host.ok("status")["state"] == "quiesced", "state after quiesce")
    again = host.ok("quiesce")
    check(again["ranks"] == [], "second quiesce %r" % again)
    for r in ranks:
        check(r.got("resume") == [], "resume before resume")
    res = host.ok("resume", {"fabrics": ["tcp"], "link-timeout-ms": 1000})
    check(res["rescan"] == "done", "rescan %r" % res["rescan"])
    for r in ranks:
        got = r.got("resume")
        check(len(got) == 1, "rank %d got %d resume" % (r.rank, len(got)))
        check(r.rescan_seen == "1", "rank %d resumed before the PCI rescan (%r)" % (r.rank, r.rescan_seen))
        check(got[0][3]["fabrics"] == res["fabrics"], "fabrics to rank %r vs %r" % (got[0][3], res["fabrics"]))
        for f in got[0][3]["fabrics"]:
            check(set(f) == {"name", "ifname", "addr"} and f["name"] in ("verbs", "tcp"), "fabric %r" % f)
    rr = {x["rank"]: x for x in res["ranks"]}
    check(sorted(rr) == [0, 1, 2] and all(len(x["paths"]) == 1 for x in rr.values()), "resume ranks %r" % rr)
    check(res["link-wait-ms"] == 0 and res["verbs-ready"] in (True, False), "resume %r" % res)
    st = host.ok("status")
    check(st["state"] == "running" and all(x["state"] == "running" and x["paths"] for x in st["ranks"]),
          "status after resume %r" % st)
    host.err("resume", {}, "InvalidState")
    # a live status: every rank asked, one that does not answer is named
    ranks[2].behaviour["status"] = "ignore"
    live = host.ok("status", {"ranks": True, "deadline-ms": 500})
    lv = {x["rank"]: x["live"] for x in live["ranks"]}
    check(lv[0] == {"state": "running", "paths": []} and lv[1]["state"] == "running", "live %r" % lv)
    check("no answer" in lv[2]["error"], "silent rank's live status %r" % lv[2])
    check(all(len(r.got("status")) == 1 for r in ranks), "status not asked of every rank")
    check("live" not in host.ok("status")["ranks"][0], "live data leaked into a plain status")
    ranks[2].behaviour["status"] = "error"
    lv = {x["rank"]: x["live"] for x in host.ok("status", {"ranks": True})["ranks"]}
    check(lv[2] == {"error": "Timeout: fake drain timeout"}, "erroring rank's live status %r" % lv[2])
    # a rank that unregisters is reported as an event
    ranks[1].io.send({"execute": "unregister", "id": 5})
    time.sleep(0.3)
    host.ok("hello")
    ev = [e for e in host.events if e["event"] == "RANK_UNREGISTERED"]
    check(ev and ev[0]["data"]["reason"] == "unregister" and ev[0]["data"]["rank"] == 1, "events %r" % host.events)
    check(len([e for e in host.events if e["event"] == "RANK_REGISTERED"]) == 3, "RANK_REGISTERED events")
    for r in ranks:
        r.close()


def sc_silent(env):
    """A rank that never answers: Timeout naming it, the others resumed."""
    host = env.start()
    ranks = [Rank(env.ranks, 0), Rank(env.ranks, 1, quiesce="ignore"), Rank(env.ranks, 2)]
    time.sleep(0.2)
    e = host.err("quiesce", {"deadline-ms": 600}, "Timeout")
    check("rank 1 " in e["desc"] and "pid %d" % os.getpid() in e["desc"], "desc %r" % e["desc"])
    time.sleep(0.3)
    for r in (ranks[0], ranks[2]):
        check(len(r.got("resume")) == 1 and r.state == "running", "rank %d not resumed" % r.rank)
    check(host.ok("status")["state"] == "running", "state after failed quiesce")
    # the silent rank wakes up: a later quiesce still works without it hanging
    ranks[1].behaviour["quiesce"] = "ok"
    q = host.ok("quiesce", {"deadline-ms": 5000})
    check(len(q["ranks"]) == 3, "quiesce after timeout %r" % q)
    host.ok("resume")
    for r in ranks:
        r.close()


def sc_dies(env):
    """A rank that dies mid-quiesce does not wedge the agent."""
    host = env.start()
    ranks = [Rank(env.ranks, 0, delay=0.2), Rank(env.ranks, 1, quiesce="die"), Rank(env.ranks, 2, delay=0.2)]
    time.sleep(0.2)
    q = host.ok("quiesce", {"deadline-ms": 20000})
    check(len(q["ranks"]) == 2 and q["gone"] and q["gone"][0]["rank"] == 1 and q["gone"][0]["reason"] == "eof",
          "quiesce with a dead rank %r" % q)
    res = host.ok("resume")
    check(sorted(x["rank"] for x in res["ranks"]) == [0, 2], "resume ranks %r" % res["ranks"])
    # a rank that errors: RankError, the others resumed
    ranks[2].behaviour["quiesce"] = "error"
    e = host.err("quiesce", {"deadline-ms": 5000}, "RankError")
    check("rank 2 " in e["desc"] and "Timeout: fake drain timeout" in e["desc"], "desc %r" % e["desc"])
    time.sleep(0.3)
    check(ranks[0].state == "running" and len(ranks[0].got("resume")) == 2, "rank 0 not resumed")
    check(host.ok("status")["state"] == "running", "state")
    for r in ranks:
        r.close()


def sc_busy(env):
    """A foreign process holding a uverbs node: DeviceBusy with pid and comm."""
    uverbs = os.path.join(env.dev, "infiniband/uverbs0")
    open(uverbs, "w").close()
    fd = os.open(uverbs, os.O_RDONLY)
    holder = subprocess.Popen(["sleep", "60"], pass_fds=[fd])
    procs.append(holder)
    os.close(fd)
    host = env.start()
    ranks = [Rank(env.ranks, 0), Rank(env.ranks, 1)]
    time.sleep(0.2)
    e = host.err("quiesce", {"deadline-ms": 5000}, "DeviceBusy")
    check("process %d (sleep)" % holder.pid in e["desc"] and uverbs in e["desc"], "desc %r" % e["desc"])
    time.sleep(0.3)
    for r in ranks:
        check(len(r.got("quiesce")) == 1 and len(r.got("resume")) == 1 and r.state == "running",
              "rank %d not resumed as it was" % r.rank)
    holder.kill()
    holder.wait()
    q = host.ok("quiesce", {"deadline-ms": 5000})
    check(len(q["ranks"]) == 2, "quiesce once the holder is gone %r" % q)
    # a rank that starts while quiesced is told to quiesce at once
    late = Rank(env.ranks, 7)
    time.sleep(0.3)
    check(len(late.got("quiesce")) == 1 and late.state == "quiesced", "late rank not quiesced")
    res = host.ok("resume", {"hook": "echo kws-hook; exit 3", "rescan": False})
    check(res["hook"]["exit-status"] == 3 and res["hook"]["output"] == "kws-hook\n", "hook %r" % res["hook"])
    check(res["rescan"] == "skipped" and len(res["ranks"]) == 3, "resume %r" % res)
    for r in ranks + [late]:
        r.close()


def sc_malformed(env):
    """Malformed input gets an error reply; the agent lives on."""
    host = env.start()
    # a bad line followed by a good one in the same write: only the bad one is lost
    host.send(b'{"execute": "hello", "id": 1,,}\n{"execute": "hello", "id": 2}\n')
    m = host.recv()
    check(m["error"]["class"] == "ProtocolError" and "id" not in m, "bad JSON reply %r" % m)
    check(host.recv()["id"] == 2, "good line after a bad one not answered")
    host.send(b'[1, 2]\n')
    check(host.recv()["error"]["class"] == "ProtocolError", "array at top level")
    host.send(b'{"execute": "hello", "id": 3, "arguments": {"client": "' + b"x" * 100000 + b'"}}\n')
    m = host.recv()
    check(m["error"]["class"] == "ProtocolError" and "longer than" in m["error"]["desc"], "oversize %r" % m)
    check(host.ok("hello")["protocol"] == 1, "hello after an oversize line")
    # a line in pieces
    for piece in (b'{"exe', b'cute": "hel', b'lo", "id": "p"', b'}\n'):
        host.send(piece)
        time.sleep(0.05)
    check(host.recv()["id"] == "p", "split line")
    for bad, cls in [({"execute": "nope", "id": 9}, "CommandNotFound"),
                     ({"execute": "register", "id": 9, "arguments": {}}, "CommandNotFound"),
                     ({"execute": "hello", "id": 9, "extra": 1}, "InvalidParameter"),
                     ({"execute": "hello", "id": 9, "arguments": [1]}, "InvalidParameter"),
                     ({"execute": "quiesce", "id": 9, "arguments": {"deadline-ms": "soon"}}, "InvalidParameter"),
                     ({"execute": "quiesce", "id": 9, "arguments": {"deadline-ms": -5}}, "InvalidParameter"),
                     ({"execute": "quiesce", "id": 9, "arguments": {"deadline": 5}}, "InvalidParameter"),
                     ({"execute": "resume", "id": 9, "arguments": {"fabrics": ["ib"]}}, "InvalidParameter"),
                     ({"execute": 5, "id": 9}, "InvalidParameter"),
                     ({"execute": "hello", "id": [1]}, "InvalidParameter"),
                     ({"return": {}, "id": 9}, "ProtocolError"),
                     ({"hello": 1}, "ProtocolError")]:
        host.send(bad)
        m = host.recv()
        check("error" in m and m["error"]["class"] == cls, "%r -> %r, expected %s" % (bad, m, cls))
        if isinstance(bad.get("id"), int):
            check(m.get("id") == 9, "error reply lost the id: %r" % m)
    host.send(b'{"execute": "hello", "id": 1, "arguments": {"client": "a\\u0000b"}}\n')
    check(host.recv()["error"]["class"] == "InvalidParameter", "NUL in a string")
    # the rank leg: garbage, a bad register, a reply to nothing
    r = Lines(connect(env.ranks))
    r.send(b'garbage\n')
    check(r.recv()["error"]["class"] == "ProtocolError", "rank garbage")
    r.send({"execute": "register", "id": 1, "arguments": {"pid": "x", "jobid": "j", "rank": 0, "paths": []}})
    check(r.recv()["error"]["class"] == "InvalidParameter", "bad register")
    r.send({"execute": "inventory", "id": 2})
    check(r.recv()["error"]["class"] == "CommandNotFound", "host command on the rank leg")
    r.send({"return": {}, "id": 77})
    r.send({"execute": "unregister", "id": 3})
    check(r.recv()["error"]["class"] == "InvalidState", "unregister before register")
    r.sock.close()
    # a rank with a malformed quiesce reply counts as failed, not as hung
    bad = Lines(connect(env.ranks))
    bad.send({"execute": "register", "id": 1, "arguments": {"pid": 1, "jobid": "j", "rank": 4, "paths": ["tcp"]}})
    bad.recv()
    host.send({"execute": "quiesce", "id": 50, "arguments": {"deadline-ms": 5000}})
    q = bad.recv()
    bad.send({"return": {"state": "sleeping"}, "id": q["id"]})
    rs = bad.recv()
    check(rs["execute"] == "resume", "rank with a bad reply not resumed: %r" % rs)
    bad.send({"return": {"state": "resumed", "paths": []}, "id": rs["id"]})
    e = host.reply(50)
    check(e["error"]["class"] == "RankError" and "ProtocolError" in e["error"]["desc"], "bad rank reply %r" % e)
    bad.sock.close()
    # the host goes away mid-command and comes back
    host.send({"execute": "quiesce", "id": 60, "arguments": {"deadline-ms": 5000}})
    host.close()
    time.sleep(0.3)
    host = Host(env.ch)
    check(host.ok("status")["state"] in ("quiesced", "running"), "status after reconnect")
    env.alive()


def sc_verbs_wait(env):
    """resume expecting verbs waits for an ACTIVE port up to the timeout."""
    host = env.start()
    Rank(env.ranks, 0)
    host.ok("quiesce", {"deadline-ms": 5000})
    res = host.ok("resume", {"fabrics": ["verbs", "tcp"], "link-timeout-ms": 400}, timeout=30)
    if res["verbs-ready"]:
        check(any(f["name"] == "verbs" for f in res["fabrics"]), "verbs ready but no verbs fabric")
    else:
        check(res["link-wait-ms"] >= 400, "gave up after %d ms, before the timeout" % res["link-wait-ms"])
        check(all(f["name"] == "tcp" for f in res["fabrics"]), "fabrics %r" % res["fabrics"])


def sc_big(env):
    """Long rank replies are taken; an oversize reply summarizes paths."""
    host = env.start()
    ranks = [Rank(env.ranks, i) for i in range(2)]
    for r in ranks:
        r.npaths = 9000     # ~700 KB each: over 64 KiB, under 1 MiB
    time.sleep(0.2)
    host.ok("quiesce", {"deadline-ms": 5000})
    m = host.execute("resume", {"fabrics": ["tcp"], "rescan": False}, timeout=30)
    check("return" in m, "resume with long replies: %r" % str(m)[:300])
    for r in m["return"]["ranks"]:
        check("paths" not in r and r["path-counts"] == {"tcp": 9000}, "rank %r" % {k: v for k, v in r.items() if k != "paths"})
    st = host.ok("status")
    check(all(r.get("path-counts") == {"tcp": 9000} for r in st["ranks"]), "status of big ranks")
    for r in ranks:
        r.close()


def sc_fdlimit(env):
    """Out of descriptors: ranks are refused, the agent neither spins nor dies."""
    host = env.start(max_fds=40)
    socks = []
    for _ in range(60):
        try:
            socks.append(connect(env.ranks))
        except OSError:
            break
    time.sleep(0.5)
    with open("/proc/%d/stat" % env.agent.pid) as f:
        before = sum(int(x) for x in f.read().rsplit(")", 1)[1].split()[11:13])
    time.sleep(2)
    with open("/proc/%d/stat" % env.agent.pid) as f:
        after = sum(int(x) for x in f.read().rsplit(")", 1)[1].split()[11:13])
    ticks = os.sysconf("SC_CLK_TCK")
    check((after - before) < ticks, "the agent used %.2f s of CPU in 2 s: spinning on accept" %
          ((after - before) / ticks))
    check(host.ok("hello")["protocol"] == 1, "hello with the descriptors exhausted")
    for s_ in socks:
        s_.close()
    time.sleep(1.5)
    r = Rank(env.ranks, 0)
    check(len(host.ok("status")["ranks"]) == 1, "a rank registers once descriptors are free")
    r.close()


def sc_connect(env):
    """--channel unix:PATH: the agent reconnects after the host goes away."""
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(env.ch)
    srv.listen(1)
    env.start("unix:" + env.ch)
    for round_ in range(2):
        srv.settimeout(10)
        conn, _ = srv.accept()
        h = Host.__new__(Host)
        Lines.__init__(h, conn)
        h.events, h.next_id = [], 1
        check(h.ok("hello")["protocol"] == 1, "hello on round %d" % round_)
        conn.close()
    srv.close()


# ---- leases (docs/symvirt-protocol.md, "Leases") ----------------------------

def wait_for(cond, timeout, what):
    end = time.monotonic() + timeout
    while not cond():
        check(time.monotonic() < end, "%s within %.1f s" % (what, timeout))
        time.sleep(0.02)


def with_ranks(env, n, **behaviour):
    """The agent, and n fake ranks registered with it."""
    host = env.start()
    ranks = [Rank(env.ranks, i, **behaviour) for i in range(n)]
    time.sleep(0.2)
    return host, ranks


def resumed_once(ranks):
    return all(len(r.got("resume")) == 1 and r.state == "running" for r in ranks)


def sc_lease_expire(env):
    """A lease nobody renews runs out: the agent resumes the ranks itself, on what there is, and says so."""
    host, ranks = with_ranks(env, 2, sysroot=env.sys, delay=0.5)
    t0 = time.monotonic()
    host.ok("quiesce", {"deadline-ms": 5000, "lease-ms": 1500})
    st = host.ok("status")
    check(st["state"] == "quiesced" and 0 < st["lease-ms-left"] <= 1500, "status with a lease %r" % st)
    ev = host.event("lease-expired", timeout=5)
    check(ev["data"] == {"state": "quiesced", "ranks": 2}, "event %r" % ev)
    check(ev["_t"] - t0 >= 1.45, "lease ran out after %.2f s, not 1.5" % (ev["_t"] - t0))
    # the ranks take 0.5 s to answer: a resume meanwhile is told why not
    e = host.err("resume", {}, "InvalidState")
    check("lease ran out" in e["desc"], "resume while the agent resumes by itself: %r" % e)
    wait_for(lambda: resumed_once(ranks), 3, "ranks resumed once")
    for r in ranks:
        got = r.got("resume")[0]
        check(got[0] - t0 >= 1.45, "rank %d resumed %.2f s after the quiesce" % (r.rank, got[0] - t0))
        check(r.rescan_seen == "1", "rank %d resumed before the PCI rescan" % r.rank)
        check(all(f["name"] in ("verbs", "tcp") for f in got[3]["fabrics"]), "fabrics %r" % got[3])
    st = host.ok("status")
    check(st["state"] == "running" and st["lease-ms-left"] is None and
          all(x["state"] == "running" for x in st["ranks"]), "status after the lease ran out %r" % st)
    e = host.err("resume", {}, "InvalidState")
    check("running" in e["desc"], "resume after the lease ran out: %r" % e)
    for r in ranks:
        r.close()


def sc_lease_renew(env):
    """Renewed every 500 ms a 1500 ms lease holds past three lengths; resume ends it; renew never fails."""
    host, ranks = with_ranks(env, 2)
    host.ok("quiesce", {"lease-ms": 1500})
    end = time.monotonic() + 5.0
    while time.monotonic() < end:
        time.sleep(0.5)
        rn = host.ok("renew")
        check(rn["state"] == "quiesced" and 900 < rn["lease-ms-left"] <= 1500, "renew %r" % rn)
    rn = host.ok("renew", {"lease-ms": 3000})
    check(2500 < rn["lease-ms-left"] <= 3000, "renew with a new length %r" % rn)
    check(all(r.got("resume") == [] for r in ranks), "resumed although renewed")
    check(host.ok("status")["state"] == "quiesced", "not quiesced after 5 s of renews")
    host.ok("resume", {"fabrics": ["tcp"], "rescan": False})
    check(resumed_once(ranks), "resume did not reach the ranks")
    for args in ({}, {"lease-ms": 1000}):
        rn = host.ok("renew", args)
        check(rn == {"state": "running", "lease-ms-left": None}, "renew after resume %r" % rn)
    # a quiesce without lease-ms holds none (renew without a length adds
    # none); renew with one puts one on it; a quiesce without drops it
    host.ok("quiesce")
    check(host.ok("renew")["lease-ms-left"] is None, "a lease nobody asked for")
    check(host.ok("renew", {"lease-ms": 1000})["lease-ms-left"] <= 1000, "renew did not start a lease")
    check(host.ok("quiesce")["ranks"] == [], "second quiesce")
    check(host.ok("status")["lease-ms-left"] is None, "quiesce without lease-ms kept the lease")
    time.sleep(1.4)
    check(all(len(r.got("resume")) == 1 for r in ranks), "the dropped lease still ran out")
    host.ok("resume")
    host.ok("hello")
    check(not [e for e in host.events if e["event"] == "lease-expired"], "lease-expired %r" % host.events)
    for r in ranks:
        r.close()


def sc_lease_disconnect(env):
    """The host going away does not stop the lease; the next host hears of it."""
    host, ranks = with_ranks(env, 2)
    host.ok("quiesce", {"lease-ms": 1500})
    host.close()
    wait_for(lambda: resumed_once(ranks), 5, "ranks resumed with the host gone")
    host = Host(env.ch)
    ev = host.event("lease-expired", timeout=5)
    check(ev["data"]["ranks"] == 2, "event %r" % ev)
    check(host.ok("status")["state"] == "running", "state after the lease ran out")
    for r in ranks:
        r.close()


def sc_lease_quiescing(env):
    """A lease that runs out before every rank quiesced fails the quiesce and resumes the ranks."""
    host = env.start()
    ranks = [Rank(env.ranks, 0), Rank(env.ranks, 1, quiesce="ignore")]
    time.sleep(0.2)
    t0 = time.monotonic()
    e = host.err("quiesce", {"deadline-ms": 20000, "lease-ms": 1000}, "Timeout")
    check("lease of 1000 ms" in e["desc"] and time.monotonic() - t0 < 5, "quiesce %r" % e)
    ev = host.event("lease-expired")
    check(ev["data"] == {"state": "quiescing", "ranks": 2}, "event %r" % ev)
    wait_for(lambda: resumed_once(ranks[:1]), 3, "rank 0 resumed")
    check(host.ok("status")["state"] == "running", "state after the lease ran out")
    for r in ranks:
        r.close()


def sc_lease_adopt(env):
    """A restarted agent adopts ranks that register quiesced: resume reaches them, or its lease runs out."""
    lease = ["--adopt-lease-ms", "1500"]
    host = env.start(extra=lease)
    ranks = [Rank(env.ranks, i) for i in range(2)]
    time.sleep(0.2)
    host.ok("quiesce")
    env.crash()
    for r in ranks:
        r.close()
    host = env.start(extra=lease)
    check(host.ok("hello")["state"] == "running", "a fresh agent")
    # the BTL registers again with its state
    ranks = [Rank(env.ranks, i, state="quiesced") for i in range(2)]
    time.sleep(0.2)
    st = host.ok("status")
    check(st["state"] == "quiesced" and 0 < st["lease-ms-left"] <= 1500 and
          all(x["state"] == "quiesced" for x in st["ranks"]), "adopted %r" % st)
    check(all(r.got("quiesce") == [] for r in ranks), "quiesced ranks told to quiesce again")
    host.ok("resume", {"rescan": False})
    check(resumed_once(ranks), "resume did not reach the adopted ranks")
    time.sleep(1.7)
    check(all(len(r.got("resume")) == 1 for r in ranks), "the adopted lease ran out after resume")
    # again, with nobody to resume: ranks that say running, before and
    # after the quiesced ones, are quiesced too; the lease resumes all
    host.ok("quiesce")
    env.crash()
    for r in ranks:
        r.close()
    host = env.start(extra=lease)
    t0 = time.monotonic()
    ranks = [Rank(env.ranks, 2), Rank(env.ranks, 0, state="quiesced"), Rank(env.ranks, 1, state="quiesced")]
    time.sleep(0.2)
    ranks.append(Rank(env.ranks, 3))
    wait_for(lambda: all(r.state == "quiesced" for r in ranks), 3, "running ranks quiesced")
    check(len(ranks[0].got("quiesce")) == 1 and len(ranks[3].got("quiesce")) == 1, "quiesce of running ranks")
    ev = host.event("lease-expired", timeout=5)
    check(ev["data"] == {"state": "quiesced", "ranks": 4}, "event %r" % ev)
    check(ev["_t"] - t0 >= 1.45, "adopted lease ran out after %.2f s" % (ev["_t"] - t0))
    wait_for(lambda: resumed_once(ranks), 3, "ranks resumed by the adopted lease")
    check(host.ok("status")["state"] == "running", "state after the adopted lease")
    for r in ranks:
        r.close()


def sc_lease_bad(env):
    """Bad lease-ms, register state and --adopt-lease-ms are refused, quoting the value."""
    host = env.start()
    for cmd, args, quoted in (("quiesce", {"lease-ms": 999}, "999"), ("quiesce", {"lease-ms": 3600001}, "3600001"),
                              ("quiesce", {"lease-ms": "1500"}, '"1500"'), ("renew", {"lease-ms": 0}, "0"),
                              ("renew", {"lease-ms": -1500}, "-1500"), ("renew", {"lease-ms": 1.5}, "1.5"),
                              ("renew", {"lease": 1500}, "lease")):
        e = host.err(cmd, args, "InvalidParameter")
        check(e["desc"].startswith(cmd + ": ") and quoted in e["desc"], "%s %r: %r" % (cmd, args, e))
    check(host.ok("status")["state"] == "running", "a refused quiesce changed the state")
    r = Lines(connect(env.ranks))
    for st, quoted in (("paused", '"paused"'), (1, "1")):
        r.send({"execute": "register", "id": 1, "arguments": {"pid": 1, "jobid": "j", "rank": 0, "paths": [],
                                                              "state": st}})
        m = r.recv()
        check(m["error"]["class"] == "InvalidParameter" and quoted in m["error"]["desc"], "register %r" % m)
    check(host.ok("status")["ranks"] == [], "a refused register was taken")
    r.sock.close()
    for bad in ("10", "3600001", "1e4", ""):
        p = subprocess.run([AGENT, "--foreground", "--adopt-lease-ms", bad, "--channel", "listen:" + env.ch + "x",
                            "--socket", env.ranks + "x"], capture_output=True, text=True, timeout=10)
        check(p.returncode == 2 and "'%s'" % bad in p.stderr, "--adopt-lease-ms %r: %d %r" % (bad, p.returncode, p.stderr))


SCENARIOS = [sc_order, sc_silent, sc_dies, sc_busy, sc_malformed, sc_verbs_wait, sc_big, sc_fdlimit, sc_connect,
             sc_lease_expire, sc_lease_renew, sc_lease_disconnect, sc_lease_quiescing, sc_lease_adopt, sc_lease_bad]

for sc in SCENARIOS:
    name = sc.__name__[3:]
    if ONLY and name not in ONLY:
        continue
    env = Env()
    try:
        sc(env)
        env.alive()
        env.stop()
        print("ok   %s: %s" % (name, sc.__doc__.strip().splitlines()[0]), flush=True)
    except Exception as e:  # report every scenario, then fail
        failures.append(name)
        print("FAIL %s: %s" % (name, e), flush=True)
        if env.agent and env.agent.poll() is None:
            env.agent.kill()
        shutil.rmtree(env.dir, ignore_errors=True)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        procs.clear()

if failures:
    print("failed: " + ", ".join(failures))
    sys.exit(1)
