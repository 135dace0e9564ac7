#!/usr/bin/env python3
"""A client for the services tests: N HTTP GETs to URL, each on a new connection (so each is
a new scheduling decision), and prints how many answers each backend name gave, as JSON
(`"error"` counts requests that failed).

    python3 vip_client.py URL N
"""
import collections
import json
import sys
import urllib.request

URL, N = sys.argv[1], int(sys.argv[2])
counts = collections.Counter()
for _ in range(N):
    try:
        with urllib.request.urlopen(URL, timeout=10) as r:
            counts[r.read().decode().strip()] += 1
    except Exception:  # noqa: BLE001 - any failure is counted, the test judges
        counts["error"] += 1
print(json.dumps(counts))
