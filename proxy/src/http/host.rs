//! The host a request names, decided once for both servers, so that the host that was judged
//! is the only host the application receives (RFC 9112 §3.2, RFC 9113 §8.3.1):
//!
//! - an absolute-form target's authority replaces `Host` (which the proxy then rewrites);
//! - HTTP/1.1 needs exactly one `Host`; two are refused, as is none;
//! - HTTP/2's `:authority` and a `host` header that names another host are refused;
//! - userinfo (`user@host`) and anything that is not a host and port are refused.

use http::{HeaderMap, Uri, Version, header};
use portcullis_config::normalize::normalize_host;

/// Why a request's host cannot be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum HostError {
    /// More than one `Host` header.
    #[error("more than one Host header")]
    Repeated,
    /// HTTP/1.1 without `Host`.
    #[error("HTTP/1.1 request without Host")]
    Missing,
    /// Userinfo, or characters a host never has.
    #[error("invalid host {0}")]
    Invalid(&'static str),
    /// `:authority` and `host` disagree.
    #[error(":authority and host name different hosts")]
    Conflict,
}

/// Whether `value` is a host (reg-name or IP literal) with an optional port: no userinfo, no
/// path, query or fragment characters, no white space or controls.
pub(crate) fn is_host(value: &str) -> bool {
    !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:[]%".contains(&b))
}

/// The host the request names, normalized: its authority, else its one `Host` header.
pub(crate) fn request_host(
    uri: &Uri,
    headers: &HeaderMap,
    version: Version,
) -> Result<Option<String>, HostError> {
    let mut hosts = headers.get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(HostError::Repeated);
    }
    let host = match host {
        Some(v) => Some(
            v.to_str()
                .ok()
                .filter(|h| is_host(h))
                .ok_or(HostError::Invalid("in Host"))?,
        ),
        None => None,
    };
    let authority = match uri.authority() {
        Some(a) if !is_host(a.as_str()) => return Err(HostError::Invalid("in the authority")),
        Some(a) => Some(a.as_str()),
        None => None,
    };
    match (authority, host) {
        (Some(a), Some(h)) if version == Version::HTTP_2 => {
            if normalize_host(a) != normalize_host(h) {
                return Err(HostError::Conflict);
            }
            Ok(Some(normalize_host(a)))
        }
        // HTTP/1 absolute form: the authority wins and replaces Host when forwarded.
        (Some(a), _) => Ok(Some(normalize_host(a))),
        (None, Some(h)) => Ok(Some(normalize_host(h))),
        (None, None) if version == Version::HTTP_11 => Err(HostError::Missing),
        (None, None) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn headers(hosts: &[&'static str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in hosts {
            h.append(header::HOST, HeaderValue::from_static(v));
        }
        h
    }

    /// uri, Host headers, version, expected.
    type Row = (
        &'static str,
        &'static [&'static str],
        Version,
        Result<Option<&'static str>, HostError>,
    );

    #[test]
    fn table() {
        use Version as V;
        let cases: &[Row] = &[
            ("/x", &["a.example"], V::HTTP_11, Ok(Some("a.example"))),
            (
                "/x",
                &["A.example.:8080"],
                V::HTTP_11,
                Ok(Some("a.example")),
            ),
            ("/x", &[], V::HTTP_11, Err(HostError::Missing)),
            ("/x", &[], V::HTTP_10, Ok(None)),
            ("/x", &["a", "b"], V::HTTP_11, Err(HostError::Repeated)),
            ("/x", &["a", "a"], V::HTTP_11, Err(HostError::Repeated)),
            (
                "/x",
                &["b@a"],
                V::HTTP_11,
                Err(HostError::Invalid("in Host")),
            ),
            (
                "/x",
                &["b#@a"],
                V::HTTP_11,
                Err(HostError::Invalid("in Host")),
            ),
            (
                "/x",
                &["a/b"],
                V::HTTP_11,
                Err(HostError::Invalid("in Host")),
            ),
            ("/x", &["[::1]:80"], V::HTTP_11, Ok(Some("[::1]"))),
            ("http://a/x", &["b"], V::HTTP_11, Ok(Some("a"))),
            ("http://a/x", &[], V::HTTP_11, Ok(Some("a"))),
            (
                "http://b@a/x",
                &["a"],
                V::HTTP_11,
                Err(HostError::Invalid("in the authority")),
            ),
            ("http://a/x", &["a"], V::HTTP_2, Ok(Some("a"))),
            ("http://a/x", &["A:443"], V::HTTP_2, Ok(Some("a"))),
            ("http://a/x", &["b"], V::HTTP_2, Err(HostError::Conflict)),
            ("/x", &[], V::HTTP_2, Ok(None)),
            ("/x", &["a"], V::HTTP_2, Ok(Some("a"))),
        ];
        for (uri, hosts, version, want) in cases {
            let uri: Uri = uri.parse().expect("uri");
            let got = request_host(&uri, &headers(hosts), *version);
            assert_eq!(
                got.as_ref().map(|h| h.as_deref()),
                want.as_ref().map(|h| *h),
                "{uri} {hosts:?} {version:?}"
            );
        }
    }
}
