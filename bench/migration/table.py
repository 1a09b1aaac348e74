#!/usr/bin/env python3
"""The storage table of bench/migration/run.sh, next to the paper's.

    table.py --rate R --rate-back R --rtt MS --base MB --overlay MB
             --ram-data MB --disk SIZE --ram MB [--csv F] [--markdown F]
             REPORT.json ...

Each REPORT.json is a `kawarimi migrate --report` file or qemu-blk.py's;
REPORT.json.meta (written by run.sh) holds the bytes that crossed the
link, the overlays' allocated bytes, the direction and the TLS setting.
"""
import argparse
import csv
import json
import re
import sys

# The paper's Table 2 (storage migration time [s], idle VMs), AIST -> cloud
# and back; full moved ~5.4 GB per VM (disk + memory), incremental ~260 MB.
# The 2-VM bytes are taken as twice the 1-VM figure (the paper gives one).
PAPER_S = {("full", 1, "a2b"): 172, ("full", 1, "b2a"): 179,
           ("full", 2, "a2b"): 215, ("full", 2, "b2a"): 299,
           ("incremental", 1, "a2b"): 9, ("incremental", 1, "b2a"): 9,
           ("incremental", 2, "a2b"): 9, ("incremental", 2, "b2a"): 9}
PAPER_B = {"full": 5.4e9, "incremental": 260e6}
PAPER_RATE = {"a2b": 920e6, "b2a": 490e6}


def bits(rate):
    m = re.match(r"([\d.]+)(k|m|g)bit$", rate)
    if not m:
        sys.exit(f"table.py: rate '{rate}' is not like 920mbit")
    return float(m.group(1)) * {"k": 1e3, "m": 1e6, "g": 1e9}[m.group(2)]


def setup_s(r, mode):
    """Seconds before any data moves: kawarimi's preflight (QMP
    connections and checks), the old mechanism's QMP connect (None in a
    report from before qemu-blk.py recorded it)."""
    if mode.startswith("qemu-"):
        ms = r.get("connect-ms")
    else:
        ms = max((p["duration-ms"] or 0 for v in r["vms"] for p in v.get("phases", [])
                  if p["phase"] == "preflight"), default=0)
    return None if ms is None else round(ms / 1000, 2)


def rows_of(paths, rate):
    rows = []
    for p in paths:
        r = json.load(open(p))
        meta = json.load(open(p + ".meta"))
        mode, n, d = meta["mode"], meta["vms"], meta["dir"]
        base = mode.replace("qemu-", "")
        t = r["duration-ms"] / 1000
        ideal = meta["wire"] * 8 / rate[d]
        ps = PAPER_S.get((base, n, d))
        pb = PAPER_B[base] * n
        rows.append({
            "mode": mode, "mechanism": "qemu-blk" if mode.startswith("qemu-") else "kawarimi",
            "dir": d, "vms": n, "tls": meta["tls"],
            # QEMU's disk.transferred counts the sectors "inc" skips as
            # moved: its storage bytes are the wire's less the memory's
            # (an upper bound: TCP/IP headers and stream framing included).
            "storage_bytes": (meta["wire"] - r["totals"]["memory-bytes"]
                              if mode.startswith("qemu-") else r["totals"]["storage-bytes"]),
            "memory_bytes": r["totals"]["memory-bytes"],
            "overlay_bytes": meta["overlay"], "wire_bytes": meta["wire"],
            "downtime_ms": max((v["memory"].get("downtime-ms") or 0) for v in r["vms"]),
            "time_s": round(t, 2), "ideal_s": round(ideal, 2),
            # what comes before any data moves: kawarimi's preflight
            # (QMP connections and checks), the old mechanism's QMP connect
            "setup_s": setup_s(r, mode),
            "time_over_ideal": round(t / ideal, 2) if ideal else None,
            "paper_s": ps, "paper_bytes": pb,
            "time_over_paper": round(t / ps, 3) if ps else None,
            "paper_over_ideal": round(ps / (pb * 8 / PAPER_RATE[d]), 2) if ps else None,
            "report": p,
        })
    return rows


def main():
    ap = argparse.ArgumentParser()
    for k in ("rate", "rate-back", "rtt", "base", "overlay", "ram-data", "disk", "ram"):
        ap.add_argument("--" + k, required=True)
    ap.add_argument("--csv")
    ap.add_argument("--markdown")
    ap.add_argument("reports", nargs="*")
    a = ap.parse_args()
    rate = {"a2b": bits(a.rate), "b2a": bits(a.rate_back)}
    rows = rows_of(a.reports, rate)
    head = (f"WAN A->B {a.rate}, B->A {a.rate_back}, RTT {a.rtt} ms; {a.disk} disks, base "
            f"{a.base} MiB, overlay {a.overlay} MiB/VM, {a.ram_data} MiB of data in {a.ram} MiB "
            f"RAM; QEMU 7.2 under TCG")
    cols = ("mode", "dir", "#VM", "tls", "disk GB", "ovl GB", "moved GB", "wire GB", "time s",
            "ideal s", "/ideal", "paper s", "paper GB", "/paper", "paper/ideal")
    lines = []
    for r in rows:
        lines.append((r["mode"], r["dir"].replace("2", "->").upper(), r["vms"], r["tls"],
                      f"{r['storage_bytes'] / 1e9:.2f}", f"{r['overlay_bytes'] / 1e9:.2f}",
                      f"{(r['storage_bytes'] + r['memory_bytes']) / 1e9:.2f}",
                      f"{r['wire_bytes'] / 1e9:.2f}", f"{r['time_s']:.1f}", f"{r['ideal_s']:.1f}",
                      f"{r['time_over_ideal']:.2f}", r["paper_s"] or "-",
                      f"{r['paper_bytes'] / 1e9:.2f}",
                      f"{r['time_over_paper']:.3f}" if r["time_over_paper"] else "-",
                      f"{r['paper_over_ideal']:.2f}" if r["paper_over_ideal"] else "-"))
    print("\n" + head + "\n")
    fmt = "%-16s %4s %3s %5s %7s %6s %8s %7s %7s %7s %6s %7s %8s %6s %11s"
    print(fmt % cols)
    for l in lines:
        print(fmt % l)
    # kawarimi's NBD + mirror against QEMU's old block migration, same case.
    cmp = []
    by = {(r["mode"], r["vms"], r["dir"], r["tls"]): r for r in rows}
    for (mode, n, d, tls), q in by.items():
        k = by.get((mode.replace("qemu-", ""), n, d, "none")) if mode.startswith("qemu-") else None
        if k:
            cmp.append((k, q))
    if cmp:
        print("\nkawarimi (NBD + blockdev-mirror) against QEMU's old block migration (migrate"
              "\nblk/inc, the paper's mechanism), same VMs, images and link, both in clear:")
        cf = "%-12s %4s %3s %6s %7s %6s %8s %8s %6s %8s %8s %6s %7s %7s"
        print(cf % ("storage", "dir", "#VM", "kw s", "qemu s", "time x", "kw wire", "qemu wire",
                    "x", "kw disk", "qemu disk", "x", "kw/ovl", "qemu/ovl"))
        for k, q in cmp:
            ovl = k["overlay_bytes"] if k["mode"] == "incremental" else None
            print(cf % (k["mode"], k["dir"].replace("2", "->").upper(), k["vms"], f"{k['time_s']:.1f}",
                        f"{q['time_s']:.1f}", f"{k['time_s'] / q['time_s']:.2f}",
                        f"{k['wire_bytes'] / 1e6:.1f}", f"{q['wire_bytes'] / 1e6:.1f}",
                        f"{k['wire_bytes'] / q['wire_bytes']:.2f}" if q["wire_bytes"] else "-",
                        f"{k['storage_bytes'] / 1e6:.1f}", f"{q['storage_bytes'] / 1e6:.1f}",
                        f"{k['storage_bytes'] / q['storage_bytes']:.2f}" if q["storage_bytes"] else "-",
                        f"{k['storage_bytes'] / ovl:.3f}" if ovl else "-",
                        f"{q['storage_bytes'] / ovl:.3f}" if ovl else "-"))
            k["vs_qemu_time"] = round(k["time_s"] / q["time_s"], 3)
            k["vs_qemu_wire"] = round(k["wire_bytes"] / q["wire_bytes"], 3) if q["wire_bytes"] else None
        print("  (MB; disk: storage bytes; ovl: the overlays' allocated bytes)"
              "\n  goal: kawarimi <= 1.0 x the old mechanism's time, storage bytes <= 1.1 x the overlay's")
    tls = {}
    for (mode, n, d, t), r in by.items():
        if t == "x509" and (mode, n, d, "none") in by:
            c = by[(mode, n, d, "none")]
            tls[(mode, n, d)] = (r["time_s"] / c["time_s"], r["wire_bytes"] / c["wire_bytes"])
    if tls:
        print("\nTLS cost (x509 run / tls: none run, same mode and VMs, same bench run):")
        for (mode, n, d), (tr, wr) in tls.items():
            print("  %-12s %s %d VM(s): time x %.3f, wire bytes x %.3f" % (mode, d, n, tr, wr))
    print("\ndisk = storage bytes (kawarimi: the mirror's progress, with full it counts zero"
          "\nareas, sent as cheap zero-writes; qemu-*: wire less memory, since QEMU's own"
          "\ndisk.transferred counts skipped sectors); ovl = the source overlays' allocated"
          "\nbytes; moved = disk + memory (ram.transferred); wire = bytes that left the"
          "\nsource's site (tbf counter); time = the whole run (kawarimi migrate, or"
          "\nmigrate-incoming to the last completed); ideal = wire / link rate; /paper ="
          "\ntime / the paper's time; paper/ideal = the paper's time / (its bytes at its"
          "\nlink rate: 920 Mbit/s A->B, 490 back); its 2-VM bytes assume twice the 1-VM"
          "\nfigure.")
    if a.csv:
        keys = ["mode", "mechanism", "dir", "vms", "tls", "storage_bytes", "memory_bytes",
                "overlay_bytes", "wire_bytes", "downtime_ms", "time_s", "setup_s", "ideal_s", "time_over_ideal", "paper_s",
                "paper_bytes", "time_over_paper", "paper_over_ideal", "vs_qemu_time",
                "vs_qemu_wire", "report"]
        with open(a.csv, "w", newline="") as f:
            w = csv.DictWriter(f, keys, extrasaction="ignore")
            w.writeheader()
            for r in rows:
                w.writerow(r)
    if a.markdown:
        with open(a.markdown, "w") as f:
            f.write(head + "\n\n| " + " | ".join(cols) + " |\n|" + "---|" * len(cols) + "\n")
            for l in lines:
                f.write("| " + " | ".join(str(x) for x in l) + " |\n")


if __name__ == "__main__":
    main()
