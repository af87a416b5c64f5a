//! The access log line, written by hand: one pass into the shared buffer, no intermediate
//! strings, no formatting machinery for the common cases (ASCII strings that need no escaping,
//! IPv4 addresses, integers, the timestamp). Pure; checked against serde_json in the tests.

use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use super::record::Record;

/// Appends `n` in decimal.
fn int(out: &mut Vec<u8>, mut n: u64) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&tmp[i..]);
}

/// Appends `s` as a JSON string (quotes included), escaping as RFC 8259 requires.
fn string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if esc.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(b"\\u00");
            out.push(HEX[(b >> 4) as usize]);
            out.push(HEX[(b & 0xf) as usize]);
        } else {
            out.extend_from_slice(esc);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

fn addr(out: &mut Vec<u8>, a: &SocketAddr) {
    out.push(b'"');
    match a {
        SocketAddr::V4(v4) => {
            for (i, o) in v4.ip().octets().iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                int(out, u64::from(*o));
            }
            out.push(b':');
            int(out, u64::from(v4.port()));
        }
        SocketAddr::V6(v6) => {
            use std::io::Write as _;
            let _ = write!(out, "{v6}");
        }
    }
    out.push(b'"');
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (Hinnant's algorithm).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn two(out: &mut Vec<u8>, n: u32) {
    out.push(b'0' + (n / 10 % 10) as u8);
    out.push(b'0' + (n % 10) as u8);
}

/// Appends `t` as `"YYYY-MM-DDTHH:MM:SS.mmmZ"` (UTC, milliseconds), as the log's `ts`.
pub(super) fn timestamp(out: &mut Vec<u8>, t: SystemTime) {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs() as i64;
    let (y, mo, d) = civil(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400) as u32;
    out.push(b'"');
    int(out, y.max(0) as u64);
    out.push(b'-');
    two(out, mo);
    out.push(b'-');
    two(out, d);
    out.push(b'T');
    two(out, sod / 3600);
    out.push(b':');
    two(out, sod / 60 % 60);
    out.push(b':');
    two(out, sod % 60);
    out.push(b'.');
    let ms = since.subsec_millis();
    out.push(b'0' + (ms / 100) as u8);
    two(out, ms % 100);
    out.extend_from_slice(b"Z\"");
}

/// Appends one record as a JSON object and a newline. Fields that do not apply are omitted.
pub(super) fn write_line(out: &mut Vec<u8>, r: &Record) {
    out.extend_from_slice(b"{\"ts\":");
    timestamp(out, r.ts);
    out.extend_from_slice(b",\"direction\":\"");
    out.extend_from_slice(r.direction.as_str().as_bytes());
    out.extend_from_slice(b"\",\"src\":");
    addr(out, &r.src);
    if let Some(d) = &r.dst {
        out.extend_from_slice(b",\"dst\":");
        addr(out, d);
    }
    fn opt<S: AsRef<str>>(out: &mut Vec<u8>, key: &[u8], v: &Option<S>) {
        if let Some(v) = v {
            out.extend_from_slice(key);
            string(out, v.as_ref());
        }
    }
    opt(out, b",\"service\":", &r.service);
    out.extend_from_slice(b",\"protocol\":");
    string(out, r.protocol);
    opt(out, b",\"identity\":", &r.identity);
    opt(out, b",\"sni\":", &r.sni);
    opt(out, b",\"method\":", &r.method);
    opt(out, b",\"host\":", &r.host);
    opt(out, b",\"path\":", &r.path);
    if let Some(s) = r.status {
        out.extend_from_slice(b",\"status\":");
        int(out, u64::from(s));
    }
    out.extend_from_slice(b",\"verdict\":\"");
    out.extend_from_slice(r.verdict.as_str().as_bytes());
    out.push(b'"');
    opt(out, b",\"policy\":", &r.policy);
    opt(out, b",\"rule\":", &r.rule);
    opt(out, b",\"reason\":", &r.reason);
    out.extend_from_slice(b",\"duration_ms\":");
    int(out, r.duration_ms);
    for (key, v) in [
        (&b",\"bytes_in\":"[..], r.bytes_in),
        (&b",\"bytes_out\":"[..], r.bytes_out),
    ] {
        if let Some(v) = v {
            out.extend_from_slice(key);
            int(out, v);
        }
    }
    opt(out, b",\"request_id\":", &r.request_id);
    out.extend_from_slice(b"}\n");
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use std::sync::Arc;

    use proptest::prelude::*;

    use super::*;
    use crate::vocab::{Direction, Verdict};

    fn ts_text(t: SystemTime) -> String {
        let mut v = Vec::new();
        timestamp(&mut v, t);
        String::from_utf8(v).expect("utf8")
    }

    #[test]
    fn timestamps_match_rfc3339_millis() {
        for secs in [
            0u64,
            951_782_400,
            1_709_164_800,
            1_796_000_000,
            4_102_444_799,
        ] {
            for ms in [0u64, 7, 999] {
                let t = UNIX_EPOCH + Duration::from_millis(secs * 1000 + ms);
                let want = format!("\"{}\"", humantime::format_rfc3339_millis(t));
                assert_eq!(ts_text(t), want);
            }
        }
    }

    fn record() -> impl Strategy<Value = Record> {
        let s = || prop::option::of(any::<String>());
        (
            (any::<bool>(), any::<[u8; 4]>(), any::<u16>(), any::<bool>()),
            (s(), s(), s(), s(), s(), s(), s(), s(), s()),
            (
                prop::option::of(any::<u16>()),
                0u8..3,
                any::<u64>(),
                prop::option::of(any::<u64>()),
                0u64..4_000_000_000_000,
            ),
        )
            .prop_map(|(a, b, c)| {
                let (inbound, ip, port, v6) = a;
                let src: SocketAddr = if v6 {
                    SocketAddr::from(([0xfd77, 1, 0, 0, 0, 0, 0, u16::from(ip[0])], port))
                } else {
                    SocketAddr::from((ip, port))
                };
                let dir = if inbound {
                    Direction::Inbound
                } else {
                    Direction::Outbound
                };
                let mut r = Record::new(dir, src, Some(src), "http1");
                let (policy, rule);
                (
                    r.identity,
                    r.sni,
                    r.method,
                    r.host,
                    r.path,
                    policy,
                    rule,
                    r.reason,
                    r.request_id,
                ) = b;
                r.service = r.sni.clone().map(Arc::<str>::from);
                r.policy = policy.map(Arc::<str>::from);
                r.rule = rule.map(Arc::<str>::from);
                let (status, verdict, dur, bytes, ms) = c;
                r.status = status;
                r.verdict = [Verdict::Allow, Verdict::Deny, Verdict::AuditDeny][verdict as usize];
                r.duration_ms = dur;
                r.bytes_in = bytes;
                r.bytes_out = bytes.map(|b| b / 2);
                r.ts = UNIX_EPOCH + Duration::from_millis(ms);
                r
            })
    }

    proptest! {
        #[test]
        fn the_line_is_the_json_serde_would_write(r in record()) {
            let mut line = Vec::new();
            write_line(&mut line, &r);
            prop_assert_eq!(line.last(), Some(&b'\n'));
            let ours: serde_json::Value = serde_json::from_slice(&line).expect("valid JSON");
            let mut want = serde_json::to_value(&r).expect("serde");
            want["ts"] = serde_json::Value::String(humantime::format_rfc3339_millis(r.ts).to_string());
            prop_assert_eq!(ours, want);
        }
    }
}
