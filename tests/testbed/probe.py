#!/usr/bin/env python3
"""Probe: open a TCP connection to each ADDR:PORT (concurrently), send one HTTP GET and print
`ADDR:PORT 200` when an HTTP 200 came back, `ADDR:PORT 000` otherwise (refused, reset, closed
or timed out). Run inside a pod's network namespace: its own sidecar captures the connections."""
import socket
import sys
import threading

results = {}


def probe(target):
    host, port = target.rsplit(":", 1)
    status = "000"
    try:
        with socket.create_connection((host, int(port)), timeout=2) as s:
            s.settimeout(2)
            s.sendall(b"GET /probe HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n")
            data = b""
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
            if data.startswith(b"HTTP/1.1 200") or data.startswith(b"HTTP/1.0 200"):
                status = "200"
    except OSError:
        pass
    results[target] = status


threads = [threading.Thread(target=probe, args=(t,)) for t in sys.argv[1:]]
for t in threads:
    t.start()
for t in threads:
    t.join()
for t in sys.argv[1:]:
    print(t, results.get(t, "000"))
