#!/usr/bin/env python3
"""A capture of our own (AF_PACKET, like tcpdump): sniff IPv4 TCP segments on INTERFACE to or
from PORT for SECONDS, and write one JSON summary of their payloads to OUT:

  {"segments": N, "tls_records": N, "plaintext_http": N, "first_bytes": ["16 03 01", ...]}

`tls_records` counts payloads that start like a TLS record (content type 0x14-0x17, version
0x03 0x0N); `plaintext_http` counts payloads holding an HTTP request or status line. Prints
`ready` once the socket listens. Run inside the namespace whose interface it reads."""
import json
import socket
import struct
import sys
import time

ETH_P_ALL = 0x0003


def main():
    interface, port, seconds, out = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(ETH_P_ALL))
    s.bind((interface, 0))
    s.settimeout(0.2)
    print("ready", flush=True)
    summary = {"segments": 0, "tls_records": 0, "plaintext_http": 0, "first_bytes": []}
    seen = set()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            frame, meta = s.recvfrom(65535)
        except socket.timeout:
            continue
        # On lo every frame is seen twice (outgoing and incoming): count each once.
        if meta[2] == socket.PACKET_OUTGOING and interface == "lo":
            continue
        if len(frame) < 14 + 20 or struct.unpack("!H", frame[12:14])[0] != 0x0800:
            continue
        ip = frame[14:]
        ihl = (ip[0] & 0x0F) * 4
        if ip[9] != 6:
            continue
        tcp = ip[ihl:]
        sport, dport = struct.unpack("!HH", tcp[:4])
        if port not in (sport, dport):
            continue
        payload = tcp[(tcp[12] >> 4) * 4 :]
        total = struct.unpack("!H", ip[2:4])[0]
        payload = payload[: max(0, total - ihl - (tcp[12] >> 4) * 4)]
        if not payload:
            continue
        key = (ip[12:20], tcp[:8])
        if key in seen:
            continue
        seen.add(key)
        summary["segments"] += 1
        if payload[0] in (0x14, 0x15, 0x16, 0x17) and payload[1] == 0x03:
            summary["tls_records"] += 1
        if b"HTTP/1." in payload:
            summary["plaintext_http"] += 1
        if len(summary["first_bytes"]) < 8:
            summary["first_bytes"].append(payload[:3].hex(" "))
    with open(out, "w") as f:
        json.dump(summary, f)


if __name__ == "__main__":
    main()
