//! The load harness in its smoke mode (`load --quick`), as CI runs it: every load against every
//! target produces a number, the report and the CSV are written, the targets are evaluated.
//! (Debug binaries: the numbers mean nothing here; the release run is in benches/README.md.)

use std::process::Command;

#[test]
fn quick_mode_measures_every_target_and_writes_the_report() {
    let out = std::env::temp_dir().join(format!("portcullis-load-{}", std::process::id()));
    let run = Command::new(env!("CARGO_BIN_EXE_load"))
        .args(["--quick", "--out"])
        .arg(&out)
        .output()
        .expect("run load");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "load --quick failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let report = std::fs::read_to_string(out.join("report.md")).expect("report.md");
    for target in [
        "direct",
        "portcullis-l4",
        "portcullis-l7",
        "haproxy-http",
        "haproxy-tcp",
        "nginx-proxy",
    ] {
        assert!(
            report.contains(&format!("| {target} | ")),
            "{target} missing:\n{report}"
        );
    }
    for section in [
        "keep-alive, c=50",
        "keep-alive, c=1",
        "Connection: close",
        "HTTP/2",
        "iperf3",
        "Memory",
        "Targets",
    ] {
        assert!(report.contains(section), "{section} missing:\n{report}");
    }
    let csv = std::fs::read_to_string(out.join("results.csv")).expect("results.csv");
    // 3 HTTP/1 loads × 6 targets + HTTP/2 × 4 + bulk TCP × 3, one round, plus the header.
    assert_eq!(csv.lines().count(), 1 + 18 + 4 + 3, "{csv}");
    for line in csv.lines().skip(1) {
        // Names are quoted (they hold commas); the numbers are the last five columns.
        let rate: f64 = line
            .rsplit(',')
            .nth(4)
            .and_then(|v| v.parse().ok())
            .expect("rate");
        assert!(rate > 0.0, "{line}");
    }
    let _ = std::fs::remove_dir_all(&out);
}
