#!/usr/bin/python3
"""Testbed gRPC peer (Debian's python3-grpcio, raw-bytes messages, no generated code).

server --listen ADDR:PORT   serves /demo.Orders/Get and /demo.Orders/Delete (unary, echo reversed)
client --target HOST:PORT --method /demo.Orders/Get --payload TEXT
    prints "OK <reply>" or "ERR <STATUS_CODE> <details>"
"""
import argparse
import sys
from concurrent import futures

import grpc


def reverse(request, context):
    return request[::-1]


def serve(listen):
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    handlers = {
        "Get": grpc.unary_unary_rpc_method_handler(reverse),
        "Delete": grpc.unary_unary_rpc_method_handler(reverse),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("demo.Orders", handlers),))
    server.add_insecure_port(listen)
    server.start()
    print("ready", flush=True)
    server.wait_for_termination()


def call(target, method, payload):
    with grpc.insecure_channel(target) as channel:
        stub = channel.unary_unary(method)
        try:
            reply = stub(payload.encode(), timeout=5)
            print("OK " + reply.decode())
        except grpc.RpcError as e:
            print("ERR %s %s" % (e.code().name, e.details()))


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("server")
    s.add_argument("--listen", required=True)
    c = sub.add_parser("client")
    c.add_argument("--target", required=True)
    c.add_argument("--method", required=True)
    c.add_argument("--payload", default="order-42")
    a = p.parse_args()
    if a.cmd == "server":
        serve(a.listen)
    else:
        call(a.target, a.method, a.payload)


if __name__ == "__main__":
    sys.exit(main())
