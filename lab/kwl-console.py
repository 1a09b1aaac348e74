#!/usr/bin/env python3
"""Run one shell command in a lab guest through its serial console.

    kwl-console.py SOCKET [--timeout S] -- COMMAND...

Connects to the QEMU chardev socket behind the guest's ttyS0 (where the
lab's init keeps a root shell), turns terminal echo off, runs COMMAND,
prints its output (stdout and stderr together) and exits with its status.
Exit 124 on timeout, 125 when the console cannot be reached.  One client at
a time: QEMU's chardev serves a single connection.
"""
import os
import re
import socket
import sys
import time


def main():
    args = sys.argv[1:]
    timeout = 60.0
    if not args:
        sys.exit(__doc__)
    sock_path = args.pop(0)
    while args and args[0] != "--":
        opt = args.pop(0)
        if opt == "--timeout" and args:
            timeout = float(args.pop(0))
        else:
            sys.exit(f"kwl-console: unknown option '{opt}'")
    if args and args[0] == "--":
        args.pop(0)
    if not args:
        sys.exit("kwl-console: no command given")
    command = " ".join(args)
    deadline = time.monotonic() + timeout

    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    while True:
        try:
            s.connect(sock_path)
            break
        except OSError as e:
            if time.monotonic() > deadline:
                print(f"kwl-console: cannot connect to '{sock_path}': {e}", file=sys.stderr)
                sys.exit(125)
            time.sleep(0.5)

    buf = b""

    def read_until(pattern):
        nonlocal buf
        rx = re.compile(pattern)
        while True:
            m = rx.search(buf)
            if m:
                return m
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            s.settimeout(min(left, 1.0))
            try:
                data = s.recv(65536)
            except socket.timeout:
                continue
            if not data:
                return None
            buf += data

    # A unique tag, split by quotes on the typed line so that the echo of
    # what we type never matches what the shell prints.
    tag = f"KW{os.getpid()}x{int(time.time() * 1000) % 100000}"
    half = len(tag) // 2
    quoted = f"{tag[:half]}''{tag[half:]}"

    def sync():
        # Ctrl-U clears anything half-typed on the line before us.
        s.sendall(f"\x15stty -echo 2>/dev/null; PS1=; echo {quoted}SYNC\n".encode())
        if not read_until(re.escape(tag.encode()) + rb"SYNC\r?\n"):
            print(f"kwl-console: no shell answered on '{sock_path}' within {timeout:g} s",
                  file=sys.stderr)
            sys.exit(124)

    rc_rx = re.escape(tag.encode()) + rb"RC=(\d+)"
    begin_rx = re.escape(tag.encode()) + rb"BEGIN\r?\n"
    # The banner of a fresh console shell (lab/guest/kw-init respawns it).
    respawn_rx = rb"built-in shell \(ash\)"
    for attempt in (1, 2):
        buf = b""
        sync()
        buf = b""
        # A BEGIN line too: a program in the background (mpirun) may turn the
        # terminal's echo back on, and then the typed line is echoed first.
        s.sendall(f"echo {quoted}BEGIN; {command} 2>&1; echo {quoted}RC=$?\n".encode())
        m = read_until(rc_rx + rb"|" + respawn_rx)
        if m and not m.group(1) and not re.search(begin_rx, buf):
            # The shell that took our line went away before running it (seen
            # once in CI just as a background mpirun ended): the command never
            # started, so it is safe to type it again to the new shell.
            if attempt == 1:
                print("kwl-console: the console shell restarted before running the "
                      "command; typing it again", file=sys.stderr)
                time.sleep(0.5)
                continue
            m = None
        elif m and not m.group(1):
            m = read_until(rc_rx)
        break
    out = buf[: m.start()] if m else buf
    begin = re.search(begin_rx, out)
    if begin:
        out = out[begin.end():]
    sys.stdout.write(out.replace(b"\r\n", b"\n").decode(errors="replace"))
    sys.stdout.flush()
    if not m:
        print(f"kwl-console: '{command}' did not finish within {timeout:g} s", file=sys.stderr)
        # Interrupt it so the console is usable for the next command.
        s.sendall(b"\x03\n")
        sys.exit(124)
    s.sendall(b"stty echo 2>/dev/null; PS1='\\h# '\n")
    sys.exit(int(m.group(1)))


if __name__ == "__main__":
    main()
