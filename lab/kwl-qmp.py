#!/usr/bin/env python3
"""A small QMP client for the lab's scripts and tests.

    kwl-qmp.py SOCKET COMMAND [ARGS-JSON] [--wait-event NAME] [--timeout S]

Runs one QMP command and prints its "return" as JSON; with --wait-event it
then waits for that event (printing it and the seconds it took) and exits
124 when it does not come within the timeout.  A QMP error prints the class
and description and exits 1.  (`kawarimi qmp` is the operator's tool; this
one is test equipment that waits for events the way the lab tests need.)
"""
import json
import socket
import sys
import time


def main():
    args = sys.argv[1:]
    wait_event = None
    timeout = 10.0
    pos = []
    while args:
        a = args.pop(0)
        if a == "--wait-event" and args:
            wait_event = args.pop(0)
        elif a == "--timeout" and args:
            timeout = float(args.pop(0))
        else:
            pos.append(a)
    if len(pos) not in (2, 3):
        sys.exit(__doc__)
    path, command = pos[0], pos[1]
    arguments = json.loads(pos[2]) if len(pos) == 3 else None

    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
    except OSError as e:
        print(f"kwl-qmp: cannot connect to '{path}': {e}", file=sys.stderr)
        sys.exit(125)
    f = s.makefile("rwb", buffering=0)
    deadline = time.monotonic() + timeout
    events = []

    def recv():
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        s.settimeout(left)
        try:
            line = f.readline()
        except (socket.timeout, TimeoutError):
            return None
        if not line:
            print("kwl-qmp: QEMU closed the connection", file=sys.stderr)
            sys.exit(1)
        return json.loads(line)

    def execute(name, arguments=None, id_=1):
        msg = {"execute": name, "id": id_}
        if arguments is not None:
            msg["arguments"] = arguments
        f.write((json.dumps(msg) + "\n").encode())
        while True:
            m = recv()
            if m is None:
                print(f"kwl-qmp: no reply to '{name}' within {timeout:g} s", file=sys.stderr)
                sys.exit(124)
            if "event" in m:
                events.append(m)
                continue
            if m.get("id") == id_:
                return m

    greeting = recv()
    if not greeting or "QMP" not in greeting:
        print(f"kwl-qmp: '{path}' did not greet like QMP", file=sys.stderr)
        sys.exit(1)
    execute("qmp_capabilities", id_=0)
    start = time.monotonic()
    reply = execute(command, arguments)
    if "error" in reply:
        err = reply["error"]
        print(f"kwl-qmp: {command}: {err.get('class')}: {err.get('desc')}", file=sys.stderr)
        sys.exit(1)
    print(json.dumps(reply.get("return")))
    if not wait_event:
        return
    while True:
        for ev in events:
            if ev["event"] == wait_event:
                print(json.dumps(ev))
                print(f"{wait_event} after {time.monotonic() - start:.3f} s")
                return
        events.clear()
        m = recv()
        if m is None:
            print(f"kwl-qmp: no {wait_event} within {timeout:g} s", file=sys.stderr)
            sys.exit(124)
        if "event" in m:
            events.append(m)


if __name__ == "__main__":
    main()
