#!/usr/bin/env python3
"""lab/kwl-console.py against a fake guest console (a unix socket that
answers like the lab's shell), no QEMU: a normal command and its status;
a console shell that restarts after taking the command line (seen once in
CI as a background mpirun ended), where the command must be typed again
and run once; and one that keeps restarting, which must end in a clear
failure, not a hang."""
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading

CONSOLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "lab",
                       "kwl-console.py")
BANNER = b"\r\n\r\nBusyBox v1.35.0 (Debian 1:1.35.0-4+deb12u1+b1) built-in shell (ash)\r\n" \
         b"Enter 'help' for a list of built-in commands.\r\n\r\nnode1# "


def fake_shell(srv, respawns, runs):
    """Serves one client: answers SYNC lines, restarts (prints a banner,
    drops the line) on the first `respawns` command lines, runs the rest:
    'echo hello; exit 3' prints hello with status 3."""
    conn, _ = srv.accept()
    buf = b""
    with conn:
        while True:
            data = conn.recv(4096)
            if not data:
                return
            buf += data
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                line = line.replace(b"''", b"")
                m = re.search(rb"echo (KW\w+)SYNC", line)
                if m:
                    conn.sendall(m.group(1) + b"SYNC\r\n")
                    continue
                m = re.search(rb"echo (KW\w+)BEGIN", line)
                if not m:
                    continue
                if respawns[0] > 0:
                    respawns[0] -= 1
                    conn.sendall(BANNER)
                    continue
                runs[0] += 1
                conn.sendall(m.group(1) + b"BEGIN\r\nhello\r\n" + m.group(1) + b"RC=3\r\n")


def run(respawns):
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "console.sock")
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind(path)
        srv.listen(1)
        left, runs = [respawns], [0]
        t = threading.Thread(target=fake_shell, args=(srv, left, runs), daemon=True)
        t.start()
        p = subprocess.run([sys.executable, CONSOLE, path, "--timeout", "5", "--",
                            "echo hello; exit 3"], capture_output=True, timeout=30)
        srv.close()
        return p.returncode, p.stdout.decode(), p.stderr.decode(), runs[0]


def main():
    fail = 0
    rc, out, err, runs = run(0)
    if rc != 3 or out.strip() != "hello" or runs != 1:
        print(f"FAIL: plain command: rc {rc}, output {out!r}, ran {runs} times; {err}")
        fail = 1
    rc, out, err, runs = run(1)
    if rc != 3 or out.strip() != "hello" or runs != 1 or "restarted" not in err:
        print(f"FAIL: shell restarted once: rc {rc}, output {out!r}, ran {runs} times, "
              f"stderr {err!r}")
        fail = 1
    rc, out, err, runs = run(5)
    if rc != 124 or runs != 0 or "did not finish" not in err:
        print(f"FAIL: shell restarting again and again: rc {rc}, ran {runs} times, stderr {err!r}")
        fail = 1
    if not fail:
        print("PASS: kwl-console runs a command once, also across one restart of the shell")
    return fail


if __name__ == "__main__":
    sys.exit(main())
