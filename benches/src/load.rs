//! The pure half of the load harness: reading what wrk, h2load and iperf3 print, CPU time from
//! `/proc/<pid>/stat` text, medians, and the report (markdown and CSV) with the ratios the
//! targets are stated in. The `load` binary drives the tools; everything here is tested with
//! recorded outputs.

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// One measured run.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Sample {
    /// Requests per second (or, for bulk TCP, megabits per second).
    pub rate: f64,
    /// Median latency, µs (wrk only).
    pub p50_us: Option<f64>,
    /// 99th percentile latency, µs (wrk only).
    pub p99_us: Option<f64>,
    /// Requests completed (for CPU per request).
    pub requests: Option<f64>,
    /// CPU seconds the proxy under test spent during the run.
    pub cpu_s: Option<f64>,
}

impl Sample {
    /// CPU seconds per 10 000 requests, when both are known.
    pub fn cpu_per_10k(&self) -> Option<f64> {
        match (self.cpu_s, self.requests) {
            (Some(c), Some(n)) if n > 0.0 => Some(c / n * 10_000.0),
            _ => None,
        }
    }
}

/// Parses wrk's durations (`123.45us`, `1.20ms`, `2.00s`) into microseconds.
pub fn micros(v: &str) -> Option<f64> {
    let v = v.trim();
    let (num, mul) = if let Some(n) = v.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix("ms") {
        (n, 1e3)
    } else if let Some(n) = v.strip_suffix('m') {
        (n, 60e6)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1e6)
    } else {
        return None;
    };
    num.trim().parse::<f64>().ok().map(|n| n * mul)
}

/// Reads `wrk --latency` output: req/s, p50, p99, request count. Errors name what is missing or
/// say that requests failed.
pub fn parse_wrk(text: &str) -> Result<Sample, String> {
    let rate = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| format!("no Requests/sec in wrk output:\n{text}"))?;
    let pct = |p: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(p))
            .and_then(micros)
    };
    let requests = text
        .lines()
        .find(|l| l.contains(" requests in "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok());
    if let Some(l) = text
        .lines()
        .find(|l| l.contains("Non-2xx or 3xx responses"))
    {
        return Err(format!("wrk saw failed requests: {}", l.trim()));
    }
    Ok(Sample {
        rate,
        p50_us: pct("50%"),
        p99_us: pct("99%"),
        requests,
        cpu_s: None,
    })
}

/// Reads h2load output: req/s and the number of successful requests; fails on errors.
pub fn parse_h2load(text: &str) -> Result<Sample, String> {
    let rate = text
        .lines()
        .find(|l| l.starts_with("finished in"))
        .and_then(|l| l.split(", ").nth(1))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("no req/s in h2load output:\n{text}"))?;
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with("requests:"))
            .and_then(|l| {
                l.split(", ")
                    .find(|p| p.trim_end().ends_with(name))
                    .and_then(|p| p.split_whitespace().rev().nth(1))
                    .and_then(|n| n.parse::<f64>().ok())
            })
    };
    let ok = field("succeeded");
    if field("failed").unwrap_or(0.0) > 0.0 || field("errored").unwrap_or(0.0) > 0.0 {
        return Err(format!("h2load saw failed requests:\n{text}"));
    }
    Ok(Sample {
        rate,
        requests: ok,
        ..Sample::default()
    })
}

/// Reads `iperf3 -J` output: received megabits per second.
pub fn parse_iperf(json: &str) -> Result<Sample, String> {
    let key = "\"sum_received\"";
    let at = json
        .find(key)
        .ok_or_else(|| format!("no sum_received in iperf3 output: {json}"))?;
    let rest = &json[at..];
    let bps = rest
        .find("\"bits_per_second\"")
        .map(|i| &rest[i + "\"bits_per_second\"".len()..])
        .and_then(|r| {
            r.trim_start_matches([':', ' ', '\t', '\n'])
                .split([',', '\n', '}'])
                .next()
        })
        .and_then(|v| v.trim().parse::<f64>().ok())
        .ok_or_else(|| format!("no bits_per_second in iperf3 output: {json}"))?;
    Ok(Sample {
        rate: bps / 1e6,
        ..Sample::default()
    })
}

/// User + system CPU ticks from the text of `/proc/<pid>/stat`.
pub fn stat_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) may hold spaces; fields after it are counted from ')'.
    let after = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = after.split_whitespace().collect();
    // After ')': state(3) ppid(4) … utime(14) stime(15) → indexes 11 and 12 here.
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// The parent PID from the text of `/proc/<pid>/stat`.
pub fn stat_ppid(stat: &str) -> Option<u32> {
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(1)?.parse().ok()
}

/// The median (upper median for even counts); `None` for no values.
pub fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(v[v.len() / 2])
}

/// Every sample of every (load, target), in the order measured.
#[derive(Debug, Default)]
pub struct Results {
    /// (load, target) → samples.
    pub samples: BTreeMap<(usize, usize), Vec<Sample>>,
    /// Load names, in report order.
    pub loads: Vec<String>,
    /// Target names, in report order.
    pub targets: Vec<String>,
}

/// The medians of one (load, target).
#[derive(Debug, Clone, Copy, Default)]
pub struct Summary {
    /// Median rate.
    pub rate: f64,
    /// Median p50.
    pub p50_us: Option<f64>,
    /// Median p99.
    pub p99_us: Option<f64>,
    /// Median CPU seconds per 10k requests.
    pub cpu_per_10k: Option<f64>,
}

impl Results {
    /// Index of a load (added if new).
    pub fn load(&mut self, name: &str) -> usize {
        index(&mut self.loads, name)
    }

    /// Index of a target (added if new).
    pub fn target(&mut self, name: &str) -> usize {
        index(&mut self.targets, name)
    }

    /// Records one run.
    pub fn add(&mut self, load: usize, target: usize, s: Sample) {
        self.samples.entry((load, target)).or_default().push(s);
    }

    /// The medians for a load and target given by name.
    pub fn summary(&self, load: &str, target: &str) -> Option<Summary> {
        let l = self.loads.iter().position(|x| x == load)?;
        let t = self.targets.iter().position(|x| x == target)?;
        let v = self.samples.get(&(l, t))?;
        Some(Summary {
            rate: median(v.iter().map(|s| s.rate).collect())?,
            p50_us: median(v.iter().filter_map(|s| s.p50_us).collect()),
            p99_us: median(v.iter().filter_map(|s| s.p99_us).collect()),
            cpu_per_10k: median(v.iter().filter_map(Sample::cpu_per_10k).collect()),
        })
    }

    /// One markdown table per load: medians, ratios to direct and to the named peer.
    pub fn markdown(
        &self,
        unit: impl Fn(&str) -> &'static str,
        peer: impl Fn(&str) -> &'static str,
    ) -> String {
        let mut out = String::new();
        for load in &self.loads {
            let u = unit(load);
            let p = peer(load);
            let direct = self.summary(load, "direct").map(|s| s.rate);
            let peer_rate = self.summary(load, p).map(|s| s.rate);
            let _ = writeln!(out, "\n### {load}\n");
            let _ = writeln!(
                out,
                "| target | {u} | × direct | × {p} | p50 | p99 | CPU s / 10k req |"
            );
            let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|");
            for target in &self.targets {
                let Some(s) = self.summary(load, target) else {
                    continue;
                };
                let ratio = |base: Option<f64>| {
                    base.filter(|b| *b > 0.0)
                        .map_or("–".to_string(), |b| format!("{:.2}", s.rate / b))
                };
                let us = |v: Option<f64>| v.map_or("–".to_string(), |v| format!("{v:.0} µs"));
                let cpu = s.cpu_per_10k.map_or("–".to_string(), |c| format!("{c:.3}"));
                let _ = writeln!(
                    out,
                    "| {target} | {:.0} | {} | {} | {} | {} | {cpu} |",
                    s.rate,
                    ratio(direct),
                    ratio(peer_rate),
                    us(s.p50_us),
                    us(s.p99_us),
                );
            }
        }
        out
    }

    /// Every sample as CSV.
    pub fn csv(&self) -> String {
        let mut out = String::from("load,target,round,rate,p50_us,p99_us,requests,cpu_s\n");
        let opt = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.3}"));
        for ((l, t), samples) in &self.samples {
            for (round, s) in samples.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "\"{}\",\"{}\",{round},{:.3},{},{},{},{}",
                    self.loads[*l],
                    self.targets[*t],
                    s.rate,
                    opt(s.p50_us),
                    opt(s.p99_us),
                    opt(s.requests),
                    opt(s.cpu_s)
                );
            }
        }
        out
    }
}

fn index(list: &mut Vec<String>, name: &str) -> usize {
    if let Some(i) = list.iter().position(|x| x == name) {
        return i;
    }
    list.push(name.to_string());
    list.len() - 1
}

#[cfg(test)]
mod tests {
    use super::*;

    const WRK: &str = "Running 1s test @ http://10.77.1.1:9999/
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   420.13us  100.50us   2.00ms   90.00%
    Req/Sec   100.00k     1.00k  110.00k    80.00%
  Latency Distribution
     50%  410.00us
     75%  450.00us
     90%  500.00us
     99%    1.20ms
  117837 requests in 1.00s, 17.00MB read
Requests/sec: 117837.12
Transfer/sec:     17.00MB
";

    const H2LOAD: &str = "finished in 1.00s, 51234.50 req/s, 2.10MB/s
requests: 51300 total, 51300 started, 51234 done, 51234 succeeded, 0 failed, 0 errored, 0 timeout
status codes: 51234 2xx, 0 3xx, 0 4xx, 0 5xx
";

    #[test]
    fn wrk_output_is_read() {
        let s = parse_wrk(WRK).expect("parse");
        assert_eq!(s.rate, 117837.12);
        assert_eq!(s.p50_us, Some(410.0));
        assert_eq!(s.p99_us, Some(1200.0));
        assert_eq!(s.requests, Some(117837.0));
        let failed = WRK.replace(
            "Requests/sec",
            "  Non-2xx or 3xx responses: 5\nRequests/sec",
        );
        assert!(parse_wrk(&failed).is_err());
        assert!(parse_wrk("nothing").is_err());
    }

    #[test]
    fn h2load_and_iperf_output_is_read() {
        let s = parse_h2load(H2LOAD).expect("parse");
        assert_eq!(s.rate, 51234.5);
        assert_eq!(s.requests, Some(51234.0));
        assert!(parse_h2load(&H2LOAD.replace("0 failed", "3 failed")).is_err());
        let json = r#"{"end": {"sum_sent": {"bits_per_second": 1.0}, "sum_received": {"seconds": 1, "bits_per_second": 9876543210.5, "retransmits": 0}}}"#;
        assert!((parse_iperf(json).expect("parse").rate - 9876.5432105).abs() < 1e-6);
        assert!(parse_iperf("{}").is_err());
    }

    #[test]
    fn proc_stat_cpu_and_parent() {
        let stat =
            "1234 (portcullis pro) S 77 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0";
        assert_eq!(stat_ticks(stat), Some(300));
        assert_eq!(stat_ppid(stat), Some(77));
        assert_eq!(stat_ticks("garbage"), None);
    }

    #[test]
    fn medians_ratios_and_csv() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![]), None);
        let mut r = Results::default();
        let l = r.load("keep-alive c=50");
        let (d, p, h) = (
            r.target("direct"),
            r.target("portcullis-l7"),
            r.target("haproxy-http"),
        );
        for (t, rate) in [
            (d, 100.0),
            (p, 60.0),
            (h, 40.0),
            (d, 120.0),
            (p, 66.0),
            (h, 44.0),
        ] {
            r.add(
                l,
                t,
                Sample {
                    rate,
                    requests: Some(rate),
                    cpu_s: Some(0.01),
                    ..Sample::default()
                },
            );
        }
        let s = r
            .summary("keep-alive c=50", "portcullis-l7")
            .expect("summary");
        assert_eq!(s.rate, 66.0);
        let md = r.markdown(|_| "req/s", |_| "haproxy-http");
        assert!(md.contains("| portcullis-l7 | 66 | 0.55 | 1.50 |"), "{md}");
        assert_eq!(r.csv().lines().count(), 7);
    }
}
