//! Where the binaries under test are, and whether this machine can run the testbed. Anything
//! missing is an error that says what to do: the tests never skip silently.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Result, bail};

/// The directory holding `portcullis-proxy` and `portcullis-init`: `$PORTCULLIS_BIN_DIR`, or the
/// cargo profile directory this test binary was built into.
pub fn bin_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("PORTCULLIS_BIN_DIR") {
        return Ok(PathBuf::from(dir));
    }
    let exe = std::env::current_exe()?;
    // target/<profile>/deps/<test> or target/<profile>/<bin>
    let mut dir = exe.parent().map(PathBuf::from).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    Ok(dir)
}

/// The path of one of the project's binaries, which must have been built.
pub fn binary(name: &str) -> Result<PathBuf> {
    let path = bin_dir()?.join(name);
    if !path.is_file() {
        bail!(
            "{} not found: build the workspace binaries first (cargo build --workspace --bins)",
            path.display()
        );
    }
    Ok(path)
}

/// The testbed's own scripts.
pub fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("testbed")
        .join(name)
}

/// Checks root and the external tools the testbed drives.
pub fn check_prerequisites() -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("the namespace testbed needs root (network namespaces, iptables, UID switching)");
    }
    let mut missing = Vec::new();
    for tool in [
        "ip",
        "iptables",
        "ip6tables",
        "curl",
        "setpriv",
        "python3",
        "sysctl",
    ] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            missing.push(tool);
        }
    }
    if !missing.is_empty() {
        bail!(
            "missing tools: {} (apt-get install iproute2 iptables curl util-linux procps python3 nginx-light socat openssl)",
            missing.join(", ")
        );
    }
    Ok(())
}
