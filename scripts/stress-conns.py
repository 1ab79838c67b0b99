#!/usr/bin/env python3
"""stress-conns.py — many simultaneous connections, each one request, and
count the ones that end with no answer at all (status 0).

    stress-conns.py PORT [--conns N] [--rounds R] [--burners B] [--path P] [--body JSON]

Each round opens N connections at once (non-blocking connects from one
thread), sends one request on each ("Connection: close"), and reads every
answer.  B busy-loop processes run meanwhile, so the server's workers get
less CPU than the connections ask for (the "loaded machine" of issue 13).
Prints per round: answered by status, and connections that got nothing.
Exit status 1 when any connection got no answer.
"""
import argparse
import multiprocessing
import selectors
import socket
import sys
import time


def burn(stop):
    while not stop.is_set():
        for _ in range(100000):
            pass


def one_round(port, n, request, timeout):
    sel = selectors.DefaultSelector()
    conns = {}
    for i in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        t0 = time.monotonic()
        s.connect_ex(("127.0.0.1", port))
        c = {"out": request, "in": b"", "done": False, "err": None, "t0": t0, "sent": None}
        conns[s] = c
        try:  # loopback: usually connected already; send at once
            k = s.send(c["out"])
            c["out"] = c["out"][k:]
        except OSError:
            pass
        if c["out"]:
            sel.register(s, selectors.EVENT_WRITE)
        else:
            c["sent"] = time.monotonic()
            sel.register(s, selectors.EVENT_READ)
    end = time.monotonic() + timeout
    left = n
    while left and time.monotonic() < end:
        for key, ev in sel.select(timeout=1.0):
            s = key.fileobj
            c = conns[s]
            try:
                if ev & selectors.EVENT_WRITE and c["out"]:
                    k = s.send(c["out"])
                    c["out"] = c["out"][k:]
                    if not c["out"]:
                        c["sent"] = time.monotonic()
                        sel.modify(s, selectors.EVENT_READ)
                elif ev & selectors.EVENT_READ:
                    b = s.recv(65536)
                    if b:
                        c["in"] += b
                        continue
                    raise EOFError
            except (OSError, EOFError) as e:
                c["err"] = type(e).__name__
                c["done"] = True
                sel.unregister(s)
                s.close()
                left -= 1
    statuses = {}
    lost = []
    for s, c in conns.items():
        if not c["done"]:
            sel.unregister(s)
            s.close()
            c["err"] = "timeout"
        st = 0
        if c["in"].startswith(b"HTTP/1."):
            try:
                st = int(c["in"][9:12])
            except ValueError:
                st = 0
        statuses[st] = statuses.get(st, 0) + 1
        if st == 0:
            # how long after the connect the request left: a request sent
            # later than header_timeout may be refused legitimately
            lag = (c["sent"] - c["t0"]) if c["sent"] else None
            lost.append("%s sent+%s" % (c["err"], "never" if lag is None else
                                          "<1s" if lag < 1 else ">=1s"))
    return statuses, lost


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("port", type=int)
    ap.add_argument("--conns", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--burners", type=int, default=2)
    ap.add_argument("--path", default="/api/v1/decide")
    ap.add_argument("--body", default='{"customer_id":"c1","channel":"web","limit":3,"dry_run":true}')
    ap.add_argument("--timeout", type=float, default=120)
    a = ap.parse_args()
    body = a.body.encode()
    req = (b"POST " + a.path.encode() + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
           b"Content-Type: application/json\r\nContent-Length: " + str(len(body)).encode() +
           b"\r\n\r\n" + body)
    stop = multiprocessing.Event()
    procs = [multiprocessing.Process(target=burn, args=(stop,)) for _ in range(a.burners)]
    for p in procs:
        p.start()
    total_lost = 0
    try:
        for r in range(a.rounds):
            t0 = time.monotonic()
            statuses, lost = one_round(a.port, a.conns, req, a.timeout)
            total_lost += len(lost)
            kinds = {}
            for k in lost:
                kinds[k] = kinds.get(k, 0) + 1
            print("round %d: %d conns in %.1f s; statuses %s; no answer %d %s" %
                  (r + 1, a.conns, time.monotonic() - t0, dict(sorted(statuses.items())), len(lost),
                   kinds if kinds else ""), flush=True)
    finally:
        stop.set()
        for p in procs:
            p.join()
    print("total: %d connections without an answer" % total_lost)
    sys.exit(1 if total_lost else 0)


if __name__ == "__main__":
    main()
