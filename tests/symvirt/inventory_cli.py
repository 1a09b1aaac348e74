#!/usr/bin/env python3
"""`kawarimi agent SOCK inventory` against kawarimi-agent, compared with lspci.

Usage: inventory_cli.py KAWARIMI-AGENT KAWARIMI PCI-DUMP

1. The agent reads a libpci dump (tests/data/symvirt-pci.dump: a Mellanox
   ConnectX-6, class 0x0207, and a virtio-net NIC among others); what it
   reports must be what `lspci -F DUMP` prints from the same file.
2. The agent on this machine lists as many PCI devices as `lspci` (zero
   included: then it says why in "pci-error"), with the drivers sysfs shows.
3. `kawarimi agent` exit statuses: 0 ok, 1 agent error (CLASS: desc),
   2 usage / bad ARGS-JSON / cannot connect (naming the socket).
"""
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time

AGENT, KAWARIMI, DUMP = sys.argv[1:4]
tmp = tempfile.mkdtemp(prefix="kws-inv-")
procs = []


def listening(path):
    """True once the agent accepts connections (bind() comes before listen())."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)


def start_agent(*extra):
    ch = os.path.join(tmp, "ch%d.sock" % len(procs))
    ranks = os.path.join(tmp, "ranks%d.sock" % len(procs))
    p = subprocess.Popen([AGENT, "--foreground", "--channel", "listen:" + ch, "--socket", ranks] + list(extra))
    procs.append(p)
    end = time.monotonic() + 10
    while not listening(ch):
        check(p.poll() is None and time.monotonic() < end, "agent did not start")
        time.sleep(0.02)
    return ch


def cli(*args):
    r = subprocess.run([KAWARIMI, "agent"] + list(args), capture_output=True, text=True, timeout=60)
    return r.returncode, r.stdout, r.stderr


def lspci_mm(*args):
    r = subprocess.run(["lspci", "-mm", "-D"] + list(args), capture_output=True, text=True)
    rows = {}
    for line in r.stdout.splitlines():
        f = shlex.split(line)
        rows[f[0]] = f[1:]
    return r.returncode, rows


def test_dump():
    ch = start_agent("--pci-dump", DUMP)
    rc, out, err = cli(ch, "inventory")
    check(rc == 0, "inventory rc %d: %s" % (rc, err))
    inv = json.loads(out)
    _, ids = lspci_mm("-n", "-F", DUMP)
    _, names = lspci_mm("-F", DUMP)
    got = {d["address"]: d for d in inv["pci"]}
    check(sorted(got) == sorted(ids) and len(got) == 4, "addresses %s vs lspci %s" % (sorted(got), sorted(ids)))
    for addr, d in got.items():
        cls, ven, dev = ids[addr][0:3]
        check(d["class"] == int(cls, 16) and d["vendor-id"] == int(ven, 16) and d["device-id"] == int(dev, 16),
              "%s ids %r vs lspci %r" % (addr, d, ids[addr]))
        ncls, nven, ndev = names[addr][0:3]
        check((d["class-name"], d["vendor"], d["device"]) == (ncls, nven, ndev),
              "%s names %r vs lspci %r" % (addr, (d["class-name"], d["vendor"], d["device"]), names[addr][0:3]))
        check(d["driver"] is None, "a dump has no drivers: %r" % d)
    hca = got["0000:01:00.0"]
    check(hca["class"] == 0x0207 and hca["rdma"] is True and "ConnectX" in hca["device"], "HCA %r" % hca)
    nic = got["0000:00:01.0"]
    check(nic["rdma"] is False and nic["vendor-id"] == 0x1af4 and nic["class"] == 0x0200, "virtio-net %r" % nic)
    check([d["address"] for d in inv["pci"] if d["rdma"]] == ["0000:01:00.0"], "rdma flags")
    for key in ("verbs", "netdevs", "fabrics"):
        check(isinstance(inv[key], list), "inventory lacks %s" % key)
    check(any(n["loopback"] for n in inv["netdevs"]), "no loopback netdev listed")
    # a broken dump is an agent error, not a crash
    bad = os.path.join(tmp, "bad.dump")
    with open(bad, "w") as f:
        f.write("00:00.0 x\n00: zz\n")
    ch2 = start_agent("--pci-dump", bad)
    rc, out, err = cli(ch2, "inventory")
    check(rc == 1 and err.startswith("GenericError: libpci:") and bad in err, "bad dump: rc %d %r" % (rc, err))
    rc, out, err = cli(ch2, "hello")
    check(rc == 0, "agent dead after a bad dump")


def test_machine():
    ch = start_agent()
    rc, out, err = cli(ch, "inventory")
    check(rc == 0, "inventory rc %d: %s" % (rc, err))
    inv = json.loads(out)
    lrc, rows = lspci_mm()
    if lrc != 0:
        rows = {}
    check(len(inv["pci"]) == len(rows), "agent lists %d PCI devices, lspci %d" % (len(inv["pci"]), len(rows)))
    check(sorted(d["address"] for d in inv["pci"]) == sorted(rows), "addresses differ from lspci")
    if not rows:
        check(lrc != 0 or "pci-error" not in inv, "no devices: %r" % inv.get("pci-error"))
    for d in inv["pci"]:
        link = "/sys/bus/pci/devices/%s/driver" % d["address"]
        want = os.path.basename(os.readlink(link)) if os.path.islink(link) else None
        check(d["driver"] == want, "%s driver %r, sysfs %r" % (d["address"], d["driver"], want))
    print("this machine: %d PCI devices, %d verbs devices, %d netdevs" %
          (len(inv["pci"]), len(inv["verbs"]), len(inv["netdevs"])))


def test_cli():
    ch = start_agent()
    rc, out, err = cli(ch, "hello")
    check(rc == 0 and json.loads(out)["protocol"] == 1, "hello rc %d %r" % (rc, err))
    rc, out, err = cli(ch, "nope")
    check(rc == 1 and err.startswith("CommandNotFound: ") and out == "", "unknown command rc %d %r" % (rc, err))
    rc, out, err = cli(ch, "resume")
    check(rc == 1 and err.startswith("InvalidState: "), "resume while running rc %d %r" % (rc, err))
    rc, out, err = cli(ch, "quiesce", '{"deadline-ms": "x"}')
    check(rc == 1 and err.startswith("InvalidParameter: quiesce: "), "bad argument rc %d %r" % (rc, err))
    rc, out, err = cli(ch, "quiesce", "{not json")
    check(rc == 2 and "{not json" in err, "bad ARGS-JSON rc %d %r" % (rc, err))
    rc, out, err = cli(ch, "quiesce", "[1]")
    check(rc == 2 and "not a JSON object" in err, "array ARGS-JSON rc %d %r" % (rc, err))
    missing = os.path.join(tmp, "missing.sock")
    rc, out, err = cli(missing, "hello")
    check(rc == 2 and missing in err, "missing socket rc %d %r" % (rc, err))
    rc, out, err = cli(ch)
    check(rc == 2 and "Usage" in err, "usage rc %d" % rc)
    rc, out, err = cli("--timeout", "zz", ch, "hello")
    check(rc == 2 and "zz" in err, "bad timeout rc %d" % rc)
    rc, out, err = cli(ch, "quiesce", '{"deadline-ms": 2000}')
    check(rc == 0 and json.loads(out)["ranks"] == [], "quiesce rc %d %r" % (rc, err))
    rc, out, err = cli(ch, "resume", '{"fabrics": ["tcp"], "rescan": false}')
    check(rc == 0 and json.loads(out)["rescan"] == "skipped", "resume rc %d %r" % (rc, err))


def test_agent_options():
    """Socket mode and group, bad options, detaching."""
    import grp
    import signal
    import stat
    ch = os.path.join(tmp, "opt-ch.sock")
    ranks = os.path.join(tmp, "run", "opt-ranks.sock")   # its directory is created
    group = grp.getgrgid(os.getgid()).gr_name
    p = subprocess.Popen([AGENT, "--channel", "listen:" + ch, "--socket", ranks, "--group", group])
    check(p.wait(10) == 0, "the detaching agent's parent exited %s" % p.returncode)
    end = time.monotonic() + 10
    while not listening(ch):
        check(time.monotonic() < end, "detached agent not listening")
        time.sleep(0.02)
    rc, out, err = cli(ch, "hello")
    check(rc == 0, "hello to the detached agent: %r" % err)
    pid = json.loads(out)["pid"]
    try:
        check(pid != p.pid, "did not detach")
        st = os.stat(ranks)
        check(stat.S_IMODE(st.st_mode) == 0o660 and st.st_gid == os.getgid(),
              "rank socket mode %o gid %d" % (stat.S_IMODE(st.st_mode), st.st_gid))
    finally:
        os.kill(pid, signal.SIGTERM)
    end = time.monotonic() + 10
    while os.path.exists(ranks):
        check(time.monotonic() < end, "detached agent did not clean up on SIGTERM")
        time.sleep(0.05)
    for args, want_rc, text in ((["--group", "kws-no-such-group"], 1, "kws-no-such-group"),
                                (["--bogus"], 2, "Usage"),
                                (["--channel", "listen:"], 1, "listen:"),
                                (["extra"], 2, "extra")):
        r = subprocess.run([AGENT, "--foreground", "--socket", os.path.join(tmp, "x.sock")] + args,
                           capture_output=True, text=True, timeout=20)
        check(r.returncode == want_rc and text in r.stderr, "%r: rc %d, %r" % (args, r.returncode, r.stderr))
        check(not os.path.exists(os.path.join(tmp, "x.sock")), "%r left its socket behind" % args)
    r = subprocess.run([AGENT, "--version"], capture_output=True, text=True, timeout=20)
    check(r.returncode == 0 and "protocol 1" in r.stdout, "--version: %r" % r.stdout)


status = 0
try:
    for t in (test_dump, test_machine, test_cli, test_agent_options):
        try:
            t()
            print("ok   " + t.__name__)
        except AssertionError as e:
            print("FAIL %s: %s" % (t.__name__, e))
            status = 1
finally:
    for p in procs:
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
    shutil.rmtree(tmp, ignore_errors=True)
sys.exit(status)
