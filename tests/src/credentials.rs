//! The controller API's credentials for a testbed, made by the real `portcullis-proxy
//! dev-certs`: a CA, the controller's serving certificate for its address, and a throwaway
//! service-account issuer with a projected-style token per pod — so the testbeds run the API
//! as a cluster does (TLS, each sidecar proving its pod), not plaintext.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail};

use crate::tools;

/// The issuer the tokens name (what a cluster's service-account issuer usually is).
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// Where the credentials are.
#[derive(Debug, Clone)]
pub struct ApiCredentials {
    dir: PathBuf,
}

impl ApiCredentials {
    /// Makes them in `dir` for a controller at `server` (an IP or DNS name) and the pods
    /// `namespace/pod` (service account `default`).
    pub fn make(dir: &Path, server: &str, pods: &[(String, String)]) -> Result<Self> {
        let mut cmd = Command::new(tools::binary("portcullis-proxy")?);
        cmd.args(["dev-certs", "--out"]).arg(dir).args([
            "--server",
            server,
            "--token-issuer",
            ISSUER,
        ]);
        for (ns, pod) in pods {
            cmd.args(["--token-for", &format!("{ns}/{pod}=default")]);
        }
        let out = cmd.output().context("portcullis-proxy dev-certs")?;
        if !out.status.success() {
            bail!("dev-certs: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    fn path(&self, rel: &str) -> String {
        self.dir.join(rel).display().to_string()
    }

    /// The controller's flags: TLS, tokens verified against the issuer's keys.
    pub fn controller_args(&self) -> Vec<String> {
        vec![
            "--api-tls-cert".into(),
            self.path("server/tls.crt"),
            "--api-tls-key".into(),
            self.path("server/tls.key"),
            "--sa-jwks".into(),
            self.path("sa/jwks.json"),
            "--sa-issuer".into(),
            ISSUER.into(),
        ]
    }

    /// The sidecar flags of pod `namespace/pod` following the controller at `url`.
    pub fn proxy_args(&self, url: &str, namespace: &str, pod: &str) -> Vec<String> {
        vec![
            "--controller".into(),
            url.into(),
            "--controller-ca".into(),
            self.path("ca.crt"),
            "--controller-token".into(),
            self.path(&format!("sa/tokens/{namespace}/{pod}")),
            "--pod-name".into(),
            pod.into(),
            "--pod-namespace".into(),
            namespace.into(),
        ]
    }
}
