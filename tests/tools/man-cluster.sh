#!/usr/bin/env bash
# kawarimi-cluster(5) against the parser's key tables: for every map of
# the cluster file an unknown key is put in a valid file, and the keys the
# parser then says it expects must be exactly the ones the page lists
# under that map (and the page must list no map the parser lacks).
set -u
KAWARIMI=${KAWARIMI:?set by meson}
SRC=${SRC:?set by meson}
T=$(mktemp -d /tmp/kw-man-cluster.XXXXXX)
trap 'rm -rf "$T"' EXIT
python3 - "$KAWARIMI" "$SRC/man/kawarimi-cluster.5.scd" "$T" <<'PY' || { echo; echo "FAIL: see above"; exit 1; }
import collections, copy, json, re, subprocess, sys
kw, page, tmp = sys.argv[1:]

base = {
    "format": 1, "cluster": "t", "storage": "incremental",
    "limits": {"bandwidth": "unlimited", "parallel": 2, "downtime": "300ms",
               "timeouts": {"preflight": "1s"}},
    "vms": [{"name": "vm1",
             "source": {"qmp": "/nonexistent/s.qmp", "symvirt": None, "hca": None},
             "destination": {"qmp": "/nonexistent/d.qmp", "symvirt": None, "hca": None,
                             "migration": {"listen": "unix:/nonexistent/m"},
                             "nbd": {"listen": "unix:/nonexistent/n"}},
             "disks": [{"source": "disk0"}]}],
    "tls": {"dir": "/nonexistent/pki", "source-dn": "O=t,CN=s", "hostname": "d"},
}
# vms[].tls has the same keys as tls (the page says so): one parser reads both.
maps = ["", "limits", "limits.timeouts", "vms[]", "vms[].source", "vms[].destination",
        "vms[].destination.migration", "vms[].destination.nbd", "vms[].disks[]", "tls"]

def node(doc, path):
    for part in [p for p in path.split(".") if p]:
        doc = doc[part[:-2]][0] if part.endswith("[]") else doc[part]
    return doc

parser = {}
for m in maps:
    doc = copy.deepcopy(base)
    node(doc, m)["zzz-unknown"] = 1
    f = f"{tmp}/c.yaml"
    open(f, "w").write(json.dumps(doc))       # JSON is YAML
    r = subprocess.run([kw, "plan", f], capture_output=True, text=True)
    hit = re.search(r"unknown key 'zzz-unknown'; expected one of (.*)", r.stderr)
    assert r.returncode == 2 and hit, (m, r.returncode, r.stderr)
    parser[m] = set(hit.group(1).strip().split(", "))

documented = collections.defaultdict(set)
for line in open(page):
    k = re.match(r"^\*([a-z][a-z\[\].-]*)\*$", line.rstrip())
    if k:
        path = k.group(1)
        parent, _, key = path.rpartition(".")
        if key.endswith("[]"):
            key = key[:-2]
        documented[parent].add(key)
bad = False
for m in maps:
    if documented[m] != parser[m]:
        print(f"map '{m or 'top level'}': parser {sorted(parser[m])}, page {sorted(documented[m])}")
        bad = True
for m in documented:
    if m not in parser:
        print(f"the page documents keys under '{m}', which the parser has no map for")
        bad = True
sys.exit(1 if bad else 0)
PY
echo PASS
