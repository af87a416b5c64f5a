use super::*;

fn req(raw: &str) -> Parse<(RequestHead<'_>, usize)> {
    let mut h = [httparse::EMPTY_HEADER; 100];
    // The parsed head borrows only `raw`; the header array is re-parsed where needed.
    match parse_request(raw.as_bytes(), &mut h) {
        Parse::Complete((head, n)) => Parse::Complete((head, n)),
        Parse::Partial => Parse::Partial,
        Parse::Handover(w) => Parse::Handover(w),
    }
}

fn forwarded(raw: &str, target: &str) -> String {
    let mut h = [httparse::EMPTY_HEADER; 100];
    let Parse::Complete((head, n)) = parse_request(raw.as_bytes(), &mut h) else {
        panic!("not complete: {raw:?}");
    };
    let mut out = Vec::new();
    forward_request(&mut out, &head, &h[..n], target);
    String::from_utf8(out).expect("utf-8")
}

#[test]
fn plain_requests_are_relayed() {
    let Parse::Complete((head, n)) =
        req("GET /a?b=1 HTTP/1.1\r\nHost: web\r\nAuthorization: Bearer  t.k.n \r\n\r\nrest")
    else {
        panic!("complete");
    };
    assert_eq!(n, 2);
    assert_eq!(head.method, "GET");
    assert_eq!(head.target, "/a?b=1");
    assert_eq!(head.host, Some("web"));
    assert_eq!(head.bearer, Presented::Token("t.k.n"));
    assert_eq!(
        head.len,
        "GET /a?b=1 HTTP/1.1\r\nHost: web\r\nAuthorization: Bearer  t.k.n \r\n\r\n".len()
    );
    assert!(!head.close && !head.hop_by_hop && head.body == 0);

    let Parse::Complete((head, _)) =
        req("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 12\r\nConnection: close\r\n\r\n")
    else {
        panic!("complete");
    };
    assert_eq!(head.body, 12);
    assert!(head.close && head.hop_by_hop);
    assert_eq!(req("GET / HTTP/1.1\r\nHost: a\r\n"), Parse::Partial);
}

#[test]
fn anything_unusual_is_handed_over() {
    let cases = [
        // No Host, or not a plain one: the full server answers 400.
        "GET / HTTP/1.1\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: b@a\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: \r\n\r\n",
        "GET / HTTP/1.0\r\n\r\n",
        "GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n",
        "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
        "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
        "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
        "POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        "POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
        "POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n",
        "POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n",
        "POST / HTTP/1.1\r\nContent-Length: \r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        "GET / HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        "GET / HTTP/1.1\r\nConnection: upgrade\r\n\r\n",
        "PUT / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
        "POST / HTTP/1.1\r\nContent-Type: application/grpc\r\n\r\n",
        "GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n",
        "GET / HTTP/1.1\r\nX : a\r\n\r\n",
        "GET /\0 HTTP/1.1\r\n\r\n",
    ];
    for raw in cases {
        assert!(
            matches!(req(raw), Parse::Handover(_)),
            "{raw:?} was not handed over"
        );
    }
}

#[test]
fn forwarded_requests_lose_hop_by_hop_headers_but_never_their_framing() {
    assert_eq!(
        forwarded(
            "POST /x HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X-Secret, Content-Length\r\n\
             Keep-Alive: 5\r\nX-Secret: s\r\nTE: trailers, gzip\r\nProxy-Connection: x\r\n\
             Content-Length: 2\r\nX-Keep: k\r\n\r\nhi",
            "/x",
        ),
        "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nX-Keep: k\r\nte: trailers\r\n\r\n"
    );
    assert_eq!(
        forwarded("GET /a/../b HTTP/1.1\r\nHost: a\r\n\r\n", "/b"),
        "GET /b HTTP/1.1\r\nHost: a\r\n\r\n"
    );
}

fn resp(raw: &str, head: bool) -> Result<Option<ResponseHead>, ResponseError> {
    parse_response(raw.as_bytes(), head)
}

#[test]
fn response_framing() {
    let f = |raw: &str, head: bool| resp(raw, head).expect("ok").expect("complete").framing;
    assert_eq!(
        f("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", false),
        Framing::Length(3)
    );
    assert_eq!(
        f("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", true),
        Framing::Empty
    );
    assert_eq!(f("HTTP/1.1 204 No\r\n\r\n", false), Framing::Empty);
    assert_eq!(
        f("HTTP/1.1 304 NM\r\nContent-Length: 9\r\n\r\n", false),
        Framing::Empty
    );
    assert_eq!(f("HTTP/1.1 100 Continue\r\n\r\n", false), Framing::Empty);
    assert_eq!(
        f(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            false
        ),
        Framing::Chunked
    );
    assert_eq!(
        f(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 4\r\n\r\n",
            false
        ),
        Framing::Chunked
    );
    assert_eq!(
        f("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", false),
        Framing::Close
    );
    assert_eq!(f("HTTP/1.1 200 OK\r\n\r\n", false), Framing::Close);
    assert_eq!(
        f(
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n",
            false
        ),
        Framing::Length(3)
    );
    assert_eq!(
        resp("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n", false),
        Ok(None)
    );
    assert!(
        resp(
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
            false
        )
        .is_err()
    );
    assert!(resp("HTTP/1.1 200 OK\r\nContent-Length: -3\r\n\r\n", false).is_err());
    assert!(resp("SSH-2.0-OpenSSH\r\n\r\n", false).is_err());
}

#[test]
fn response_reuse_and_verbatim() {
    let r = |raw: &str| resp(raw, false).expect("ok").expect("complete");
    let plain = r("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    assert!(plain.reusable && plain.verbatim);
    let ka = r("HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n");
    assert!(ka.reusable && !ka.verbatim);
    assert!(!r("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n").reusable);
    assert!(!r("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n").reusable);
    assert!(!r("HTTP/1.1 200 OK\r\n\r\n").reusable);
    assert!(
        !r("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n").verbatim
    );
}

#[test]
fn forwarded_responses() {
    let fwd = |raw: &str, close: bool| {
        let mut out = Vec::new();
        forward_response(&mut out, raw.as_bytes(), close);
        String::from_utf8(out).expect("utf-8")
    };
    assert_eq!(
        fwd(
            "HTTP/1.0 200 Fine\r\nConnection: keep-alive, X-Hop, Transfer-Encoding\r\nX-Hop: 1\r\n\
             Keep-Alive: timeout=5\r\nTransfer-Encoding: chunked\r\nContent-Length: 7\r\nServer: n\r\n\r\n",
            true
        ),
        "HTTP/1.1 200 Fine\r\nTransfer-Encoding: chunked\r\nServer: n\r\nconnection: close\r\n\r\n"
    );
    assert_eq!(
        fwd("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", false),
        "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
    );
}
