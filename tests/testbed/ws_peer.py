#!/usr/bin/python3
"""Testbed WebSocket peer (Debian's python3-websockets).

server --port PORT            echoes every message as "<path> <message>"
client --url ws://HOST:PORT/PATH --message TEXT
    prints the echoed reply, or "REJECTED <status>" when the handshake is refused
"""
import argparse
import asyncio
import sys

import websockets


async def echo(websocket, path=None):
    path = path if path is not None else websocket.path
    async for message in websocket:
        await websocket.send("%s %s" % (path, message))


async def serve(port):
    async with websockets.serve(echo, None, port):
        print("ready", flush=True)
        await asyncio.Future()


async def client(url, message):
    try:
        async with websockets.connect(url, open_timeout=5) as ws:
            await ws.send(message)
            print(await asyncio.wait_for(ws.recv(), 5))
            await ws.send(message + "-again")
            print(await asyncio.wait_for(ws.recv(), 5))
    except websockets.exceptions.InvalidStatusCode as e:
        print("REJECTED %d" % e.status_code)


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("server")
    s.add_argument("--port", type=int, required=True)
    c = sub.add_parser("client")
    c.add_argument("--url", required=True)
    c.add_argument("--message", default="hello")
    a = p.parse_args()
    if a.cmd == "server":
        asyncio.run(serve(a.port))
    else:
        asyncio.run(client(a.url, a.message))


if __name__ == "__main__":
    sys.exit(main())
