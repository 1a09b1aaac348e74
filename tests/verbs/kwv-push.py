#!/usr/bin/env python3
"""Copy a file into a lab guest through its serial console, fast.

    kwv-push.py CONSOLE-SOCKET SRC DST [--timeout S]

The lab's guests have no network path from the host, only the console
(lab/kwl-console.py runs commands there, but a here-document of a large
file goes through the shell's line editor at a few hundred bytes a
second under TCG). This switches the guest's tty to raw mode, has `head -c`
read exactly the base64 of the gzip'd file, and checks the size after
decoding. Exit 0 on success, 1 on a mismatch, 124 on timeout.
"""
import base64
import gzip
import os
import re
import socket
import sys
import time


def main():
    args = sys.argv[1:]
    timeout = 300.0
    if "--timeout" in args:
        i = args.index("--timeout")
        timeout = float(args[i + 1])
        del args[i:i + 2]
    if len(args) != 3:
        sys.exit(__doc__)
    sock, src, dst = args
    raw = open(src, "rb").read()
    data = base64.b64encode(gzip.compress(raw, 9))
    deadline = time.monotonic() + timeout
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    while True:
        try:
            s.connect(sock)
            break
        except OSError:
            if time.monotonic() > deadline:
                sys.exit(125)
            time.sleep(0.5)
    buf = b""

    def wait_for(pat):
        nonlocal buf
        rx = re.compile(pat)
        while not rx.search(buf):
            left = deadline - time.monotonic()
            if left <= 0:
                print(f"kwv-push: timeout waiting for {pat!r}", file=sys.stderr)
                sys.exit(124)
            s.settimeout(min(left, 1.0))
            try:
                d = s.recv(65536)
            except socket.timeout:
                continue
            if not d:
                sys.exit(125)
            buf += d
        m = rx.search(buf)
        buf = buf[m.end():]
        return m

    tag = f"KWV{os.getpid()}"
    q = f"{tag[:3]}''{tag[3:]}"
    s.sendall(f"\x15stty -echo 2>/dev/null; PS1=; echo {q}SYNC\n".encode())
    wait_for(re.escape(tag.encode()) + rb"SYNC\r?\n")
    s.sendall((f"stty raw -echo; echo {q}READY; head -c {len(data)} >{dst}.b64; "
               f"stty sane -echo; base64 -d {dst}.b64 | gunzip -c >{dst}; rm -f {dst}.b64; "
               f"echo {q}SIZE=$(wc -c <{dst})\n").encode())
    wait_for(re.escape(tag.encode()) + rb"READY")
    for i in range(0, len(data), 4096):
        s.sendall(data[i:i + 4096])
    m = wait_for(re.escape(tag.encode()) + rb"SIZE=(\d+)\r?\n")
    s.sendall(b"stty echo 2>/dev/null; PS1='\\h# '\n")
    if int(m.group(1)) != len(raw):
        print(f"kwv-push: {dst} has {m.group(1).decode()} bytes, {src} {len(raw)}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
