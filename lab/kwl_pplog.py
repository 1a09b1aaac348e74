#!/usr/bin/env python3
"""kawarimi-pingpong --continuous logs from the lab's guests.

    kwl_pplog.py pauses LOG REPORT.json ...   the job's longest pause per migration
    kwl_pplog.py gaps LOG                     the longest gaps in the whole run

A log line of a --continuous run is `TIMESTAMP round exchanges t_avg
t_max MB/s`, the timestamp UTC from the guest.  A pause is the gap
between two rounds (each normally --round-ms long); around a migration,
the longest gap within its span (the report's started..ended, host
clock) and 10 s after it.  lab/demo and bench/paper print these; the
functions are imported by bench/paper.py.
"""
import json
import re
import sys
from datetime import datetime, timezone

AFTER_S = 10


def rounds(path):
    """[(time, mbytes_per_s, t_max_us)], time in seconds since the epoch."""
    out = []
    for line in open(path, errors="replace"):
        f = line.split()
        if len(f) == 6 and f[0].endswith("Z") and not line.startswith("#"):
            t = datetime.strptime(f[0], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
            out.append((t.timestamp(), float(f[5]), float(f[4])))
    return out


def longest_gap(ts, lo, hi):
    """(gap_s, end_time) of the longest gap ending within [lo, hi], or None."""
    gaps = [(b - a, b) for a, b in zip(ts, ts[1:]) if lo <= b <= hi]
    return max(gaps) if gaps else None


def pause_of(ts, report):
    return longest_gap(ts, report["started"], report["ended"] + AFTER_S)


def cmd_pauses(log, reports):
    ts = [r[0] for r in rounds(log)]
    rows = []
    for p in reports:
        r = json.load(open(p))
        m = re.search(r"report-(a2b|b2a)-(\d+)\.json$", p)
        g = pause_of(ts, r)
        rows.append((int(m.group(2)), m.group(1), g[0] * 1000 if g else None))
    for c, d, g in sorted(rows):
        print(f"   round trip {c:>2} {d.replace('2', '->').upper()}: the job's longest pause "
              + (f"{g:.0f} ms" if g is not None else "not measured (no rounds logged then)"))


def cmd_gaps(log):
    ts = [r[0] for r in rounds(log)]
    gaps = sorted(((b - a, b) for a, b in zip(ts, ts[1:])), reverse=True)
    if not gaps:
        print("no pingpong rounds logged")
        return
    med = sorted(g for g, _ in gaps)[len(gaps) // 2]
    top = ", ".join(f"{g * 1000:.0f} ms ending "
                    f"{datetime.fromtimestamp(t, timezone.utc):%H:%M:%S}" for g, t in gaps[:3])
    print(f"from kawarimi-pingpong's timestamps ({len(ts)} rounds, typical gap {med * 1000:.0f} ms): "
          f"longest gaps {top}")


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "pauses":
        cmd_pauses(sys.argv[2], sys.argv[3:])
    elif len(sys.argv) == 3 and sys.argv[1] == "gaps":
        cmd_gaps(sys.argv[2])
    else:
        sys.exit(__doc__)
