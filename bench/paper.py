#!/usr/bin/env python3
"""bench/paper.py OUT: bench/paper's report from what its run left in OUT.

Reads OUT/conditions.txt, OUT/storage/ (bench/migration/run.sh's raw
reports and storage.csv) and OUT/lab/ (the lab migrations' --report
files, the PingPong log, the symvirt/QMP traces of bench/paper-ssh.py) and
writes OUT/report.md, OUT/{storage,blockmig,phases,goodput,pauses}.csv and
OUT/{goodput,phases,storage}.png (matplotlib; without it, no pictures and
the report says so).  Every figure stands next to the paper's (Takano et
al. 2013) with a ratio.  Parts whose data
is missing are reported as not measured.
"""
import csv
import glob
import json
import os
import re
import statistics
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lab"))
import kwl_pplog  # noqa: E402

try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:
    plt = None

# The paper's figures.
PAPER_OVERHEAD_S = {"a2b": 4.0, "b2a": 22.0}       # beyond storage
PAPER_GOODPUT = {"a": (2100.0, "IB QDR, L1 VM"), "b": (72.4, "virtio_net + GRE, nested L2 VM")}
PAPER_GOODPUT_L1 = 111.0                           # virtio_net, L1 VM (89% of GbE)
DIRNAME = {"a2b": "A->B", "b2a": "B->A"}
PHASE_COLS = ("quiesce", "unplug", "memory", "switchover", "plug", "link-up", "reconnect")


def fmt(x, spec=".1f", none="-"):
    return none if x is None else format(x, spec)


def ratio(a, b, spec=".2f"):
    return fmt(a / b, spec) if a is not None and b else "-"


def md_table(head, rows):
    out = "| " + " | ".join(head) + " |\n|" + "|".join("---:" if i else "---" for i in range(len(head))) + "|\n"
    for r in rows:
        out += "| " + " | ".join(str(x) for x in r) + " |\n"
    return out


def write_csv(path, rows, keys):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, keys, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow(r)


# ---- 1 and 5: storage ------------------------------------------------------

def storage_rows(out):
    p = os.path.join(out, "storage", "storage.csv")
    if not os.path.exists(p):
        return []
    rows = list(csv.DictReader(open(p)))
    for r in rows:
        for k in ("vms",):
            r[k] = int(r[k])
        for k in ("storage_bytes", "memory_bytes", "overlay_bytes", "wire_bytes", "downtime_ms", "time_s", "setup_s",
                  "ideal_s", "paper_s", "paper_bytes"):
            r[k] = float(r[k]) if r.get(k) not in (None, "") else None
    return rows


def storage_section(rows):
    md = "## 1. Storage migration (the paper's Table 2)\n\n"
    kw = [r for r in rows if r["mechanism"] == "kawarimi" and r["tls"] == "none"]
    if not kw:
        return md + "Not measured in this run.\n\n", []
    head = ("storage", "dir", "#VM", "time s", "paper s", "time / paper", "moved GB", "paper GB",
            "moved / paper", "wire GB", "time / ideal", "paper / ideal")
    body = []
    for r in sorted(kw, key=lambda r: (r["mode"] != "incremental", r["vms"], r["dir"])):
        moved = r["storage_bytes"] + r["memory_bytes"]
        body.append((r["mode"], DIRNAME[r["dir"]], r["vms"], fmt(r["time_s"]), fmt(r["paper_s"], ".0f"),
                     ratio(r["time_s"], r["paper_s"], ".3f"), fmt(moved / 1e9, ".2f"),
                     fmt(r["paper_bytes"] / 1e9, ".2f"), ratio(moved, r["paper_bytes"]),
                     fmt(r["wire_bytes"] / 1e9, ".2f"), r["time_over_ideal"], r["paper_over_ideal"] or "-"))
    md += md_table(head, body)
    md += ("\nmoved = storage (the mirror's progress; with full it counts zero areas, sent as "
           "zero-writes) + memory; wire = bytes that left the source's site; ideal = wire at "
           "the link rate; paper / ideal = the paper's time over its bytes at its link rate "
           "(920 Mbit/s A->B, 490 back; its 2-VM bytes taken as twice the 1-VM figure).  "
           "The sizes are this run's (conditions above), not the paper's, unless it was a "
           "full run; time / paper compares the wall times as they are.\n\n")
    return md, kw


def blockmig_section(rows):
    md = ("## 5. Against the paper's own mechanism: QEMU's old block migration\n\n"
          "Same VM set-up, images and shaped link, both in clear: kawarimi's NBD + "
          "blockdev-mirror (`kawarimi migrate`, preflight to finish) against QEMU 7.2's "
          "`migrate` with `\"blk\": true` (`\"inc\": true` for incremental), what the paper "
          "used (removed in QEMU 9.1; only the benchmark drives it).  Goal: kawarimi at most "
          "1.0x its time, storage bytes at most 1.1x the overlay's.\n\n")
    by = {(r["mode"], r["vms"], r["dir"]): r for r in rows if r["tls"] == "none"}
    out = []
    for (mode, n, d), q in sorted(by.items()):
        if not mode.startswith("qemu-"):
            continue
        k = by.get((mode[5:], n, d))
        if not k:
            continue
        ovl = k["overlay_bytes"] if k["mode"] == "incremental" else None
        kmove = k["time_s"] - (k.get("setup_s") or 0)
        qmove = q["time_s"]
        out.append({"storage": k["mode"], "dir": d, "vms": n, "kawarimi_s": k["time_s"], "qemu_s": q["time_s"],
                    "kawarimi_setup_s": k.get("setup_s"), "qemu_connect_s": q.get("setup_s"),
                    "time_ratio": round(kmove / qmove, 3),
                    "whole_ratio": round(k["time_s"] / (qmove + (q.get("setup_s") or 0)), 3),
                    "kawarimi_wire": k["wire_bytes"], "qemu_wire": q["wire_bytes"],
                    "wire_ratio": round(k["wire_bytes"] / q["wire_bytes"], 3),
                    "kawarimi_disk": k["storage_bytes"], "qemu_disk": q["storage_bytes"],
                    "overlay": k["overlay_bytes"],
                    "kawarimi_downtime_ms": k.get("downtime_ms"), "qemu_downtime_ms": q.get("downtime_ms"),
                    "kawarimi_over_overlay": round(k["storage_bytes"] / ovl, 3) if ovl else None,
                    "qemu_over_overlay": round(q["storage_bytes"] / ovl, 3) if ovl else None})
    if not out:
        return md + "Not measured in this run.\n\n", out
    head = ("storage", "dir", "#VM", "kawarimi s (preflight)", "qemu-blk s (QMP connect)",
            "time ratio (goal <= 1.0)", "with set-up",
            "kawarimi wire MB", "qemu-blk wire MB", "wire ratio", "kawarimi disk / overlay (goal <= 1.1)",
            "qemu-blk disk / overlay", "kawarimi downtime ms", "qemu-blk downtime ms")
    body = [(o["storage"], DIRNAME[o["dir"]], o["vms"],
             f"{o['kawarimi_s']:.1f} ({fmt(o['kawarimi_setup_s'], '.1f')})",
             f"{o['qemu_s']:.1f} ({fmt(o['qemu_connect_s'], '.1f')})",
             fmt(o["time_ratio"], ".2f") + (" (met)" if o["time_ratio"] <= 1.0 else " (not met)"),
             fmt(o["whole_ratio"], ".2f"),
             fmt(o["kawarimi_wire"] / 1e6), fmt(o["qemu_wire"] / 1e6), fmt(o["wire_ratio"], ".2f"),
             (fmt(o["kawarimi_over_overlay"], ".3f") + (" (met)" if o["kawarimi_over_overlay"] <= 1.1 else " (not met)"))
             if o["kawarimi_over_overlay"] is not None else "-",
             fmt(o["qemu_over_overlay"], ".3f"), fmt(o["kawarimi_downtime_ms"], ".0f"),
             fmt(o["qemu_downtime_ms"], ".0f")) for o in out]
    md += md_table(head, body)
    md += ("\ntime ratio = kawarimi's time without its preflight over the old mechanism's "
           "`migrate-incoming` to the last `completed` (neither counts connecting to QMP "
           "nor the QEMUs, just started, answering late); `with set-up` = kawarimi's whole "
           "run over the old mechanism's time plus its QMP connect (`-` where qemu-blk.py "
           "did not record it yet).  ")
    md += ("disk = storage bytes: kawarimi's mirror progress; for QEMU's old mechanism the "
           "bytes on the wire less its `ram.transferred` (its own `disk.transferred` counts "
           "the sectors `inc` skips), so TCP/IP headers are in it.  Downtime: "
           "QEMU's own figure (the longest VM's); kawarimi's includes what it does while "
           "the source is paused at `pre-switchover` (the mirror cancelled to a consistent "
           "copy, the NBD client and export removed, `migrate-continue`).\n\n")
    return md, out


# ---- 2-4: the lab ------------------------------------------------------------

def load_trace(path):
    out = []
    if os.path.exists(path):
        for line in open(path):
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
    return out


def exchanges(trace, name, lo, hi):
    """[(t_sent, t_reply, reply)] for commands NAME sent within [lo, hi]."""
    sent = {}
    res = []
    for e in trace:
        m = e["msg"]
        if not isinstance(m, dict):
            continue
        if e["dir"] == "to-guest" and m.get("execute") == name and lo <= e["t"] <= hi:
            sent[json.dumps(m.get("id"))] = (e["t"], m)
        elif e["dir"] == "from-guest" and ("return" in m or "error" in m):
            k = json.dumps(m.get("id"))
            if k in sent:
                t0, cmd = sent.pop(k)
                res.append((t0, e["t"], m, cmd))
    return res


def vm_phases(report, vm, tdir):
    """One VM's overhead phases (seconds) in one migration."""
    ph = {p["phase"]: p for p in vm["phases"]}
    dur = {k: (p["duration-ms"] or 0) / 1000 for k, p in ph.items()}
    d = "a2b" if vm["source"].get("hca") else "b2a"
    dst = "b" if d == "a2b" else "a"
    node = vm["name"]
    lo, hi = report["started"], report["ended"] + 1
    row = {"vm": node, "dir": d}
    row["quiesce"] = dur.get("quiesce")
    row["unplug"] = dur.get("unplug")
    row["memory"] = dur.get("memory")
    row["switchover"] = dur.get("switchover")
    row["preflight"] = dur.get("preflight")
    row["storage"] = dur.get("storage")
    row["finish"] = dur.get("finish")
    qmp = load_trace(os.path.join(tdir, f"{node}-{dst}.qmp.jsonl"))
    sv = load_trace(os.path.join(tdir, f"{node}-{dst}.symvirt.jsonl"))
    adds = exchanges(qmp, "device_add", lo, hi)
    row["plug"] = (adds[-1][1] - adds[-1][0]) if adds else None
    resumes = [x for x in exchanges(sv, "resume", lo, hi)
               if "verbs" in (x[3].get("arguments") or {}).get("fabrics", [])]
    lw = resumes[-1][2].get("return", {}).get("link-wait-ms") if resumes else None
    row["link-up"] = lw / 1000 if lw is not None else None
    row["resume_elapsed"] = (resumes[-1][2].get("return", {}).get("elapsed-ms", 0) / 1000) if resumes else None
    # reconnect: the job getting its pairs back once the device is there:
    # resume-source (A->B, over TCP) and the destination's resume phase,
    # less the wait for the link.
    rec = (dur.get("resume-source") or 0) + (dur.get("resume") or 0) - (row["link-up"] or 0)
    row["reconnect"] = rec
    row["wall"] = report["duration-ms"] / 1000
    row["downtime_ms"] = vm["memory"].get("downtime-ms")
    row["blackout_ms"] = (vm.get("blackout") or {}).get("total-ms")
    row["storage_bytes"] = vm["storage"].get("bytes")
    row["memory_bytes"] = vm["memory"].get("bytes")
    return row


def lab_reports(lab):
    reps = []
    for p in sorted(glob.glob(os.path.join(lab, "report-*.json"))):
        m = re.search(r"report-(a2b|b2a)-(\d+)\.json$", p)
        if m:
            reps.append((int(m.group(2)), m.group(1), p, json.load(open(p))))
    return sorted(reps)


def span(report, phase):
    """(earliest start, latest end) of PHASE over the VMs, or None."""
    s = [p for v in report["vms"] for p in v["phases"] if p["phase"] == phase and p.get("end")]
    return (min(p["start"] for p in s), max(p["end"] for p in s)) if s else None


def phases_section(reps, tdir):
    md = ("## 2. Migration overhead beyond storage, per phase\n\n"
          "From `kawarimi migrate --report` of the lab migrations with the MPI job "
          "(kwl-mpijob) and PingPong running; `plug` (QMP `device_add`) and `link-up` (the "
          "agent's `link-wait-ms`: from its PCI rescan to an ACTIVE verbs port) from the QMP and symvirt "
          "replies timed on the way (bench/paper-ssh.py); `reconnect` = the resume phases "
          "less the link wait (the ranks back on their pairs, `peers` included).  Per "
          "migration the cluster's figure: the longest VM per phase.  `beyond storage` = "
          "the wall time less the storage phase's span; the paper's ~4 s (A->B) and ~22 s "
          "(B->A) are the same thing.\n\n")
    rows, per_mig = [], []
    for c, d, p, r in reps:
        vr = [vm_phases(r, v, tdir) for v in r["vms"]]
        for v in vr:
            v["migration"] = f"{d}-{c}"
        rows += vr
        agg = {"migration": f"{d}-{c}", "dir": d}
        for k in PHASE_COLS + ("preflight", "finish"):
            vals = [v[k] for v in vr if v.get(k) is not None]
            agg[k] = max(vals) if vals else None
        st = span(r, "storage")
        agg["wall"] = r["duration-ms"] / 1000
        agg["storage_span"] = (st[1] - st[0]) if st else 0
        agg["beyond"] = agg["wall"] - agg["storage_span"]
        agg["beyond_np"] = agg["beyond"] - (agg["preflight"] or 0)
        agg["device"] = sum(agg[k] or 0 for k in ("quiesce", "unplug", "plug", "link-up", "reconnect"))
        per_mig.append(agg)
    if not per_mig:
        return md + "Not measured in this run.\n\n", rows, per_mig
    head = ("migration", "preflight") + PHASE_COLS + (
        "wall s", "storage s", "beyond storage s", "paper s", "beyond / paper",
        "beyond storage and preflight s", "/ paper", "device work s", "/ paper")
    body = []
    for a in per_mig:
        ps = PAPER_OVERHEAD_S[a["dir"]]
        body.append((DIRNAME[a["dir"]] + " #" + a["migration"].split("-")[1], fmt(a["preflight"], ".2f"))
                    + tuple(fmt(a[k], ".2f") for k in PHASE_COLS)
                    + (fmt(a["wall"]), fmt(a["storage_span"]), fmt(a["beyond"]), fmt(ps, ".0f"),
                       ratio(a["beyond"], ps), fmt(a["beyond_np"]), ratio(a["beyond_np"], ps),
                       fmt(a["device"], ".2f"), ratio(a["device"], ps)))
    md += md_table(head, body)
    md += ("\n(seconds; `-`: the phase does not happen in that direction: no HCA to quiesce "
           "and unplug at B, none to plug and wait for at B.)  `preflight` (connecting QMP and "
           "symvirt through each site's sshd, checks) runs before any data moves; the paper "
           "does not say whether its overhead counts such a step, so both are given.  "
           "`device work` = quiesce + "
           "unplug + plug + link-up + reconnect, what the paper says dominates its overhead "
           "(PCI hotplug and IB link-up, ~20 s on its ConnectX-2); memory here is the live "
           "copy of RAM, during which the job runs on (over virtio-net).\n\n")
    return md, rows, per_mig


def site_windows(reps, first, last):
    """[(label, site, lo, hi)]: the job's time at each site, away from moves."""
    edges = [first]
    labels = []
    site = "a"
    for c, d, p, r in reps:
        edges += [r["started"], r["ended"] + kwl_pplog.AFTER_S]
    edges.append(last)
    out = []
    for i in range(0, len(edges), 2):
        lo, hi = edges[i], edges[i + 1]
        if i:
            site = "b" if site == "a" else "a"
        labels.append(site)
        out.append((f"{'at A' if site == 'a' else 'at B'} ({len([l for l in labels if l == site])})",
                    site, lo, hi))
    return out


def goodput_section(reps, lab, size):
    md = "## 3. PingPong goodput per site\n\n"
    log = os.path.join(lab, "pingpong.log")
    if not os.path.exists(log):
        return md + "Not measured in this run.\n\n", [], []
    rr = kwl_pplog.rounds(log)
    if len(rr) < 2:
        return md + "No PingPong rounds were logged.\n\n", [], rr
    rows = []
    for label, site, lo, hi in site_windows(reps, rr[0][0], rr[-1][0]):
        v = [m for t, m, _ in rr if lo <= t < hi]
        if not v:
            continue
        pg, what = PAPER_GOODPUT[site]
        med = statistics.median(v)
        rows.append({"period": label, "site": site, "rounds": len(v), "median_MBps": round(med, 2),
                     "p10_MBps": round(sorted(v)[len(v) // 10], 2),
                     "p90_MBps": round(sorted(v)[len(v) * 9 // 10], 2),
                     "paper_MBps": pg, "paper_what": what, "ratio": round(med / pg, 4)})
    head = ("period", "path here", "rounds", "median MB/s", "p10-p90 MB/s", "paper MB/s", "paper's path",
            "ratio")
    path = {"a": "kawarimi BTL over verbs (soft-RoCE on the e1000e \"HCA\")",
            "b": "kawarimi BTL over TCP on virtio-net"}
    md += (f"kawarimi-pingpong --continuous --size {size} (IMB PingPong method, MB/s = 10^6 "
           "bytes / half round trip) between node1 and node2 all through the run, the MPI job "
           "beside it; per site the rounds away from any migration (from each migration's "
           "start to 10 s after its end left out).\n\n")
    md += md_table(head, [(r["period"], path[r["site"]], r["rounds"], fmt(r["median_MBps"], ".2f"),
                           f"{r['p10_MBps']:.2f}-{r['p90_MBps']:.2f}", fmt(r["paper_MBps"]),
                           r["paper_what"], fmt(r["ratio"], ".4f")) for r in rows])
    a = [r["median_MBps"] for r in rows if r["site"] == "a"]
    b = [r["median_MBps"] for r in rows if r["site"] == "b"]
    if a and b:
        md += (f"\nB / A: {statistics.median(b) / statistics.median(a):.2f} here; in the paper "
               f"{PAPER_GOODPUT['b'][0] / PAPER_GOODPUT['a'][0]:.3f} (nested L2) or "
               f"{PAPER_GOODPUT_L1 / PAPER_GOODPUT['a'][0]:.3f} (L1 virtio_net, 111 MB/s).  "
               "Under TCG the emulated CPUs set the pace of both paths, and soft-RoCE is no "
               "faster than TCP over virtio-net here: the lab shows the switch of transport "
               "and its cost in time, not the InfiniBand speed-up.\n")
    md += "\n![goodput over time](goodput.png)\n\n"
    return md, rows, rr


def pauses_section(reps, rr, phases_rows):
    md = ("## 4. The pause the application sees, per migration\n\n"
          "The longest gap between PingPong rounds (timestamped in the guest; a round is "
          "100 ms of ping-pongs) from the migration's start to 10 s after its end, next to "
          "QEMU's downtime (its own measure of the stop-and-copy), the job's blackout "
          "(the coordinator's quiesce to the pairs back) and the device events.\n\n")
    ts = [t for t, _, _ in rr]
    out = []
    for c, d, p, r in reps:
        g = kwl_pplog.pause_of(ts, r) if ts else None
        vr = [x for x in phases_rows if x["migration"] == f"{d}-{c}"]
        dt = [x["downtime_ms"] for x in vr if x["downtime_ms"] is not None]
        bo = [x["blackout_ms"] for x in vr if x["blackout_ms"] is not None]
        un = [x["unplug"] for x in vr if x["unplug"]]
        pl = [x["plug"] for x in vr if x["plug"]]
        lu = [x["link-up"] for x in vr if x["link-up"] is not None]
        typical = statistics.median([b - a for a, b in zip(ts, ts[1:])]) if len(ts) > 2 else None
        out.append({"migration": f"{d}-{c}", "dir": d, "pause_ms": round(g[0] * 1000) if g else None,
                    "typical_gap_ms": round(typical * 1000) if typical else None,
                    "downtime_ms": max(dt) if dt else None, "blackout_ms": max(bo) if bo else None,
                    "unplug_ms": round(max(un) * 1000) if un else None,
                    "plug_ms": round(max(pl) * 1000) if pl else None,
                    "link_up_ms": round(max(lu) * 1000) if lu else None,
                    "paper_overhead_ms": PAPER_OVERHEAD_S[d] * 1000})
    if not out:
        return md + "Not measured in this run.\n\n", out
    head = ("migration", "longest pause ms", "usual gap ms", "QEMU downtime ms", "pause / downtime",
            "job blackout ms", "unplug (DEVICE_DELETED) ms", "plug (device_add) ms", "link-up ms",
            "paper overhead ms", "pause / paper")
    md += md_table(head, [(DIRNAME[o["dir"]] + " #" + o["migration"].split("-")[1], fmt(o["pause_ms"], ".0f"),
                           fmt(o["typical_gap_ms"], ".0f"), fmt(o["downtime_ms"], ".0f"),
                           ratio(o["pause_ms"], o["downtime_ms"], ".1f"), fmt(o["blackout_ms"], ".0f"),
                           fmt(o["unplug_ms"], ".0f"), fmt(o["plug_ms"], ".0f"), fmt(o["link_up_ms"], ".0f"),
                           fmt(o["paper_overhead_ms"], ".0f"), ratio(o["pause_ms"], o["paper_overhead_ms"], ".3f"))
                          for o in out])
    md += ("\n(downtime, blackout and device events: the longest VM's.  The paper gives no "
           "application pause of its own; its overhead beyond storage is the closest figure.)\n\n")
    return md, out


# ---- pictures ------------------------------------------------------------------

PH_COLOR = {"preflight": "#e5e5e5", "storage": "#9ecae1", "quiesce": "#fdae6b", "unplug": "#e6550d", "resume-source": "#a1d99b",
            "memory": "#c6dbef", "switchover": "#756bb1", "resume": "#31a354"}


def plot_goodput(path, reps, rr, size):
    t0 = rr[0][0]
    fig, ax = plt.subplots(figsize=(9, 4), dpi=80)
    for c, d, p, r in reps:
        for ph, col in PH_COLOR.items():
            s = span(r, ph)
            if s:
                ax.axvspan(s[0] - t0, s[1] - t0, color=col, alpha=0.6, lw=0,
                           label=ph if c == 1 and d == "a2b" or ph == "resume" and d == "b2a" and c == 1 else None)
        for v in r["vms"]:
            for b in (v.get("blackout") or {}).get("spans", []):
                ax.axvspan(b["start"] - t0, b["end"] - t0, ymin=0.9, ymax=1.0, color="red", lw=0)
        ax.text(r["started"] - t0, 0.97, " " + DIRNAME[d], transform=ax.get_xaxis_transform(),
                fontsize=8, va="top")
    ax.plot([t - t0 for t, _, _ in rr], [m for _, m, _ in rr], ".", ms=2.5, color="black",
            label=f"PingPong {size} B, MB/s per round")
    ax.set_xlabel("seconds since the first round")
    ax.set_ylabel("MB/s")
    ax.set_ylim(bottom=0)
    h, lab = ax.get_legend_handles_labels()
    seen = {}
    for hh, ll in zip(h, lab):
        seen.setdefault(ll, hh)
    ax.legend(seen.values(), seen.keys(), fontsize=7, loc="upper center", ncol=4,
              bbox_to_anchor=(0.5, -0.16), frameon=False)
    ax.set_title("PingPong goodput through A->B->A, the migrations' phases shaded "
                 "(red bar on top: the job's blackout)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_phases(path, per_mig):
    fig, ax = plt.subplots(figsize=(7, 3.4), dpi=80)
    labels = [DIRNAME[a["dir"]] + " #" + a["migration"].split("-")[1] for a in per_mig]
    left = [0.0] * len(per_mig)
    cols = {"quiesce": "#fdae6b", "unplug": "#e6550d", "memory": "#c6dbef", "switchover": "#756bb1",
            "plug": "#9e9ac8", "link-up": "#fd8d3c", "reconnect": "#31a354"}
    for k in PHASE_COLS:
        w = [a[k] or 0 for a in per_mig]
        ax.barh(labels, w, left=left, color=cols[k], label=k)
        left = [x + y for x, y in zip(left, w)]
    for i, a in enumerate(per_mig):
        ax.plot([PAPER_OVERHEAD_S[a["dir"]]] * 2, [i - 0.4, i + 0.4], color="black", lw=2)
    ax.plot([], [], color="black", lw=2, label="paper (beyond storage)")
    ax.set_xlabel("seconds")
    ax.legend(fontsize=7, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.2), frameon=False)
    ax.invert_yaxis()
    ax.set_title("overhead per phase (the longest VM's) against the paper's", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_storage(path, kw, rows):
    fig, ax = plt.subplots(figsize=(7, 3.4), dpi=80)
    kw = sorted(kw, key=lambda r: (r["mode"] != "incremental", r["vms"], r["dir"]))
    q = {(r["mode"][5:], r["vms"], r["dir"]): r for r in rows
         if r["mode"].startswith("qemu-") and r["tls"] == "none"}
    labels = [f"{r['mode'][:4]} {r['vms']}VM {DIRNAME[r['dir']]}" for r in kw]
    x = range(len(kw))
    ax.bar([i - 0.27 for i in x], [r["time_s"] for r in kw], 0.27, label="kawarimi (NBD + mirror)")
    ax.bar(list(x), [q[(r["mode"], r["vms"], r["dir"])]["time_s"] if (r["mode"], r["vms"], r["dir"]) in q
                     else 0 for r in kw], 0.27, label="QEMU 7.2 block migration (blk/inc)")
    ax.bar([i + 0.27 for i in x], [r["paper_s"] or 0 for r in kw], 0.27, label="paper (QEMU 1.4, SINET)")
    ax.set_xticks(list(x))
    ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=7)
    ax.set_yscale("log")
    ax.set_ylabel("seconds")
    ax.legend(fontsize=7)
    ax.set_title("storage migration time (Table 2), same link figures", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = sys.argv[1]
    lab = os.path.join(out, "lab")
    tdir = os.path.join(lab, "trace")
    cond = open(os.path.join(out, "conditions.txt")).read() if os.path.exists(os.path.join(out, "conditions.txt")) else ""
    m = re.search(r"pingpong (\d+) B", cond)
    size = int(m.group(1)) if m else 0
    srows = storage_rows(out)
    md = "# kawarimi against the Ninja migration paper\n\n```\n" + cond + "```\n\n"
    s_md, kw = storage_section(srows)
    reps = lab_reports(lab)
    p_md, prow, per_mig = phases_section(reps, tdir)
    g_md, grow, rr = goodput_section(reps, lab, size)
    pa_md, parow = pauses_section(reps, rr, prow)
    b_md, brow = blockmig_section(srows)
    md += s_md + ("![storage time](storage.png)\n\n" if kw and plt else "")
    md += p_md + ("![phases](phases.png)\n\n" if per_mig and plt else "")
    md += g_md + pa_md + b_md
    if srows:
        write_csv(os.path.join(out, "storage.csv"), srows, list(srows[0].keys()))
    if brow:
        write_csv(os.path.join(out, "blockmig.csv"), brow, list(brow[0].keys()))
    if prow:
        write_csv(os.path.join(out, "phases.csv"), prow,
                  ["migration", "dir", "vm", "preflight", "storage", "quiesce", "unplug", "memory",
                   "switchover", "plug", "link-up", "reconnect", "finish", "resume_elapsed", "wall",
                   "downtime_ms", "blackout_ms", "storage_bytes", "memory_bytes"])
    if grow:
        write_csv(os.path.join(out, "goodput.csv"), grow, list(grow[0].keys()))
    if parow:
        write_csv(os.path.join(out, "pauses.csv"), parow, list(parow[0].keys()))
    if plt is None:
        md += "(no pictures: matplotlib is not installed; tests/setup.sh installs python3-matplotlib)\n"
    else:
        if rr:
            plot_goodput(os.path.join(out, "goodput.png"), reps, rr, size)
        if per_mig:
            plot_phases(os.path.join(out, "phases.png"), per_mig)
        if kw:
            plot_storage(os.path.join(out, "storage.png"), kw, srows)
    if not rr:
        md = md.replace("\n![goodput over time](goodput.png)\n", "\n")
    with open(os.path.join(out, "report.md"), "w") as f:
        f.write(md)


if __name__ == "__main__":
    main()
