#!/usr/bin/env python3
"""Regenerates fuzz/seeds/ (committed). Run from anywhere: python3 fuzz/make_seeds.py
Needs PyYAML (policy seeds), openssl (ClientHello capture) and python3-cryptography (JWT seeds)."""

import base64, json, os, pathlib, shutil, socket, struct, subprocess, threading

ROOT = pathlib.Path(__file__).resolve().parent.parent
SEEDS = ROOT / "fuzz" / "seeds"


def put(target, name, data):
    d = SEEDS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data if isinstance(data, bytes) else data.encode())


def b64u(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def client_hello(sni, alpn):
    """Captures the first bytes `openssl s_client` sends."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    got = {}

    def accept():
        c, _ = srv.accept()
        c.settimeout(5)
        buf = b""
        while len(buf) < 5 or len(buf) < 5 + struct.unpack(">H", buf[3:5])[0]:
            chunk = c.recv(65536)
            if not chunk:
                break
            buf += chunk
        got["hello"] = buf
        c.close()

    t = threading.Thread(target=accept)
    t.start()
    cmd = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", sni]
    if alpn:
        cmd += ["-alpn", alpn]
    subprocess.run(cmd, input=b"", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=10)
    t.join(10)
    srv.close()
    return got.get("hello", b"")


def main():
    if SEEDS.exists():
        shutil.rmtree(SEEDS)

    # normalize: request targets and hosts.
    for i, s in enumerate([
        "/", "/a/./b/../c?x=1&y=2", "http://Api.Example.COM.:8443/p%7e/%41?q=%2F", "*",
        "/%2e%2e/etc/passwd", "//a///b/", "/a%3b/b", "https://user@Host:443", "[::1]:8080",
        "Api.Example.COM.", "/login?next=/home", "/a/%zz",
    ]):
        put("normalize", f"{i:02}", s)

    # policy_load: every conformance policy, the invalid cases and the compose policy.
    import yaml
    for f in sorted((ROOT / "config/tests/conformance").glob("*.yaml")):
        put("policy_load", f.stem, yaml.safe_load(f.read_text())["policy"])
    for f in sorted((ROOT / "config/tests/invalid").glob("*.yaml")):
        put("policy_load", "invalid-" + f.stem, f.read_bytes())
    put("policy_load", "compose", (ROOT / "deploy/compose/policy/policy.yaml").read_bytes())

    # http1_head: request and response heads.
    heads = {
        "get": b"GET /a/b?c=d HTTP/1.1\r\nHost: api.example.com\r\nUser-Agent: t\r\n\r\n",
        "post": b"POST /orders HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nAuthorization: Bearer abc.def.ghi\r\n\r\nhello",
        "hop": b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close, X-Secret\r\nX-Secret: 1\r\nTE: trailers\r\nKeep-Alive: 5\r\n\r\n",
        "chunked-req": b"PUT /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "upgrade": b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        "resp": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok",
        "resp-chunked": b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 3\r\n\r\n",
        "resp-10": b"HTTP/1.0 204 No Content\r\nConnection: close\r\n\r\n",
    }
    for k, v in heads.items():
        put("http1_head", k, v)

    # chunked: two bytes of split point (big-endian), then a body.
    bodies = {
        "simple": (3, b"5\r\nhello\r\n0\r\n\r\n"),
        "ext-trailer": (12, b"5;name=\"x\"\r\nhello\r\nA\r\n0123456789\r\n0\r\nx-t: 1\r\n\r\n"),
        "pipelined": (1, b"0\r\n\r\nGET / HTTP/1.1\r\n"),
        "partial": (4, b"1f\r\nabc"),
        "bad": (0, b"5\nhello"),
    }
    for k, (split, body) in bodies.items():
        put("chunked", k, struct.pack(">H", split) + body)

    # detect: HTTP/1, h2c preface, ClientHellos, opaque.
    put("detect", "http1", b"GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n")
    put("detect", "http10", b"OPTIONS * HTTP/1.0\r\n")
    put("detect", "h2", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04\x00\x00\x00\x00\x00")
    put("detect", "opaque", b"\x00\x01\x02SSH-2.0-OpenSSH_9.2\r\n")
    put("detect", "redis", b"*1\r\n$4\r\nPING\r\n")
    for name, sni, alpn in [("tls-sni-alpn", "Api.Example.com", "h2,http/1.1"), ("tls-sni", "db.internal", None)]:
        hello = client_hello(sni, alpn)
        if hello:
            put("detect", name, hello)

    # admission_review: the injector's recorded reviews.
    for f in sorted((ROOT / "deploy/injector/tests/reviews").glob("*.json")):
        put("admission_review", f.stem, f.read_bytes())

    # jwt: JWKS, NUL, token.
    from cryptography.hazmat.primitives.asymmetric import rsa, padding, ec
    from cryptography.hazmat.primitives import hashes
    import hmac, hashlib

    def tok(header, claims, sign):
        si = b64u(json.dumps(header).encode()) + "." + b64u(json.dumps(claims).encode())
        return si + "." + b64u(sign(si.encode()))

    secret = b"0123456789abcdef0123456789abcdef"
    oct_jwks = json.dumps({"keys": [{"kty": "oct", "kid": "k1", "alg": "HS256", "k": b64u(secret)}]})
    claims = {"iss": "https://issuer.example", "sub": "u1", "aud": ["orders"], "exp": 4102444800}
    hs = tok({"alg": "HS256", "typ": "JWT", "kid": "k1"}, claims,
             lambda m: hmac.new(secret, m, hashlib.sha256).digest())
    put("jwt", "oct-hs256", oct_jwks + "\0" + hs)
    put("jwt", "none", oct_jwks + "\0" + tok({"alg": "none", "kid": "k1"}, claims, lambda m: b""))
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pn = key.public_key().public_numbers()
    rsa_jwks = json.dumps({"keys": [{"kty": "RSA", "kid": "k1", "alg": "RS256", "use": "sig",
                                     "n": b64u(pn.n.to_bytes(256, "big")), "e": "AQAB"}]})
    rs = tok({"alg": "RS256", "kid": "k1"}, claims,
             lambda m: key.sign(m, padding.PKCS1v15(), hashes.SHA256()))
    put("jwt", "rsa-rs256", rsa_jwks + "\0" + rs)
    eck = ec.generate_private_key(ec.SECP256R1())
    en = eck.public_key().public_numbers()
    ec_jwks = json.dumps({"keys": [{"kty": "EC", "kid": "e1", "crv": "P-256",
                                    "x": b64u(en.x.to_bytes(32, "big")), "y": b64u(en.y.to_bytes(32, "big"))}]})
    put("jwt", "ec-p256", ec_jwks + "\0" + tok({"alg": "ES256", "kid": "e1"}, claims, lambda m: b"\x00" * 64))
    put("jwt", "bearer", "\0Bearer " + hs)


if __name__ == "__main__":
    main()
