#!/usr/bin/env python3
"""The scale table of bench/migration/run.sh: each run's total time against
the lower bound set by the cluster's WAN cap.

    scale.py --rate R --rate-back R --cap CAP --rtt MS --sizes "RAM:OVL ..."
             [--csv F] REPORT.json ...

bound = (storage + memory bytes moved, from the report) / cap, the cap
being limits.bandwidth (CAP), or the link's rate when CAP is unlimited.
fixed = the time when no VM was in a data phase (storage or memory): the
preflight (QMP connects, queries, checks, journal), the barrier between
storage and memory, and the tail (switchover: the last bytes, the mirrors'
hand-over, cont at the destinations; finish: quit the sources).  The
set-up inside a data phase (blockdev-add, NBD export, drive-mirror,
migrate-incoming...) is not in fixed: it is part of "data s".
"""
import argparse
import csv
import json
import re
import sys

UNITS = {"bit": 1, "kbit": 1e3, "mbit": 1e6, "gbit": 1e9,
         "b": 8, "kb": 8e3, "mb": 8e6, "gb": 8e9,
         "kib": 8 * 1024, "mib": 8 * 1024 ** 2, "gib": 8 * 1024 ** 3}


def bits(rate):
    """bit/s of a tc rate (920mbit) or a cluster file's rate (300Mbit/s)."""
    m = re.match(r"([\d.]+)\s*([a-z]*?)(/s)?$", rate.strip().lower())
    if not m or m.group(2) not in UNITS:
        sys.exit(f"scale.py: rate '{rate}' is not like 920mbit or 300Mbit/s")
    return float(m.group(1)) * UNITS[m.group(2)]


def spans(r):
    """(first data start, last data end, union of the data phases' time)."""
    iv = [(p["start"], p["end"]) for v in r["vms"] for p in v.get("phases", [])
          if p["phase"] in ("storage", "memory") and p["end"]]
    iv.sort()
    busy, cur = 0.0, None
    for s, e in iv:
        if cur and s <= cur[1]:
            cur[1] = max(cur[1], e)
        else:
            if cur:
                busy += cur[1] - cur[0]
            cur = [s, e]
    if cur:
        busy += cur[1] - cur[0]
    return (iv[0][0], max(e for _, e in iv), busy) if iv else (r["started"], r["started"], 0.0)


def held(r):
    """The longest a source sat paused: from the end of its memory phase
    (pre-switchover: QEMU has stopped the guest) to the end of its
    switchover (the destination runs), the barrier included."""
    out = 0.0
    for v in r["vms"]:
        ph = {p["phase"]: p for p in v.get("phases", [])}
        if "memory" in ph and "switchover" in ph and ph["switchover"]["end"]:
            out = max(out, ph["switchover"]["end"] - ph["memory"]["end"])
    return out


def main():
    ap = argparse.ArgumentParser()
    for k in ("rate", "rate-back", "cap", "rtt", "sizes"):
        ap.add_argument("--" + k, required=True)
    ap.add_argument("--csv")
    ap.add_argument("reports", nargs="*")
    a = ap.parse_args()
    link = {"a2b": bits(a.rate), "b2a": bits(a.rate_back)}
    cap = None if a.cap in ("unlimited", "0") else bits(a.cap)
    rows = []
    for p in a.reports:
        r = json.load(open(p))
        meta = json.load(open(p + ".meta"))
        if meta["mode"].startswith("qemu-"):
            continue
        c = cap or link[meta["dir"]]
        moved = r["totals"]["storage-bytes"] + r["totals"]["memory-bytes"]
        t = r["duration-ms"] / 1000
        d0, d1, busy = spans(r)
        bound = moved * 8 / c
        fixed = t - busy
        rows.append({
            "vms": meta["vms"], "parallel": meta.get("parallel"), "order": meta.get("order"),
            "mode": meta["mode"], "dir": meta["dir"], "tls": meta["tls"],
            "moved_mb": round(moved / 1e6, 1), "wire_mb": round(meta["wire"] / 1e6, 1),
            "cap_mbit": round(c / 1e6, 1), "bound_s": round(bound, 2), "time_s": round(t, 2),
            "ratio": round(t / bound, 3), "fixed_s": round(fixed, 2),
            "pre_s": round(d0 - r["started"], 2), "post_s": round(r["ended"] - d1, 2),
            "data_s": round(busy, 2), "data_ratio": round(busy / bound, 3),
            "held_s": round(held(r), 2),
            "max_parallel_seen": r.get("max-parallel-seen"), "load": meta.get("load"),
            "report": p,
        })
    if not rows:
        return
    print(f"\nScale: WAN cap {a.cap} (link A->B {a.rate}, RTT {a.rtt} ms); per VM RAM data:overlay "
          f"MiB, cycled: {a.sizes}\n")
    cols = ("VMs", "par", "order", "mode", "moved MB", "wire MB", "cap Mb/s", "bound s",
            "time s", "ratio", "fixed s", "pre", "post", "data s", "data/bound", "held s", "load")
    fmt = "%3s %3s %5s %-11s %8s %7s %8s %7s %7s %6s %7s %5s %5s %7s %10s %6s  %s"
    print(fmt % cols)
    for w in rows:
        print(fmt % (w["vms"], w["parallel"], w["order"], w["mode"], f"{w['moved_mb']:.0f}",
                     f"{w['wire_mb']:.0f}", f"{w['cap_mbit']:.0f}", f"{w['bound_s']:.1f}",
                     f"{w['time_s']:.1f}", f"{w['ratio']:.2f}", f"{w['fixed_s']:.1f}",
                     f"{w['pre_s']:.1f}", f"{w['post_s']:.1f}", f"{w['data_s']:.1f}",
                     f"{w['data_ratio']:.2f}", f"{w['held_s']:.1f}", w["load"] or "-"))
    print("\nmoved = storage + memory bytes (the report's totals); bound = moved / cap;"
          "\nratio = time / bound; fixed = time with no VM in storage or memory = pre"
          "\n(preflight) + the storage->memory barrier + post (switchover, finish);"
          "\ndata = time some VM was in storage or memory; goal: data/bound <= 1.15;"
          "\nheld = the longest a source sat paused (end of its memory phase, QEMU's"
          "\npre-switchover, to the end of the switchover): its guest's downtime;"
          "\nload = the 1/5/15-minute load average as the run ended.")
    if a.csv:
        with open(a.csv, "w", newline="") as f:
            w = csv.DictWriter(f, list(rows[0]))
            w.writeheader()
            w.writerows(rows)


if __name__ == "__main__":
    main()
