//! Protocol detection: a pure function over the first bytes a client sent.
//!
//! HTTP/2 is recognised by its prior-knowledge preface, HTTP/1 by a request line
//! (`TOKEN SP target SP HTTP/1.x CRLF`), TLS by a ClientHello record, from which the SNI and the
//! ALPN protocols are read. Anything else is opaque TCP. While the bytes seen so far could still
//! be any of these, the answer is [`Detected::NeedMore`]; callers bound that with a byte limit and
//! a timeout (server-first protocols send nothing at all).

use crate::net::H2_PREFACE;

/// How much of a request line is read before calling it HTTP/1 without its end (the HTTP
/// server then answers a line that never ends with 431).
pub(crate) const MAX_REQUEST_LINE: usize = 8 * 1024;

/// What the client speaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Detected {
    /// HTTP/1.x.
    Http1,
    /// HTTP/2 with prior knowledge (h2c).
    Http2,
    /// A TLS ClientHello.
    Tls {
        /// Server name indication, lower-cased.
        sni: Option<String>,
        /// ALPN protocols offered.
        alpn: Vec<String>,
    },
    /// Not HTTP and not TLS.
    Opaque,
    /// Not enough bytes yet.
    NeedMore,
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn http1(buf: &[u8]) -> Detected {
    let method_len = buf.iter().take_while(|&&b| is_tchar(b)).count();
    if method_len == 0 || method_len > 32 {
        return Detected::Opaque;
    }
    match buf.get(method_len) {
        None => return Detected::NeedMore,
        Some(b' ') => {}
        Some(_) => return Detected::Opaque,
    }
    let Some(eol) = buf.iter().position(|&b| b == b'\n') else {
        // A long request line is still HTTP: the HTTP server answers it (414/431), rather than
        // the connection being closed unanswered as opaque traffic.
        let printable = buf.iter().all(|&b| (0x20..0x7f).contains(&b) || b == b'\r');
        return match (printable, buf.len() < MAX_REQUEST_LINE) {
            (false, _) => Detected::Opaque,
            (true, true) => Detected::NeedMore,
            (true, false) => Detected::Http1,
        };
    };
    let line = buf[..eol].strip_suffix(b"\r").unwrap_or(&buf[..eol]);
    // `METHOD SP target SP HTTP/1.x`, the target at least one visible character: no slicing
    // that a short line could invert.
    let target = line
        .strip_suffix(b" HTTP/1.1")
        .or_else(|| line.strip_suffix(b" HTTP/1.0"))
        .and_then(|rest| rest.get(method_len + 1..));
    let ok = target.is_some_and(|t| !t.is_empty() && t.iter().all(|&b| b > 0x20 && b < 0x7f));
    if ok {
        Detected::Http1
    } else {
        Detected::Opaque
    }
}

/// A cursor over a TLS ClientHello that never panics: every read is bounds-checked.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.buf.len() < n {
            return None;
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<usize> {
        self.take(1).map(|b| b[0] as usize)
    }
    fn u16(&mut self) -> Option<usize> {
        self.take(2).map(|b| (b[0] as usize) << 8 | b[1] as usize)
    }
    fn u24(&mut self) -> Option<usize> {
        self.take(3)
            .map(|b| (b[0] as usize) << 16 | (b[1] as usize) << 8 | b[2] as usize)
    }
    fn vec8(&mut self) -> Option<&'a [u8]> {
        let n = self.u8()?;
        self.take(n)
    }
    fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        self.take(n)
    }
}

fn client_hello(body: &[u8]) -> Option<(Option<String>, Vec<String>)> {
    let mut r = Reader { buf: body };
    if r.u8()? != 1 {
        return None; // not a ClientHello
    }
    let len = r.u24()?;
    let mut r = Reader { buf: r.take(len)? };
    r.take(2 + 32)?; // legacy_version, random
    r.vec8()?; // session id
    r.vec16()?; // cipher suites
    r.vec8()?; // compression methods
    let mut sni = None;
    let mut alpn = Vec::new();
    if r.buf.is_empty() {
        return Some((sni, alpn));
    }
    let mut exts = Reader { buf: r.vec16()? };
    while !exts.buf.is_empty() {
        let kind = exts.u16()?;
        let mut data = Reader { buf: exts.vec16()? };
        match kind {
            0 => {
                let mut names = Reader { buf: data.vec16()? };
                while !names.buf.is_empty() {
                    let name_type = names.u8()?;
                    let name = names.vec16()?;
                    if name_type == 0 && sni.is_none() {
                        sni = std::str::from_utf8(name).ok().map(str::to_ascii_lowercase);
                    }
                }
            }
            16 => {
                let mut list = Reader { buf: data.vec16()? };
                while !list.buf.is_empty() {
                    let p = list.vec8()?;
                    alpn.push(String::from_utf8_lossy(p).into_owned());
                }
            }
            _ => {}
        }
    }
    Some((sni, alpn))
}

fn tls(buf: &[u8]) -> Detected {
    // Record header: type 22 (handshake), version 3.x, length.
    if buf.len() < 5 {
        return if buf.get(1).is_none_or(|&v| v == 3) {
            Detected::NeedMore
        } else {
            Detected::Opaque
        };
    }
    if buf[1] != 3 {
        return Detected::Opaque;
    }
    let len = (buf[3] as usize) << 8 | buf[4] as usize;
    if len == 0 || len > 16 * 1024 + 2048 {
        return Detected::Opaque;
    }
    if buf.len() < 5 + len {
        return Detected::NeedMore;
    }
    match client_hello(&buf[5..5 + len]) {
        Some((sni, alpn)) => Detected::Tls { sni, alpn },
        None => Detected::Opaque,
    }
}

/// Classifies the first bytes of a connection.
pub(crate) fn detect(buf: &[u8]) -> Detected {
    let Some(&first) = buf.first() else {
        return Detected::NeedMore;
    };
    if first == 0x16 {
        return tls(buf);
    }
    let n = buf.len().min(H2_PREFACE.len());
    if buf[..n] == H2_PREFACE[..n] {
        return if n == H2_PREFACE.len() {
            Detected::Http2
        } else {
            Detected::NeedMore
        };
    }
    http1(buf)
}

#[cfg(test)]
mod tests;
