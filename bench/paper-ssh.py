#!/usr/bin/python3
"""bench/paper's KAWARIMI_SSH: the lab's ssh, with the symvirt lines timed.

kawarimi reaches each guest agent and QEMU through `ssh HOST exec socat -
UNIX-CONNECT:'.../SITE-NODE.symvirt'` (or `.qmp`; qmp/ssh.c);
KAWARIMI_SSH names the ssh it runs.  bench/paper points it here: every
such session is relayed through this process, which writes each line
that crosses it, with the host's time, to
PAPER_TRACE_DIR/NODE-SITE.KIND.jsonl:

    {"t": 1796251338.17, "dir": "to-guest"|"from-guest", "msg": {...}}

so the agent's own replies (quiesce, resume with `link-wait-ms` and
`elapsed-ms`, peers) and QEMU's (`device_add`, `DEVICE_DELETED`) can be
laid out against the migration's report.  Everything else (the ssh
masters) is the lab's ssh, exec'd as is.  Debian's /usr/bin/python3
(not whatever `python3` is first in PATH: a pyenv shim takes ~0.3 s to
start, and this starts once per session, in the preflight).  Only the benchmark uses this; kawarimi itself is unchanged.
"""
import json
import os
import re
import subprocess
import sys
import threading
import time

real = os.environ.get("PAPER_REAL_SSH", "ssh")
args = sys.argv[1:]
m = re.search(r"UNIX-CONNECT:'([^']*/)?([ab])-(node\d+)\.(symvirt|qmp)'$", args[-1] if args else "")
tdir = os.environ.get("PAPER_TRACE_DIR")
if not m or not tdir:
    os.execvp(real, [real] + args)

log = open(os.path.join(tdir, f"{m.group(3)}-{m.group(2)}.{m.group(4)}.jsonl"), "a", buffering=1)
lock = threading.Lock()
child = subprocess.Popen([real] + args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)


def relay(src, dst, direction, done):
    buf = b""
    try:
        while True:
            data = os.read(src, 65536)
            if not data:
                break
            t = time.time()
            os.write(dst, data) if isinstance(dst, int) else (dst.write(data), dst.flush())
            buf += data
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                try:
                    msg = json.loads(line)
                except ValueError:
                    msg = line.decode(errors="replace")
                with lock:
                    log.write(json.dumps({"t": t, "dir": direction, "msg": msg}) + "\n")
    except OSError:
        pass
    done.set()


done = threading.Event()
threading.Thread(target=relay, args=(0, child.stdin, "to-guest", done), daemon=True).start()
threading.Thread(target=relay, args=(child.stdout.fileno(), 1, "from-guest", done),
                 daemon=True).start()
done.wait()
try:
    child.stdin.close()
except OSError:
    pass
try:
    rc = child.wait(timeout=5)
except subprocess.TimeoutExpired:
    child.terminate()
    rc = child.wait()
sys.exit(rc)
