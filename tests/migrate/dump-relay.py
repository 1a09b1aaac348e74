#!/usr/bin/env python3
# dump-relay.py DIR LISTEN=TARGET...: a TCP relay on 127.0.0.1 that keeps
# every byte it carries.  Each rule listens on 127.0.0.1:LISTEN and joins
# every connection to 127.0.0.1:TARGET; the bytes of all its connections,
# both ways, are appended to DIR/LISTEN.dump.  DIR/ready appears once every
# port listens.  The TLS tests read the dumps for what must not be there.
import os
import socket
import sys
import threading


def pump(src, dst, out, lock):
    while True:
        try:
            data = src.recv(65536)
        except OSError:
            data = b""
        if not data:
            break
        with lock:
            out.write(data)
            out.flush()
        try:
            dst.sendall(data)
        except OSError:
            break
    for s in (src, dst):
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def serve(lsock, target, out, lock):
    while True:
        conn, _ = lsock.accept()
        try:
            up = socket.create_connection(("127.0.0.1", target))
        except OSError:
            conn.close()
            continue
        for a, b in ((conn, up), (up, conn)):
            threading.Thread(target=pump, args=(a, b, out, lock), daemon=True).start()


def main():
    d, rules = sys.argv[1], sys.argv[2:]
    threads = []
    for rule in rules:
        listen, target = (int(x) for x in rule.split("="))
        ls = socket.socket()
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("127.0.0.1", listen))
        ls.listen(8)
        out = open(os.path.join(d, f"{listen}.dump"), "ab")
        threads.append(threading.Thread(target=serve, args=(ls, target, out, threading.Lock()),
                                        daemon=True))
    for t in threads:
        t.start()
    open(os.path.join(d, "ready"), "w").close()
    threading.Event().wait()


main()
