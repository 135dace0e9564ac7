#!/usr/bin/env python3
"""The harness's connect-rate client and accept-and-close server, the same on every row.

    python3 cps.py server PORT
    python3 cps.py client HOST PORT SECS     # prints connections per second
"""
import socket, sys, time
if sys.argv[1] == "server":
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", int(sys.argv[2]))); s.listen(1024)
    while True:
        c, _ = s.accept()
        try:
            c.recv(1)
        except OSError:
            pass
        c.close()
else:
    host, port, secs = sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    n, end = 0, time.time() + secs
    while time.time() < end:
        c = socket.create_connection((host, port), timeout=2)
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
        c.send(b"x"); c.recv(1); c.close(); n += 1
    print(n / secs)
