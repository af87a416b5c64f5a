//! The docker-compose testbed, for real: `deploy/compose/run.sh` starts the Docker engine if
//! needed, builds the images offline from the local base, brings the application, the init
//! container, the sidecar, two clients and an upstream up — and a second application captured
//! with TPROXY by the same unprivileged image, following the controller — checks allowed and denied requests in both
//! directions, and tears everything down. This test runs it and checks what it says.

use std::path::PathBuf;
use std::process::Command;

#[test]
fn the_compose_testbed_runs_and_enforces() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new(root.join("deploy/compose/run.sh"))
        .env("PORTCULLIS_SKIP_BUILD", "1")
        .output()
        .expect("run deploy/compose/run.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "compose testbed failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let ok = stdout.lines().filter(|l| l.starts_with("ok ")).count();
    assert_eq!(ok, 13, "{stdout}");
    assert!(!stdout.contains("FAIL"), "{stdout}");
    // The sidecar logged the decisions, denials included.
    assert!(
        stdout.contains("\"rule\":\"allowed-client-reads\""),
        "{stdout}"
    );
    assert!(stdout.contains("\"verdict\":\"deny\""), "{stdout}");
    assert!(stdout.contains("all requests had the expected outcome"));
    // TPROXY capture started from the shipped image as UID 1337 (its file capability), and the
    // application saw the client's own address.
    assert!(
        stdout.contains("ok   tproxy: the app sees the client's own address"),
        "{stdout}"
    );
    // The controller's view (a NetworkPolicy written in labels) is enforced by that pod.
    assert!(
        stdout.contains("ok   controller: NetworkPolicy admits role=frontend (POST)"),
        "{stdout}"
    );
    // Automatic identity: both sidecars enrolled with the controller and spoke mutual TLS.
    assert!(
        stdout.contains("ok   mesh: the TPROXY pod logged the caller's certificate identity"),
        "{stdout}"
    );
}
