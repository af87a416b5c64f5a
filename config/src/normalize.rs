//! Request normalization: the one form of a request that the policy judges and the proxy
//! forwards, so that no backend can see a path the policy judged differently.
//!
//! Path: `%XX` of unreserved characters decoded, other escapes upper-cased; `%2F`, `%5C`, `%00`,
//! a raw `\`, a fragment, a `;`, a malformed escape, a control or non-ASCII byte, or a path that
//! climbs above the root are rejected; dot segments removed (RFC 3986 5.2.4); duplicate slashes
//! merged; the query is kept apart and never matched. Host: lower-cased, port and trailing dot
//! stripped. Header names lower-cased; repeated values joined with `,`.

use std::fmt;

/// Why a request target is rejected (answered with 400, never forwarded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// `%2F` (an encoded `/`).
    EncodedSlash,
    /// `%5C` or a raw `\`.
    Backslash,
    /// `%00`.
    EncodedNul,
    /// A `#` fragment in the request target.
    Fragment,
    /// A `;` (matrix parameters).
    Semicolon,
    /// A `%` not followed by two hex digits.
    BadEscape,
    /// A byte that may not appear in a path.
    BadByte,
    /// `..` above the root.
    EscapesRoot,
    /// Not origin-form, absolute-form, or `*`.
    BadTarget,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Rejection::EncodedSlash => "encoded slash (%2F) in path",
            Rejection::Backslash => "backslash in path",
            Rejection::EncodedNul => "encoded NUL (%00) in path",
            Rejection::Fragment => "fragment in request target",
            Rejection::Semicolon => "';' in path",
            Rejection::BadEscape => "malformed percent-escape in path",
            Rejection::BadByte => "invalid byte in path",
            Rejection::EscapesRoot => "path escapes the root",
            Rejection::BadTarget => "invalid request target",
        })
    }
}

/// A normalized request target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The normalized path (`/`-rooted, or `*` for an asterisk-form target).
    pub path: String,
    /// The query, as sent, without `?`.
    pub query: Option<String>,
    /// The authority of an absolute-form target, normalized as a host.
    pub authority: Option<String>,
}

impl Target {
    /// Path and query, as forwarded.
    pub fn path_and_query(&self) -> String {
        match &self.query {
            Some(q) => format!("{}?{q}", self.path),
            None => self.path.clone(),
        }
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Decodes unreserved escapes and validates every byte; returns the path with only the escapes
/// that must stay (upper-cased).
fn decode(path: &str) -> Result<String, Rejection> {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'%' => {
                let (h, l) = match (
                    bytes.get(i + 1).copied().and_then(hex),
                    bytes.get(i + 2).copied().and_then(hex),
                ) {
                    (Some(h), Some(l)) => (h, l),
                    _ => return Err(Rejection::BadEscape),
                };
                let v = h * 16 + l;
                match v {
                    b'/' => return Err(Rejection::EncodedSlash),
                    b'\\' => return Err(Rejection::Backslash),
                    0 => return Err(Rejection::EncodedNul),
                    v if is_unreserved(v) => out.push(v as char),
                    v => {
                        out.push('%');
                        out.push_str(&format!("{v:02X}"));
                    }
                }
                i += 3;
                continue;
            }
            b'\\' => return Err(Rejection::Backslash),
            b'#' => return Err(Rejection::Fragment),
            b';' => return Err(Rejection::Semicolon),
            b if b <= 0x20 || b >= 0x7f => return Err(Rejection::BadByte),
            b => out.push(b as char),
        }
        i += 1;
    }
    Ok(out)
}

/// Removes dot segments and merges slashes; `..` above the root is an error.
fn resolve(path: &str) -> Result<String, Rejection> {
    let mut segments: Vec<&str> = Vec::new();
    let trailing = path.ends_with('/') || path.ends_with("/.") || path.ends_with("/..");
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                if segments.pop().is_none() {
                    return Err(Rejection::EscapesRoot);
                }
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(path.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if out.is_empty() || trailing {
        out.push('/');
    }
    Ok(out)
}

/// Normalizes a path (no query, no fragment).
pub fn normalize_path(path: &str) -> Result<String, Rejection> {
    if path.is_empty() {
        return Ok("/".into());
    }
    if !path.starts_with('/') {
        return Err(Rejection::BadTarget);
    }
    resolve(&decode(path)?)
}

/// Normalizes a request target: origin-form (`/p?q`), absolute-form (`http://h/p?q`) or `*`.
pub fn normalize_target(target: &str) -> Result<Target, Rejection> {
    if target == "*" {
        return Ok(Target {
            path: "*".into(),
            query: None,
            authority: None,
        });
    }
    if target.contains('#') {
        return Err(Rejection::Fragment);
    }
    // Origin-form starts with `/`: a `://` in its query is data, not a scheme.
    let absolute = if target.starts_with('/') {
        None
    } else {
        target.split_once("://")
    };
    let (authority, rest) = match absolute {
        Some((scheme, rest))
            if scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https") =>
        {
            let end = rest.find(['/', '?']).unwrap_or(rest.len());
            let host = normalize_host(&rest[..end]);
            if host.is_empty() {
                return Err(Rejection::BadTarget);
            }
            (Some(host), &rest[end..])
        }
        Some(_) => return Err(Rejection::BadTarget),
        None => (None, target),
    };
    let (path, query) = match rest.split_once('?') {
        Some((p, q)) => (p, Some(q.to_string())),
        None => (rest, None),
    };
    if path.is_empty() && authority.is_none() && query.is_none() {
        return Err(Rejection::BadTarget);
    }
    Ok(Target {
        path: normalize_path(path)?,
        query,
        authority,
    })
}

/// Lower-cases a host and strips userinfo, its port and trailing dots (`Api.Example.COM.:8443`
/// → `api.example.com`; `[::1]:80` → `[::1]`; `blocked.example:80.` → `blocked.example`), until
/// nothing changes: normalizing a normalized host changes nothing.
pub fn normalize_host(host: &str) -> String {
    let mut h = host.to_ascii_lowercase();
    loop {
        let next = strip_host_once(&h);
        if next.len() == h.len() {
            return h;
        }
        h = next.to_string();
    }
}

/// One round of stripping; each step only ever shortens the text.
fn strip_host_once(host: &str) -> &str {
    let host = host.trim();
    let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
    let without_port = if host.starts_with('[') {
        host.find(']').map_or(host, |i| &host[..=i])
    } else {
        match host.rsplit_once(':') {
            // One `:` only (an unbracketed IPv6 address has no port) and a port of digits.
            Some((h, port))
                if !h.contains(':')
                    && !port.is_empty()
                    && port.bytes().all(|b| b.is_ascii_digit()) =>
            {
                h
            }
            _ => host,
        }
    };
    without_port.trim_end_matches('.')
}

#[cfg(test)]
mod tests;
