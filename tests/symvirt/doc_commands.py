#!/usr/bin/env python3
"""docs/symvirt-protocol.md and the agent's command table agree, both ways.

Usage: doc_commands.py DOC KAWARIMI-AGENT KAWARIMI SYMVIRT-SOURCE-DIR

Commands: the doc's "Coordinator <-> agent" command table and its
"rank -> agent" rows against what `query-commands` lists (the table in
symvirt/agent-commands.c).  Error classes and events: the doc's tables
against the class and event names the agent's sources use.
"""
import glob
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

DOC, AGENT, KAWARIMI, SRC = sys.argv[1:5]
text = open(DOC, encoding="utf-8").read()


def section(title_re):
    m = re.search(r"^## " + title_re + r".*?$(.*?)(?=^## |\Z)", text, re.S | re.M)
    if not m:
        sys.exit("doc has no section matching %r" % title_re)
    return m.group(1)


def subsection(body, title):
    m = re.search(r"^### " + title + r"\s*$(.*?)(?=^### |\Z)", body, re.S | re.M)
    if not m:
        sys.exit("doc has no subsection %r" % title)
    return m.group(1)


def first_col(table_text):
    return {m.group(1) for m in re.finditer(r"^\| `([A-Za-z_-]+)` \|", table_text, re.M)}


host_doc = first_col(subsection(section("Coordinator ↔ agent"), "Commands"))
rank_doc = {m.group(1) for m in re.finditer(r"^\| rank → agent \| `([a-z-]+)` \|", section("Agent ↔ ranks"), re.M)}
classes_doc = first_col(subsection(section("Coordinator ↔ agent"), "Error classes"))
events_doc = first_col(subsection(section("Coordinator ↔ agent"), "Events"))

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


tmp = tempfile.mkdtemp(prefix="kws-doc-")
ch = os.path.join(tmp, "ch.sock")
agent = subprocess.Popen([AGENT, "--foreground", "--channel", "listen:" + ch,
                          "--socket", os.path.join(tmp, "ranks.sock")])
try:
    end = time.monotonic() + 10
    while not listening(ch) and time.monotonic() < end and agent.poll() is None:
        time.sleep(0.02)
    r = subprocess.run([KAWARIMI, "agent", ch, "query-commands"], capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        sys.exit("query-commands failed: " + r.stderr)
    cmds = json.loads(r.stdout)["commands"]
finally:
    agent.terminate()
    agent.wait(10)
    shutil.rmtree(tmp, ignore_errors=True)

host_code = {c["name"] for c in cmds if c["leg"] == "host"}
rank_code = {c["name"] for c in cmds if c["leg"] == "rank"}

code = "".join(open(f).read() for f in glob.glob(os.path.join(SRC, "*.c")))
classes_code = set(re.findall(r'(?:sv_err_set\(&?[\w.>-]+,\s*|errorf\(id,\s*|bad_line\(f, line_done,\s*)"([A-Z][A-Za-z]+)"', code))
events_code = set(re.findall(r'sv_event\("([A-Za-z_-]+)"', code))

bad = False
for what, doc, impl in (("host commands", host_doc, host_code), ("rank commands", rank_doc, rank_code),
                        ("error classes", classes_doc, classes_code), ("events", events_doc, events_code)):
    print("%-14s doc %s" % (what, sorted(doc)))
    if not doc or doc != impl:
        bad = True
        print("  MISMATCH: only in the doc: %s; only in the code: %s" % (sorted(doc - impl), sorted(impl - doc)))
sys.exit(1 if bad else 0)
