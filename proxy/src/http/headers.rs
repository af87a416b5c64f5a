//! Header handling: hop-by-hop headers (RFC 9110 7.6.1) are removed before forwarding in either
//! direction, and the policy engine reads request headers through a case-insensitive view that
//! joins repeated values with `,`.

use std::borrow::Cow;

use http::HeaderMap;
use http::header::{self, HeaderName};

const HOP_BY_HOP: [&str; 6] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "te",
];

/// Removes hop-by-hop headers and the headers `Connection` names. `keep_upgrade` keeps
/// `Connection: upgrade` + `Upgrade` for a protocol switch; `TE: trailers` is kept (gRPC).
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .filter(|n| !(keep_upgrade && n == header::UPGRADE))
        // What was judged is what the application receives: `Connection: host` (or
        // `authorization`) never removes it after the decision.
        .filter(|n| *n != header::HOST && *n != header::AUTHORIZATION)
        .collect();
    for n in named {
        headers.remove(n);
    }
    let trailers = headers
        .get(header::TE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
        });
    for name in HOP_BY_HOP {
        if keep_upgrade && (name == "connection" || name == "upgrade") {
            continue;
        }
        headers.remove(name);
    }
    if trailers {
        headers.insert(header::TE, http::HeaderValue::from_static("trailers"));
    }
    if keep_upgrade {
        headers.insert(
            header::CONNECTION,
            http::HeaderValue::from_static("upgrade"),
        );
    }
}

/// The request's headers as the policy engine sees them.
#[derive(Debug)]
pub(crate) struct PolicyHeaders<'a>(pub &'a HeaderMap);

impl portcullis_config::decide::Headers for PolicyHeaders<'_> {
    fn get(&self, lower_name: &str) -> Option<Cow<'_, str>> {
        join(
            self.0
                .get_all(lower_name)
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes())),
        )
    }
}

/// The values of one header as the policy engine sees them: the only value as it is, repeated
/// values joined with `,`; `None` when there are none.
pub(crate) fn join<'a>(mut values: impl Iterator<Item = Cow<'a, str>>) -> Option<Cow<'a, str>> {
    let first = values.next()?;
    let Some(second) = values.next() else {
        return Some(first);
    };
    let mut joined = format!("{first},{second}");
    for v in values {
        joined.push(',');
        joined.push_str(&v);
    }
    Some(Cow::Owned(joined))
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;
    use portcullis_config::decide::Headers as _;

    use super::*;

    #[test]
    fn hop_by_hop_and_connection_named_headers_go() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("te", HeaderValue::from_static("trailers, gzip"));
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        h.insert("x-keep", HeaderValue::from_static("yes"));
        strip_hop_by_hop(&mut h, false);
        let mut names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["te", "x-keep"]);
        assert_eq!(h["te"], "trailers");
    }

    #[test]
    fn upgrade_is_kept_for_a_protocol_switch() {
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("Upgrade"));
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["connection"], "upgrade");
    }

    #[test]
    fn repeated_headers_are_joined() {
        let mut h = HeaderMap::new();
        h.append("x-tenant", HeaderValue::from_static("a"));
        h.append("x-tenant", HeaderValue::from_static("b"));
        assert_eq!(PolicyHeaders(&h).get("x-tenant").as_deref(), Some("a,b"));
        assert_eq!(PolicyHeaders(&h).get("x-other"), None);
    }
}
