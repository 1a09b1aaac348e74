#!/usr/bin/env python3
"""Sends forged HELLOs to every rank of a running kawarimi job (outside
input: anyone on the network can connect to a rank's port).

    kwb-forge-hello.py MPIRUN_PID PROGRAM_NAME NP

Finds the ranks (processes named PROGRAM_NAME under MPIRUN_PID) and their
listening TCP port, learns the job id from the answer to a HELLO for
another job (the acceptor answers with its own), then sends HELLOs of that
job whose sender rank is 2^31 (the table doubling wrapped to 0 and spun
for ever) and NP (one past the last rank). Each must make the rank close
the connection without an answer. Exit 0 when every rank did so."""
import os
import socket
import struct
import sys
import time

HDR = struct.Struct("<BBHIQQ")          # struct kw_hdr
HELLO = struct.Struct("<IIIIIIQ")       # struct kw_hello
ADDRS = struct.Struct("<IHHHH")         # blob_head of kw_addrs_encode
FRAME_HELLO, FRAME_HELLO_ACK = 5, 6
HELLO_MAGIC, ADDRS_MAGIC = 0x4B57484C, 0x4B574231
PROTO_VERSION = 2                       # KW_PROTO_VERSION (btl_kawarimi_wire.h)


def hello(jobid, src, dst):
    payload = HELLO.pack(HELLO_MAGIC, PROTO_VERSION, jobid, src, dst, 0, 0) + ADDRS.pack(ADDRS_MAGIC, 1, 9, 0, 0)
    return HDR.pack(FRAME_HELLO, 0, 0, len(payload), 0, 0) + payload


def descendants(root):
    kids = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = open(f"/proc/{d}/stat").read()
            except OSError:
                continue
            ppid = int(stat[stat.rindex(")") + 2:].split()[1])
            kids.setdefault(ppid, []).append(int(d))
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        for k in kids.get(p, []):
            out.append(k)
            todo.append(k)
    return out


def listen_ports(pid):
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
    except OSError:
        return []
    ports = []
    for row in open("/proc/net/tcp").read().splitlines()[1:]:
        f = row.split()
        if f[3] == "0A" and f[9] in inodes:
            ports.append(int(f[1].split(":")[1], 16))
    return ports


def recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def probe(port):
    """The (jobid, vpid) a rank puts in its refusal of another job's HELLO."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        s.sendall(hello(0, 0, 0))
        hdr = recv_exact(s, HDR.size)
        if not hdr:
            return None
        typ, _, _, length, _, _ = HDR.unpack(hdr)
        body = recv_exact(s, length)
        if typ != FRAME_HELLO_ACK or not body or len(body) < HELLO.size:
            return None
        _, _, jobid, src, _, status, _ = HELLO.unpack(body[:HELLO.size])
        print(f"port {port}: job {jobid} rank {src} refused a HELLO for job 0 (status {status})")
        return jobid, src


def forged_closed(port, jobid, src, dst):
    """True when the rank closes a connection whose HELLO names rank src."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(hello(jobid, src, dst))
        try:
            data = s.recv(4096)
        except socket.timeout:
            print(f"FAIL: rank {dst} kept a connection whose HELLO names rank {src} "
                  "open for 10 s without answering (stuck?)")
            return False
        except ConnectionResetError:
            data = b""
        if data:
            print(f"FAIL: rank {dst} answered a HELLO that names rank {src} "
                  f"({len(data)} bytes) instead of closing the connection")
            return False
        print(f"rank {dst} closed the connection whose HELLO names rank {src}")
        return True


def main():
    root, prog, np = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    deadline = time.time() + 60
    while True:
        ranks = {}
        for pid in descendants(root):
            try:
                if open(f"/proc/{pid}/comm").read().strip() == prog[:15]:
                    ranks[pid] = listen_ports(pid)
            except OSError:
                pass
        if len(ranks) == np and all(len(p) == 1 for p in ranks.values()):
            break
        if time.time() > deadline:
            print(f"FAIL: expected {np} {prog} processes with one listening port each, "
                  f"found {ranks}")
            return 1
        time.sleep(0.5)
    ok = True
    for pid, (port,) in sorted(ranks.items()):
        who = probe(port)
        if not who:
            print(f"FAIL: pid {pid} port {port} did not answer a HELLO like a kawarimi rank")
            return 1
        jobid, vpid = who
        for src in (1 << 31, np):
            ok = forged_closed(port, jobid, src, vpid) and ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
