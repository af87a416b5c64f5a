#!/usr/bin/env python3
"""Testbed application: answers every HTTP request with JSON describing what it saw.

Listens on each --listen ADDR:PORT ([::]:P is dual-stack). Prints "ready" once all sockets are
bound. GET /slow?ms=N waits N milliseconds before answering (for drain tests). With --log FILE, every
request line received is appended to FILE, so tests can assert what really reached the app.
"""
import argparse
import json
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


def plain(ip):
    return ip[7:] if ip.startswith("::ffff:") else ip


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        url = urlsplit(self.path)
        ms = int(parse_qs(url.query).get("ms", ["0"])[0]) if url.path == "/slow" else 0
        if ms:
            time.sleep(ms / 1000)
        if self.server.log:
            with open(self.server.log, "a") as f:
                f.write("%s %s\n" % (self.command, self.path))
        local = self.connection.getsockname()
        body = json.dumps({
            "server": self.server.name,
            "client_ip": plain(self.client_address[0]),
            "client_port": self.client_address[1],
            "local_ip": plain(local[0]),
            "local_port": local[1],
            "path": url.path,
        }).encode() + b"\n"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self.do_GET()

    def log_message(self, *args):
        pass


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, addr, name, log):
        host, port = addr.rsplit(":", 1)
        host = host.strip("[]")
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.name = name
        self.log = log
        super().__init__((host, int(port)), Handler, bind_and_activate=False)
        if self.address_family == socket.AF_INET6:
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        self.server_bind()
        self.server_activate()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--name", required=True)
    p.add_argument("--listen", action="append", required=True)
    p.add_argument("--log", help="append 'METHOD TARGET' of every request received")
    args = p.parse_args()
    servers = [Server(a, args.name, args.log) for a in args.listen]
    for s in servers:
        threading.Thread(target=s.serve_forever, daemon=True).start()
    print("ready", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
