#!/usr/bin/env bash
# kawarimi-btl(7) against ompi_info: the parameters the component
# registers (ompi_info --param btl kawarimi --level 9, the component from
# this build) are the ones the page lists, each with the same type, level,
# default and help text.
set -u
PAGE=${1:?usage: man-btl.sh PAGE COMPONENT_DIR PROG_DIR}
shift
. "$(dirname "$0")/../mpi-plugin/lib.sh"
kwb_init "$@"
# ompi_info is not ours: under ASan it loads our instrumented component
# only with the sanitizer runtime preloaded.
[ -n "${KAWARIMI_SANITIZE:-}" ] && export LD_PRELOAD=$(kwb_asan_preload)
timeout 60 ompi_info --param btl kawarimi --level 9 --parsable >/tmp/kw-man-btl.$$ 2>&1
python3 - /tmp/kw-man-btl.$$ "$PAGE" <<'PY'
import re, sys
info, page = sys.argv[1:]
params = {}
for line in open(info):
    m = re.match(r"mca:btl:kawarimi:param:(btl_kawarimi_\w+):(value|type|level|help):(.*)", line.rstrip("\n"))
    if m:
        params.setdefault(m.group(1), {})[m.group(2)] = m.group(3)
assert len(params) >= 10, f"ompi_info lists {len(params)} kawarimi parameters: is the component loaded?"
doc, lines = {}, open(page).read().split("\n")
for i, line in enumerate(lines):
    m = re.match(r"^\*(btl_kawarimi_\w+)\* \(type (\w+), level (\d+), default: (.*)\)$", line)
    if m:
        v = m.group(4)
        v = "" if v == "(empty)" else v[1:-1]
        doc[m.group(1)] = {"type": m.group(2), "level": m.group(3), "value": v,
                           "help": lines[i + 1].strip().replace("\\*", "*")}
bad = []
for n in sorted(set(params) | set(doc)):
    if n not in doc:
        bad.append(f"{n}: listed by ompi_info, missing from the page")
    elif n not in params:
        bad.append(f"{n}: on the page, unknown to ompi_info")
    else:
        for k in ("type", "level", "value", "help"):
            if params[n].get(k, "") != doc[n][k]:
                bad.append(f"{n}: {k} is '{params[n].get(k, '')}' in ompi_info, '{doc[n][k]}' on the page")
print("\n".join(bad) or f"{len(doc)} parameters agree")
sys.exit(1 if bad else 0)
PY
rc=$?
rm -f /tmp/kw-man-btl.$$
[ $rc -eq 0 ] || { echo "FAIL: kawarimi-btl.7 and ompi_info disagree"; exit 1; }
echo PASS
