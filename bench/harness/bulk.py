#!/usr/bin/env python3
"""The harness's one-connection bulk TCP sender and counting receiver (a thread per
connection): the client sends 1 MiB writes for SECS, half-closes, and prints the Gbit/s the
receiver counted from its first byte to the end of the stream (as iperf3's sum_received).
iperf3 cannot go through a per-connection balancer (its control and data connections land
on different backends).

    python3 bulk.py server PORT
    python3 bulk.py client HOST PORT SECS
"""
import socket, sys, threading, time
def serve(c):
    buf = memoryview(bytearray(1 << 20)); n, t0 = 0, None
    while True:
        k = c.recv_into(buf)
        if not k:
            break
        if t0 is None:
            t0 = time.monotonic()
        n += k
    c.sendall(b"%d %f\n" % (n, time.monotonic() - t0 if t0 else 0.0)); c.close()
if sys.argv[1] == "server":
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", int(sys.argv[2]))); s.listen(64)
    while True:
        c, _ = s.accept()
        threading.Thread(target=serve, args=(c,), daemon=True).start()
else:
    host, port, secs = sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    c = socket.create_connection((host, port), timeout=10)
    data, end = bytes(1 << 20), time.monotonic() + secs
    while time.monotonic() < end:
        c.sendall(data)
    c.shutdown(socket.SHUT_WR)
    reply = b""
    while not reply.endswith(b"\n"):
        k = c.recv(100)
        if not k:
            break
        reply += k
    n, t = reply.split()
    print(int(n) * 8 / float(t) / 1e9 if float(t) else 0)
