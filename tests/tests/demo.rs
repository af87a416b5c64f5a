//! The README's demo command runs the `testbed demo` binary; this test runs the same binary and
//! checks what it shows, so the one-command demo cannot break unnoticed.

use std::process::Command;

#[test]
fn the_demo_runs_and_shows_enforcement() {
    let out = Command::new(env!("CARGO_BIN_EXE_testbed"))
        .arg("demo")
        .output()
        .expect("run testbed demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "demo failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    for expected in [
        // REDIRECT: the app sees the delivery address; TPROXY: the client itself.
        "\"client_ip\": \"127.0.0.6\"",
        "\"client_ip\": \"10.77.1.2\"",
        // A port the policy does not admit is closed; a killed proxy fails closed.
        "curl exit 52",
        "curl exit 7",
        // Access log lines, and the mTLS caller's identity in the server pod's log.
        "\"rule\":\"client-to-web\"",
        "\"identity\":\"spiffe://cluster.local/ns/a/sa/client\",\"policy\":\"mesh-demo\"",
        "\"identity\":\"spiffe://cluster.local/ns/b/sa/other\",\"protocol\":\"tcp\",\"reason\":\"no rule matched: default deny\"",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
}
