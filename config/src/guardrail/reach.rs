//! Which peers are the internet, for the `internetEgress` guardrail: a CIDR reaches the
//! internet when, less its `except` ranges, some of it is outside the private and special
//! ranges (RFC 1918, CGNAT `100.64.0.0/10`, loopback, link-local, `0.0.0.0/8`; IPv6 ULA
//! `fc00::/7`, link-local, loopback, unspecified); a host reaches it unless it is a cluster
//! name (one label, or ending in `.svc`, `.svc.cluster.local`, `.cluster.local`, or
//! `localhost`). A cluster whose pod or Service ranges are public addresses is not told apart.
//! A leaf: address arithmetic only.

use std::net::IpAddr;

use ipnet::IpNet;

/// Ranges that are not the internet, per family.
const PRIVATE_V4: [&str; 7] = [
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.168.0.0/16",
];
const PRIVATE_V6: [&str; 4] = ["::/127", "fc00::/7", "fe80::/10", "::ffff:0:0/96"];

/// A range of addresses of one family as inclusive integer bounds.
type Span = (u128, u128);

fn span(net: &IpNet) -> Span {
    let bits = |ip: IpAddr| match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    };
    (bits(net.network()), bits(net.broadcast()))
}

/// `spans` without `cut`.
fn subtract(spans: Vec<Span>, cut: Span) -> Vec<Span> {
    let mut out = Vec::with_capacity(spans.len() + 1);
    for (lo, hi) in spans {
        if cut.1 < lo || cut.0 > hi {
            out.push((lo, hi));
            continue;
        }
        if cut.0 > lo {
            out.push((lo, cut.0 - 1));
        }
        if cut.1 < hi {
            out.push((cut.1 + 1, hi));
        }
    }
    out
}

/// Whether `net` less `except` holds an internet address.
pub fn cidr_reaches_internet(net: &IpNet, except: &[IpNet]) -> bool {
    let private: &[&str] = match net {
        IpNet::V4(_) => &PRIVATE_V4,
        IpNet::V6(_) => &PRIVATE_V6,
    };
    let cuts = private
        .iter()
        .filter_map(|p| p.parse::<IpNet>().ok())
        .chain(except.iter().copied())
        .filter(|c| {
            matches!(
                (c, net),
                (IpNet::V4(_), IpNet::V4(_)) | (IpNet::V6(_), IpNet::V6(_))
            )
        });
    let left = cuts.fold(vec![span(net)], |spans, c| subtract(spans, span(&c)));
    !left.is_empty()
}

/// Whether a host pattern (`*.example.com`, `api.shop.svc`) names something outside the
/// cluster.
pub fn host_reaches_internet(host: &str) -> bool {
    let h = host.trim().trim_end_matches('.').to_ascii_lowercase();
    let cluster = !h.contains('.')
        || h == "localhost"
        || [".svc", ".svc.cluster.local", ".cluster.local"]
            .iter()
            .any(|s| h.ends_with(s));
    !cluster
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().expect("cidr")
    }

    #[test]
    fn ranges_outside_the_private_ones_are_the_internet() {
        let cases: [(&str, &[&str], bool); 12] = [
            ("10.0.0.0/8", &[], false),
            ("10.1.2.3/32", &[], false),
            ("192.168.0.0/16", &[], false),
            ("172.16.0.0/11", &[], true),
            ("8.8.8.8/32", &[], true),
            ("0.0.0.0/0", &[], true),
            ("0.0.0.0/1", &["0.0.0.0/2", "64.0.0.0/2"], false),
            ("100.64.0.0/10", &[], false),
            ("::/0", &[], true),
            ("fd00::/8", &[], false),
            ("2001:db8::/32", &[], true),
            ("2001:db8::/32", &["2001:db8::/32"], false),
        ];
        for (cidr, except, want) in cases {
            let except: Vec<IpNet> = except.iter().map(|e| net(e)).collect();
            assert_eq!(
                cidr_reaches_internet(&net(cidr), &except),
                want,
                "{cidr} except {except:?}"
            );
        }
    }

    #[test]
    fn cluster_names_are_not_the_internet() {
        let cases = [
            ("api.example.com", true),
            ("*.example.com", true),
            ("orders", false),
            ("orders.shop.svc", false),
            ("orders.shop.svc.cluster.local.", false),
            ("*.svc.cluster.local", false),
            ("LOCALHOST", false),
        ];
        for (host, want) in cases {
            assert_eq!(host_reaches_internet(host), want, "{host}");
        }
    }
}
