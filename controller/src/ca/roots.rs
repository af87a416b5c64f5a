//! Which roots peers trust while the signing root changes (pure): the current root, the extra
//! ones an operator gives (`--ca-bundle`, e.g. the next root before it signs), and every earlier
//! root for one SVID lifetime after it stopped signing — until each certificate it signed has
//! expired. Sidecars learn the bundle with every view (within a second of a change) and with
//! every certificate, so a peer that renewed under the new root is trusted by those that have
//! not yet.

use std::time::{Duration, SystemTime};

const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
const END: &str = "-----END CERTIFICATE-----";

/// The certificates of a PEM text, each as its own normalized block.
pub fn certificates(pem: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = pem;
    while let Some(start) = rest.find(BEGIN) {
        let Some(len) = rest[start..].find(END) else {
            break;
        };
        let body: String = rest[start + BEGIN.len()..start + len]
            .split_whitespace()
            .collect::<Vec<_>>()
            .join("\n");
        out.push(format!("{BEGIN}\n{body}\n{END}\n"));
        rest = &rest[start + len + END.len()..];
    }
    out
}

/// The roots, as they change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Roots {
    current: String,
    extra: String,
    /// Earlier signing roots, each trusted until its time.
    retired: Vec<(String, SystemTime)>,
}

impl Roots {
    /// Signing with `current` (PEM), also trusting `extra` (PEM, may be empty).
    pub fn new(current: &str, extra: &str) -> Self {
        Self {
            current: current.to_string(),
            extra: extra.to_string(),
            retired: Vec::new(),
        }
    }

    /// The signing root changes to `next` at `now`: the old one stays trusted for `ttl` (plus
    /// the SVIDs' backdating), the longest any certificate it signed can still be valid.
    pub fn rotate(&mut self, next: &str, now: SystemTime, ttl: Duration) {
        if certificates(next) == certificates(&self.current) {
            return;
        }
        let until = now + ttl + super::BACKDATE;
        let old = std::mem::replace(&mut self.current, next.to_string());
        self.retired.push((old, until));
    }

    /// The extra roots are now `extra`.
    pub fn set_extra(&mut self, extra: &str) {
        self.extra = extra.to_string();
    }

    /// What peers trust at `now`: each certificate once, the current root first.
    pub fn bundle(&self, now: SystemTime) -> String {
        let mut seen: Vec<String> = Vec::new();
        let live = self
            .retired
            .iter()
            .filter(|(_, until)| *until > now)
            .map(|(pem, _)| pem.as_str());
        for pem in [self.current.as_str(), self.extra.as_str()]
            .into_iter()
            .chain(live)
        {
            for cert in certificates(pem) {
                if !seen.contains(&cert) {
                    seen.push(cert);
                }
            }
        }
        seen.concat()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(tag: &str) -> String {
        format!("{BEGIN}\nMII{tag}\n{END}\n")
    }

    #[test]
    fn a_retired_root_is_trusted_for_one_lifetime_then_dropped() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let ttl = Duration::from_secs(3600);
        let mut roots = Roots::new(&cert("A"), "");
        let cases: Vec<(u64, Option<&str>, &str, String)> = vec![
            (0, None, "one root", cert("A")),
            (
                10,
                Some("B"),
                "B signs, A still trusted",
                cert("B") + &cert("A"),
            ),
            (
                10 + 3600,
                None,
                "within A's last lifetime",
                cert("B") + &cert("A"),
            ),
            (
                10 + 3600 + 61,
                None,
                "every A certificate expired",
                cert("B"),
            ),
            (
                5000,
                Some("B"),
                "the same root again: no rotation",
                cert("B"),
            ),
        ];
        for (at, next, what, want) in cases {
            let now = t0 + Duration::from_secs(at);
            if let Some(tag) = next {
                roots.rotate(&cert(tag), now, ttl);
            }
            assert_eq!(roots.bundle(now), want, "{what}");
        }
    }

    #[test]
    fn extra_roots_join_once_and_pem_blocks_are_normalized() {
        let mut roots = Roots::new(&cert("A"), "");
        roots.set_extra(&format!("comment\n{}{}", cert("A"), cert("N")));
        let now = SystemTime::UNIX_EPOCH;
        assert_eq!(roots.bundle(now), cert("A") + &cert("N"));
        let messy = format!("{BEGIN}\r\n  MIIA  \r\n{END}");
        assert_eq!(certificates(&messy), [cert("A")]);
        assert!(certificates("no pem here").is_empty());
    }
}
