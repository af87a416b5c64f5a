//! The testbed topology and its helpers.
//!
//! ```text
//!  client ns                 pod ns                                 upstream ns
//!  eth0 10.77.1.2  ─veth─  eth0 10.77.1.1 (the pod IP)
//!       fd77:1::2               fd77:1::1
//!                          eth1 10.77.2.1  ─────────────veth─────  eth0 10.77.2.2
//!                               fd77:2::1                               fd77:2::2
//! ```
//! The pod runs the application (HTTP echo on :8080 dual-stack, :8081 on the pod IP only, :9090),
//! `portcullis-init`, and the proxy as UID/GID 1337. The upstream runs an echo on :80 and :81.
//! Namespace names are unique per testbed, so tests run in parallel; everything is removed on drop.

use std::fs::File;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use crate::netns::Netns;
use crate::process::Process;
use crate::tools;

/// Client address (v4).
pub const CLIENT_V4: &str = "10.77.1.2";
/// Pod address seen by the client (v4): the pod IP.
pub const POD_V4: &str = "10.77.1.1";
/// Pod address on the upstream link (v4).
pub const POD_UPLINK_V4: &str = "10.77.2.1";
/// Upstream address (v4).
pub const UPSTREAM_V4: &str = "10.77.2.2";
/// Client address (v6).
pub const CLIENT_V6: &str = "fd77:1::2";
/// Pod IP (v6).
pub const POD_V6: &str = "fd77:1::1";
/// Pod address on the upstream link (v6).
pub const POD_UPLINK_V6: &str = "fd77:2::1";
/// Upstream address (v6).
pub const UPSTREAM_V6: &str = "fd77:2::2";
/// The proxy's UID and GID.
pub const PROXY_ID: u32 = 1337;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Inbound capture mode for both `portcullis-init` and the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capture {
    /// nat REDIRECT.
    Redirect,
    /// TPROXY, client source kept.
    Tproxy,
}

impl Capture {
    fn flag(self) -> &'static str {
        match self {
            Capture::Redirect => "redirect",
            Capture::Tproxy => "tproxy",
        }
    }
}

/// How to bring the testbed up.
#[derive(Debug, Clone)]
pub struct TestbedOptions {
    /// Inbound capture mode.
    pub capture: Capture,
    /// Extra `portcullis-init` flags; `None` skips running it.
    pub init_args: Option<Vec<String>>,
    /// Whether to start the proxy.
    pub proxy: bool,
    /// `--drain-timeout` for the proxy.
    pub drain_timeout: String,
    /// Extra flags for `portcullis-proxy run`.
    pub proxy_args: Vec<String>,
    /// The policy the proxy enforces (YAML).
    pub policy: String,
    /// Mount the policy the way a Kubernetes ConfigMap volume does (a directory whose files
    /// point through a `..data` symlink that updates swap atomically).
    pub configmap: bool,
}

/// A policy that mentions no direction: everything passes (Kubernetes' default).
pub const OPEN_POLICY: &str = "apiVersion: portcullis.dev/v1alpha1
kind: AccessPolicy
metadata: {name: open}
spec: {}
";

impl Default for TestbedOptions {
    fn default() -> Self {
        Self {
            capture: Capture::Redirect,
            init_args: Some(Vec::new()),
            proxy: true,
            drain_timeout: "10s".into(),
            proxy_args: Vec::new(),
            policy: OPEN_POLICY.to_string(),
            configmap: false,
        }
    }
}

/// What a curl run returned.
#[derive(Debug)]
pub struct Curl {
    /// curl's exit code (0 = success, 7 = refused, 28 = timeout, 52 = empty reply, 56 = reset).
    pub exit: i32,
    /// The response body.
    pub body: String,
    /// curl's error text.
    pub stderr: String,
}

impl Curl {
    /// The body as JSON, or an error naming what curl said.
    pub fn json(&self) -> Result<Value> {
        if self.exit != 0 {
            bail!(
                "curl failed with exit {}: {}",
                self.exit,
                self.stderr.trim()
            );
        }
        serde_json::from_str(&self.body).with_context(|| format!("not JSON: {:?}", self.body))
    }
}

/// One of the testbed's hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Host {
    /// The client namespace.
    Client,
    /// The pod namespace.
    Pod,
    /// The upstream namespace.
    Upstream,
}

/// A running testbed. Field order is drop order: processes first, then namespaces, then files.
#[derive(Debug)]
pub struct Testbed {
    proxy: Option<Process>,
    client_proxy: Option<Process>,
    extra: Vec<Process>,
    // Held so that the applications are stopped (by PID) when the testbed is dropped.
    _apps: Vec<Process>,
    /// The client namespace.
    pub client: Netns,
    /// The pod namespace.
    pub pod: Netns,
    /// The upstream namespace.
    pub upstream: Netns,
    capture: Capture,
    drain_timeout: String,
    proxy_args: Vec<String>,
    configmap: bool,
    versions: u32,
    dir: TempDir,
}

#[derive(Debug)]
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn link(a: &Netns, a_if: &str, b: &Netns, b_if: &str) -> Result<()> {
    a.ip(&[
        "link",
        "add",
        a_if,
        "type",
        "veth",
        "peer",
        "name",
        b_if,
        "netns",
        b.name(),
    ])?;
    a.ip(&["link", "set", a_if, "up"])?;
    b.ip(&["link", "set", b_if, "up"])?;
    Ok(())
}

fn addr(ns: &Netns, dev: &str, v4: &str, v6: &str) -> Result<()> {
    ns.ip(&["addr", "add", &format!("{v4}/24"), "dev", dev])?;
    ns.ip(&[
        "-6",
        "addr",
        "add",
        &format!("{v6}/64"),
        "dev",
        dev,
        "nodad",
    ])?;
    Ok(())
}

impl Testbed {
    /// Creates the namespaces and links, starts the applications, and (per `opts`) runs
    /// `portcullis-init` and starts the proxy.
    pub fn start(opts: TestbedOptions) -> Result<Self> {
        tools::check_prerequisites()?;
        let id = format!(
            "pc{}n{}",
            std::process::id() % 100_000,
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let dir = TempDir(std::env::temp_dir().join(format!("portcullis-testbed-{id}")));
        std::fs::create_dir_all(&dir.0)?;
        // The proxy runs as UID 1337 and may need to reach a copy of its binary in here.
        std::fs::set_permissions(&dir.0, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
        let client = Netns::create(&format!("{id}-client"))?;
        let pod = Netns::create(&format!("{id}-pod"))?;
        let upstream = Netns::create(&format!("{id}-upstream"))?;
        link(&client, "eth0", &pod, "eth0")?;
        link(&pod, "eth1", &upstream, "eth0")?;
        addr(&client, "eth0", CLIENT_V4, CLIENT_V6)?;
        addr(&pod, "eth0", POD_V4, POD_V6)?;
        addr(&pod, "eth1", POD_UPLINK_V4, POD_UPLINK_V6)?;
        addr(&upstream, "eth0", UPSTREAM_V4, UPSTREAM_V6)?;

        let script = tools::script("echo_server.py");
        let script = script.to_str().context("script path")?;
        let wait = Duration::from_secs(10);
        let pod_app = Process::spawn_until_ready(
            "pod app",
            pod.command("python3").args([
                script,
                "--name",
                "pod",
                "--listen",
                "[::]:8080",
                "--listen",
                &format!("{POD_V4}:8081"),
                "--listen",
                "[::]:9090",
                "--log",
                dir.0.join("pod-app.log").to_str().context("path")?,
            ]),
            wait,
        )?;
        let upstream_app = Process::spawn_until_ready(
            "upstream app",
            upstream.command("python3").args([
                script, "--name", "upstream", "--listen", "[::]:80", "--listen", "[::]:81",
            ]),
            wait,
        )?;
        let mut tb = Self {
            proxy: None,
            client_proxy: None,
            extra: Vec::new(),
            _apps: vec![pod_app, upstream_app],
            client,
            pod,
            upstream,
            capture: opts.capture,
            drain_timeout: opts.drain_timeout,
            proxy_args: opts.proxy_args,
            configmap: opts.configmap,
            versions: 0,
            dir,
        };
        tb.write_policy(&opts.policy)?;
        if let Some(extra) = &opts.init_args {
            let mut args = vec!["--mode".to_string(), opts.capture.flag().to_string()];
            args.extend(extra.iter().cloned());
            tb.init(&args.iter().map(String::as_str).collect::<Vec<_>>())?;
        }
        if opts.proxy {
            tb.start_proxy()?;
        }
        Ok(tb)
    }

    /// Runs `portcullis-init args…` in the pod namespace; returns its stdout.
    pub fn init(&self, args: &[&str]) -> Result<String> {
        let bin = tools::binary("portcullis-init")?;
        self.pod.exec(bin.to_str().context("path")?, args)
    }

    /// Runs `portcullis-init args…` in the pod namespace and returns the raw output.
    pub fn init_output(&self, args: &[&str]) -> Result<Output> {
        let bin = tools::binary("portcullis-init")?;
        Ok(self
            .pod
            .command(bin.to_str().context("path")?)
            .args(args)
            .output()?)
    }

    /// Where the proxy reads its policy: a file, or a ConfigMap-like directory.
    pub fn policy_path(&self) -> PathBuf {
        if self.configmap {
            self.dir.0.join("policy")
        } else {
            self.dir.0.join("policy.yaml")
        }
    }

    /// Replaces the policy source. A plain file is rewritten; a ConfigMap-like directory gets a
    /// new version directory and its `..data` symlink is swapped atomically, as the kubelet does.
    pub fn write_policy(&mut self, yaml: &str) -> Result<()> {
        if !self.configmap {
            std::fs::write(self.dir.0.join("policy.yaml"), yaml)?;
            return Ok(());
        }
        let root = self.dir.0.join("policy");
        std::fs::create_dir_all(&root)?;
        self.versions += 1;
        let version = format!("..v{}", self.versions);
        std::fs::create_dir_all(root.join(&version))?;
        std::fs::write(root.join(&version).join("policy.yaml"), yaml)?;
        let tmp = root.join("..data_tmp");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&version, &tmp)?;
        std::fs::rename(&tmp, root.join("..data"))?;
        let visible = root.join("policy.yaml");
        if std::fs::symlink_metadata(&visible).is_err() {
            std::os::unix::fs::symlink("..data/policy.yaml", &visible)?;
        }
        Ok(())
    }

    /// The access log file.
    pub fn access_log_path(&self) -> PathBuf {
        self.dir.0.join("access.log")
    }

    /// Every request line the pod's application received (`METHOD TARGET` per line).
    pub fn app_received(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.0.join("pod-app.log"))
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect()
    }

    /// The proxy's diagnostics.
    pub fn proxy_stderr(&self) -> String {
        std::fs::read_to_string(self.dir.0.join("proxy.stderr")).unwrap_or_default()
    }

    /// The proxy binary, as a path UID 1337 can execute: the build output itself, or (when a
    /// parent directory is closed to other users, as in some CI checkouts) a copy in the
    /// testbed's own directory, removed with it.
    fn proxy_binary(&self) -> Result<PathBuf> {
        let bin = tools::binary("portcullis-proxy")?;
        let usable = Command::new("setpriv")
            .args([
                &format!("--reuid={PROXY_ID}"),
                &format!("--regid={PROXY_ID}"),
                "--clear-groups",
            ])
            .arg("test")
            .arg("-x")
            .arg(&bin)
            .status()
            .is_ok_and(|s| s.success());
        if usable {
            return Ok(bin);
        }
        let copy = self.dir.0.join("portcullis-proxy");
        if !copy.exists() {
            std::fs::copy(&bin, &copy).context("copying the proxy binary for UID 1337")?;
        }
        Ok(copy)
    }

    /// Starts the proxy as UID/GID 1337 in the pod and waits (bounded) for `/ready`.
    pub fn start_proxy(&mut self) -> Result<()> {
        let mut args = vec![
            "--capture".to_string(),
            self.capture.flag().to_string(),
            "--drain-timeout".to_string(),
            self.drain_timeout.clone(),
            "--policy".to_string(),
            self.policy_path().to_str().context("path")?.to_string(),
        ];
        args.extend(self.proxy_args.iter().cloned());
        let p = self.launch_proxy(Host::Pod, "proxy", &args)?;
        self.proxy = Some(p);
        Ok(())
    }

    /// Makes the client a second pod with its own sidecar: runs `portcullis-init` in the client
    /// namespace and a proxy (UID/GID 1337, redirect mode) with `policy` and `args`; its access
    /// log is [`Testbed::client_access_log`]. Replaces a client sidecar already running.
    pub fn start_client_sidecar(&mut self, policy: &str, args: &[&str]) -> Result<()> {
        if let Some(mut old) = self.client_proxy.take() {
            old.signal(nix::sys::signal::Signal::SIGKILL)?;
            old.wait_timeout(Duration::from_secs(5))?;
        } else {
            let bin = tools::binary("portcullis-init")?;
            self.client.exec(bin.to_str().context("path")?, &[])?;
        }
        let policy_path = self.dir.0.join("client-policy.yaml");
        std::fs::write(&policy_path, policy)?;
        let mut all = vec![
            "--policy".to_string(),
            policy_path.to_str().context("path")?.to_string(),
        ];
        all.extend(args.iter().map(|a| a.to_string()));
        let p = self.launch_proxy(Host::Client, "client-proxy", &all)?;
        self.client_proxy = Some(p);
        Ok(())
    }

    /// The client sidecar's access log, parsed.
    pub fn client_access_log(&self) -> Result<Vec<Value>> {
        let text = std::fs::read_to_string(self.dir.0.join("client-proxy.log")).unwrap_or_default();
        text.lines()
            .map(|l| serde_json::from_str(l).with_context(|| format!("bad log line {l:?}")))
            .collect()
    }

    /// Starts `portcullis-proxy run args…` as UID/GID 1337 in `host` (access log
    /// `<name>.log`, diagnostics `<name>.stderr`) and waits (bounded) for `/ready`.
    fn launch_proxy(&self, host: Host, name: &str, args: &[String]) -> Result<Process> {
        let bin = self.proxy_binary()?;
        let log_path = if host == Host::Pod {
            self.access_log_path()
        } else {
            self.dir.0.join(format!("{name}.log"))
        };
        let log = File::options().create(true).append(true).open(log_path)?;
        let stderr_path = self.dir.0.join(format!("{name}.stderr"));
        let stderr = File::options()
            .create(true)
            .append(true)
            .open(&stderr_path)?;
        let ns = self.ns(host);
        let mut cmd = ns.command("setpriv");
        cmd.args([
            &format!("--reuid={PROXY_ID}"),
            &format!("--regid={PROXY_ID}"),
            "--clear-groups",
        ]);
        if host == Host::Pod && self.capture == Capture::Tproxy {
            // IP_TRANSPARENT listeners and source-preserving upstream sockets need CAP_NET_ADMIN.
            cmd.args(["--inh-caps=+net_admin", "--ambient-caps=+net_admin"]);
        }
        cmd.arg(bin)
            .arg("run")
            .args(["--access-log", "-"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr);
        let mut p = Process::spawn(name, &mut cmd)?;
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let ready = self.curl(ns, "http://127.0.0.1:15020/ready");
            if ready.exit == 0 && ready.body == "ready\n" {
                return Ok(p);
            }
            if p.has_exited() || Instant::now() > deadline {
                bail!(
                    "{name} did not become ready; stderr:\n{}",
                    std::fs::read_to_string(&stderr_path).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Extra flags for the pod proxy's next start (for material made after the testbed is up).
    pub fn set_proxy_args(&mut self, args: &[&str]) {
        self.proxy_args = args.iter().map(|a| a.to_string()).collect();
    }

    /// Workload certificates from the real `portcullis-proxy dev-certs` in `<dir>/<name>/`
    /// (a CA already there is reused, so running it again re-issues: a rotation). Returns the
    /// directory; each workload `ns/sa` is in `<ns>-<sa>/`.
    pub fn dev_certs(&self, name: &str, validity: &str, workloads: &[&str]) -> Result<PathBuf> {
        let out = self.dir.0.join(name);
        let bin = tools::binary("portcullis-proxy")?;
        let o = Command::new(bin)
            .arg("dev-certs")
            .arg("--out")
            .arg(&out)
            .args(["--validity", validity])
            .args(workloads)
            .output()?;
        if !o.status.success() {
            bail!("dev-certs failed: {}", String::from_utf8_lossy(&o.stderr));
        }
        Ok(out)
    }

    /// The running proxy.
    pub fn proxy(&mut self) -> Result<&mut Process> {
        self.proxy.as_mut().context("the proxy is not running")
    }

    /// Stops the proxy (SIGKILL: a crash, not a drain).
    pub fn kill_proxy(&mut self) -> Result<()> {
        let p = self.proxy()?;
        p.signal(nix::sys::signal::Signal::SIGKILL)?;
        p.wait_timeout(Duration::from_secs(5))?;
        Ok(())
    }

    /// `curl URL` inside `ns` (5 s limit, globbing off for IPv6 literals).
    pub fn curl(&self, ns: &Netns, url: &str) -> Curl {
        self.curl_args(ns, &[url])
    }

    /// `curl args…` inside `ns`.
    pub fn curl_args(&self, ns: &Netns, args: &[&str]) -> Curl {
        let out = ns
            .command("curl")
            .args(["-sS", "-g", "--max-time", "5"])
            .args(args)
            .output();
        match out {
            Ok(o) => Curl {
                exit: o.status.code().unwrap_or(-1),
                body: String::from_utf8_lossy(&o.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
            },
            Err(e) => Curl {
                exit: -1,
                body: String::new(),
                stderr: e.to_string(),
            },
        }
    }

    /// Every access log line so far, parsed.
    pub fn access_log(&self) -> Result<Vec<Value>> {
        let text = std::fs::read_to_string(self.access_log_path()).unwrap_or_default();
        text.lines()
            .map(|l| serde_json::from_str(l).with_context(|| format!("bad log line {l:?}")))
            .collect()
    }

    /// Waits (bounded) until the access log has at least `n` lines, and returns them.
    pub fn wait_access_log(&self, n: usize) -> Result<Vec<Value>> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let lines = self.access_log()?;
            if lines.len() >= n {
                return Ok(lines);
            }
            if Instant::now() > deadline {
                bail!(
                    "expected {n} access log lines, have {}: {lines:#?}",
                    lines.len()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `iptables-save` (or `ip6tables-save`) in the pod, without comments, counters, and tables
    /// that hold nothing (iptables-nft leaves a table it once touched with only its built-in,
    /// accept-all chains: the same as no table).
    pub fn rules(&self, v6: bool) -> Result<String> {
        let tool = if v6 {
            "ip6tables-save"
        } else {
            "iptables-save"
        };
        let text = self.pod.exec(tool, &[])?;
        let mut out = Vec::new();
        let mut table: Vec<&str> = Vec::new();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let line = if line.starts_with(':') {
                line.split(" [").next().unwrap_or(line)
            } else {
                line
            };
            table.push(line);
            if line == "COMMIT" {
                let empty = table.iter().all(|l| {
                    l.starts_with('*')
                        || *l == "COMMIT"
                        || (l.starts_with(':') && l.ends_with(" ACCEPT"))
                });
                if !empty {
                    out.append(&mut table);
                }
                table.clear();
            }
        }
        Ok(out.join("\n"))
    }

    /// The namespace of `host`.
    pub fn ns(&self, host: Host) -> &Netns {
        match host {
            Host::Client => &self.client,
            Host::Pod => &self.pod,
            Host::Upstream => &self.upstream,
        }
    }

    /// The testbed's own directory (removed with it).
    pub fn dir(&self) -> &std::path::Path {
        &self.dir.0
    }

    /// Starts `program args…` in `host`; it is stopped (by PID) with the testbed.
    pub fn spawn(&mut self, host: Host, name: &str, program: &str, args: &[&str]) -> Result<()> {
        let mut cmd = self.ns(host).command(program);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let p = Process::spawn(name, &mut cmd)?;
        self.extra.push(p);
        Ok(())
    }

    /// Stops (by PID) the process started by [`Testbed::spawn`] as `name`.
    pub fn stop_spawned(&mut self, name: &str) -> Result<()> {
        let i = self
            .extra
            .iter()
            .position(|p| p.name() == name)
            .with_context(|| format!("no process {name}"))?;
        let mut p = self.extra.remove(i);
        p.stop();
        Ok(())
    }

    /// Starts `program args…` in `host` and waits (bounded) until it prints `ready`; it is
    /// stopped (by PID) with the testbed.
    pub fn spawn_ready(
        &mut self,
        host: Host,
        name: &str,
        program: &str,
        args: &[&str],
    ) -> Result<()> {
        let mut cmd = self.ns(host).command(program);
        cmd.args(args).stdin(Stdio::null()).stderr(Stdio::null());
        let p = Process::spawn_until_ready(name, &mut cmd, Duration::from_secs(15))?;
        self.extra.push(p);
        Ok(())
    }

    /// Starts nginx in `host` with `servers` (the inside of an `http {}` block) and waits
    /// (bounded) until `probe_port` accepts connections.
    pub fn nginx(&mut self, host: Host, name: &str, servers: &str, probe_port: u16) -> Result<()> {
        let d = self.dir.0.join(name);
        std::fs::create_dir_all(&d)?;
        let dd = d.display();
        let conf = format!(
            "worker_processes 1; pid {dd}/nginx.pid; error_log {dd}/error.log;\n\
             events {{ worker_connections 1024; }}\n\
             http {{ access_log off; client_body_temp_path {dd}; proxy_temp_path {dd};\n\
             fastcgi_temp_path {dd}; uwsgi_temp_path {dd}; scgi_temp_path {dd};\n{servers}\n}}\n"
        );
        let path = d.join("nginx.conf");
        std::fs::write(&path, conf)?;
        let path = path.to_str().context("path")?.to_string();
        self.spawn(host, name, "nginx", &["-c", &path, "-g", "daemon off;"])?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let up = self
                .ns(host)
                .command("bash")
                .args(["-c", &format!("exec 3<>/dev/tcp/127.0.0.1/{probe_port}")])
                .output()
                .is_ok_and(|o| o.status.success());
            if up {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{name} did not start: {}",
                    std::fs::read_to_string(d.join("error.log")).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A command in the pod namespace (for callers that need more than curl).
    pub fn pod_command(&self, program: &str) -> Command {
        self.pod.command(program)
    }
}
