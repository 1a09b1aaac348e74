#!/usr/bin/env python3
"""A guest's text must not drive the operator's terminal: a fake agent
answers `kawarimi agent SOCK status` with an error whose class and desc
carry ESC sequences, CR, DEL, a C1 CSI (U+009B) and a log line's worth of
the same in an unknown-id reply; nothing of it may reach kawarimi's output
raw, and the text around it must (with '?' in place of each control).

    escape_cli.py KAWARIMI"""
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading

NASTY = "\u001b[2J\u001b]0;owned\u0007\rgone\u007f\u009b31m"
CONTROLS = [b"\x1b", b"\r", b"\x07", b"\x7f", b"\xc2\x9b"]


def fake_agent(srv):
    conn, _ = srv.accept()
    f = conn.makefile("rb")
    for line in f:
        msg = json.loads(line)
        if msg.get("execute") == "hello":
            reply = {"return": {"protocol": 1, "agent": "fake"}, "id": msg["id"]}
        else:
            # An error without id first: the client logs it, text included.
            conn.sendall((json.dumps({"error": {"class": "X" + NASTY, "desc": "log " + NASTY}})
                          + "\n").encode())
            reply = {"error": {"class": "Generic" + NASTY, "desc": "refused: " + NASTY},
                     "id": msg["id"]}
        conn.sendall((json.dumps(reply) + "\n").encode())
    conn.close()


def main():
    kawarimi = sys.argv[1]
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "agent.sock")
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind(path)
        srv.listen(1)
        t = threading.Thread(target=fake_agent, args=(srv,), daemon=True)
        t.start()
        p = subprocess.run([kawarimi, "agent", "--timeout", "10", path, "status"],
                           capture_output=True, timeout=30)
    out = p.stdout + p.stderr
    print(out.decode("utf-8", "backslashreplace"))
    bad = [c for c in CONTROLS if c in out]
    if p.returncode != 1:
        print(f"FAIL: kawarimi agent exited {p.returncode}, expected 1 (agent error)")
        return 1
    if bad:
        print(f"FAIL: raw control bytes reached the output: {bad}")
        return 1
    if b"refused: ?[2J?]0;owned??gone??31m" not in out or b"log " not in out:
        print("FAIL: the desc is not there with '?' for each control character")
        return 1
    print("PASS: no control character of the guest's reached the terminal")
    return 0


if __name__ == "__main__":
    sys.exit(main())
