#!/usr/bin/env python3
"""kwl-hub: one receiver that stops reading must cost only its own frames.

Three peers on the hub, as QEMUs are: each binds a unix datagram socket and
sends frames to the hub.  "paused" sends one frame (so the hub learns it,
like a migration source before it stopped) and never reads again, like a
QEMU in postmigrate.  "a" and "b" then ping-pong 4000 frames of 1400 bytes
through the hub.  With one shared send socket in the hub, the paused peer's
unread frames filled the hub's send buffer after a few hundred frames and
every later send failed, to a and b too: the test then sees the ping-pong
stall.  Runs in its own network namespace with the lab's datagram queue
length (512, as in the site namespaces), because the queue length decides
how many unread frames a receiver can pile up.

usage: hub.py KWL-HUB-BINARY
"""
import os
import socket
import subprocess
import sys
import tempfile
import time

ROUNDS = 4000
FRAME = 1400


def main():
    hub_bin = os.path.abspath(sys.argv[1])
    if os.environ.get("KWL_HUB_IN_NETNS") != "1":
        if os.geteuid() != 0:
            print("SKIP: needs root for a network namespace (net.unix.max_dgram_qlen)")
            return 77
        env = dict(os.environ, KWL_HUB_IN_NETNS="1")
        return subprocess.call(["unshare", "--net", sys.executable, __file__, hub_bin], env=env)
    with open("/proc/sys/net/unix/max_dgram_qlen", "w") as f:
        f.write("512\n")
    d = tempfile.mkdtemp(prefix="kwt-hub-")
    hub_path = os.path.join(d, "hub")
    hub = subprocess.Popen([hub_bin, hub_path])
    try:
        for _ in range(100):
            if os.path.exists(hub_path):
                break
            time.sleep(0.05)
        else:
            print("FAIL: kwl-hub did not create its socket")
            return 1
        socks = {}
        for name in ("paused", "a", "b"):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            s.bind(os.path.join(d, name))
            s.settimeout(2.0)
            socks[name] = s
        # Each peer introduces itself; the hub learns them in this order.
        socks["paused"].sendto(b"hello from paused", hub_path)
        time.sleep(0.1)
        socks["a"].sendto(b"hello from a", hub_path)
        time.sleep(0.1)
        socks["b"].sendto(b"hello from b", hub_path)
        time.sleep(0.1)
        # Drain the introductions a and b received (not the paused one's).
        for name in ("a", "b"):
            socks[name].setblocking(False)
            try:
                while True:
                    socks[name].recv(65536)
            except BlockingIOError:
                pass
            socks[name].settimeout(2.0)
        payload = b"x" * FRAME
        done = 0
        lost = 0
        t0 = time.time()
        for i in range(ROUNDS):
            tag = i.to_bytes(4, "big")
            socks["a"].sendto(tag + payload, hub_path)
            try:
                got = socks["b"].recv(65536)
                while got[:4] != tag:
                    got = socks["b"].recv(65536)
                socks["b"].sendto(tag + payload, hub_path)
                got = socks["a"].recv(65536)
                while got[:4] != tag:
                    got = socks["a"].recv(65536)
                done += 1
            except socket.timeout:
                lost += 1
                if lost >= 5:
                    break
        dt = time.time() - t0
        print(f"{done} of {ROUNDS} round trips through the hub in {dt:.1f} s "
              f"while a peer did not read ({lost} timed out)")
        if done < ROUNDS - 5:
            print("FAIL: a peer that stopped reading stalled the others' traffic")
            return 1
        # The paused peer holds at most its own queue: it read nothing, and
        # what it has queued is bounded by the queue length.
        socks["paused"].setblocking(False)
        queued = 0
        try:
            while True:
                socks["paused"].recv(65536)
                queued += 1
        except BlockingIOError:
            pass
        print(f"the paused peer had {queued} frame(s) queued (the rest were dropped for it alone)")
        if queued == 0:
            print("FAIL: the paused peer got nothing at all: the hub did not send to it")
            return 1
        # It reads again: the hub still delivers to it.
        socks["a"].sendto(b"after", hub_path)
        socks["paused"].settimeout(2.0)
        try:
            while socks["paused"].recv(65536) != b"after":
                pass
        except socket.timeout:
            print("FAIL: the peer that read again gets no frames")
            return 1
        print("PASS")
        return 0
    finally:
        hub.terminate()
        try:
            hub.wait(5)
        except subprocess.TimeoutExpired:
            print("FAIL: kwl-hub did not end on SIGTERM")
            hub.kill()
            os._exit(1)
            hub.wait()
        subprocess.call(["rm", "-rf", d])


if __name__ == "__main__":
    sys.exit(main())
