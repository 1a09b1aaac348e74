#!/usr/bin/env python3
"""QEMU's old block migration, the paper's mechanism, as a baseline.

    qemu-blk.py --mode incremental|full --report OUT.json \\
        NAME,SRC-QMP,DST-QMP,LISTEN-URI,CONNECT-URI ...

For each VM at once: `migrate-incoming LISTEN-URI` at the destination
(started `-incoming defer -S`), then `migrate` at the source with
"blk": true and "inc": true for incremental (only the sectors allocated in
the top image move; the destination's image has the same base) or false
for full; waits until every source says `completed` and writes a small
JSON report: per VM QEMU's own `disk` (the last seen while it ran: QEMU
drops it at completion) and `ram` counters and downtime, and
the wall time from the first `migrate-incoming` to the last completion.
QEMU 7.2 still has this (deprecated; removed in 9.1); kawarimi does not use
it.  Only bench/migration/run.sh calls this, as the baseline of its
qemu-incremental / qemu-full modes.
"""
import argparse
import json
import socket
import sys
import time


class Qmp:
    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.connect(path)
        self.f = self.s.makefile("rwb", buffering=0)
        self.path = path
        json.loads(self.f.readline())  # greeting
        self.cmd("qmp_capabilities")

    def cmd(self, name, **args):
        msg = {"execute": name}
        if args:
            msg["arguments"] = args
        self.f.write((json.dumps(msg) + "\n").encode())
        while True:
            line = self.f.readline()
            if not line:
                sys.exit(f"qemu-blk: {self.path}: QEMU closed the connection after '{name}'")
            m = json.loads(line)
            if "event" in m:
                continue
            if "error" in m:
                sys.exit(f"qemu-blk: {self.path}: {name}: {m['error'].get('desc')}")
            return m.get("return")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", choices=("incremental", "full"), required=True)
    ap.add_argument("--report", required=True)
    ap.add_argument("--timeout", type=float, default=3600)
    ap.add_argument("vms", nargs="+")
    a = ap.parse_args()
    vms = []
    connecting = time.time()
    for spec in a.vms:
        f = spec.split(",")
        if len(f) != 5:
            sys.exit(f"qemu-blk: '{spec}': want NAME,SRC-QMP,DST-QMP,LISTEN-URI,CONNECT-URI")
        vms.append({"name": f[0], "src": Qmp(f[1]), "dst": Qmp(f[2]), "listen": f[3],
                    "connect": f[4]})
    started = time.time()
    for v in vms:
        v["dst"].cmd("migrate-incoming", uri=v["listen"])
    for v in vms:
        v["src"].cmd("migrate", uri=v["connect"], blk=True, inc=a.mode == "incremental")
    left = list(vms)
    while left:
        if time.time() - started > a.timeout:
            sys.exit(f"qemu-blk: not completed within {a.timeout:g} s")
        for v in list(left):
            q = v["src"].cmd("query-migrate")
            st = q.get("status")
            # QEMU drops "disk" from the answer once the migration ended:
            # keep the last one seen (the bulk phase is over by then).
            if "disk" in q:
                v["disk"] = q["disk"]
            if st in ("failed", "cancelled"):
                sys.exit(f"qemu-blk: {v['name']}: migration {st}: {q.get('error-desc', '')}")
            if st == "completed":
                v["ended"] = time.time()
                v["q"] = q
                left.remove(v)
        time.sleep(0.05)
    ended = max(v["ended"] for v in vms)
    # As kawarimi does at switchover, the destinations run (`cont`), then
    # stop again: vm_stop flushes the images, so their qcow2 metadata is
    # on disk for run.sh's compare even if QEMU then fails on its way out
    # (7.2 was seen to crash at SIGTERM after an incoming block migration).
    for v in vms:
        for _ in range(200):
            if v["dst"].cmd("query-status").get("status") != "inmigrate":
                break
            time.sleep(0.05)
        v["dst"].cmd("cont")
        v["dst"].cmd("stop")
    out = {"report": "qemu-block-migration", "storage": f"qemu-{a.mode}",
           "started": started, "ended": ended,
           "duration-ms": round((ended - started) * 1000),
           # connecting to QMP (and QEMU's start-up, answering late) is
           # not in duration-ms; kawarimi's preflight has it
           "connect-ms": round((started - connecting) * 1000),
           "vms": [], "totals": {}}
    for v in vms:
        q = v["q"]
        disk, ram = v.get("disk", {}), q.get("ram", {})
        out["vms"].append({"name": v["name"], "storage": {"bytes": disk.get("transferred", 0)},
                           "memory": {"bytes": ram.get("transferred", 0),
                                      "downtime-ms": q.get("downtime")},
                           "duration-ms": round((v["ended"] - started) * 1000)})
    sb = sum(v["storage"]["bytes"] for v in out["vms"])
    mb = sum(v["memory"]["bytes"] for v in out["vms"])
    out["totals"] = {"storage-bytes": sb, "memory-bytes": mb, "bytes": sb + mb}
    with open(a.report, "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
