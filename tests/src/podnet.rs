//! Many pods on one bridge, as a node's pods are: a `node` namespace holding a bridge and the
//! real `portcullis-controller` (on a `dir` source this module writes), and one network
//! namespace per pod, each with its application (TCP 80 and 81), the real `portcullis-init`
//! (REDIRECT) and the real sidecar as UID 1337 following the controller. Pods probe each other
//! with `probe.py` from inside their namespaces, so both sidecars of every pair judge.
//!
//! With [`MeshOptions`], the controller is the mesh CA (its root the bed's own CA files) and
//! every sidecar enrols with it (`--identity-from-controller`): no certificate is prepared
//! for any pod. Pods then have a default route, so that Service addresses are dialled (and
//! captured) as in a cluster.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use crate::credentials::ApiCredentials;
use crate::netns::Netns;
use crate::process::Process;
use crate::tools;

static NEXT: AtomicU32 = AtomicU32::new(0);
const NODE_IP: &str = "10.0.0.1";

/// One pod of the bed.
#[derive(Debug)]
pub struct PodNs {
    /// Its Kubernetes namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Its address.
    pub ip: String,
    /// Its network namespace.
    pub netns: Netns,
}

/// The mesh: sidecars with identities from the controller's CA.
#[derive(Debug, Clone)]
pub struct MeshOptions {
    /// `--svid-ttl` of the controller.
    pub svid_ttl: String,
}

/// The bed. Everything it started stops (by PID) and every namespace goes when it is dropped.
#[derive(Debug)]
pub struct PodNet {
    /// The pods, namespace by namespace.
    pub pods: Vec<PodNs>,
    procs: Vec<Process>,
    controller: Option<Process>,
    /// The node's namespace (bridge and controller).
    pub node: Netns,
    dir: PathBuf,
    credentials: Option<ApiCredentials>,
    mesh: Option<MeshOptions>,
}

impl Drop for PodNet {
    fn drop(&mut self) {
        // Processes first (they live in the namespaces), then the directory.
        self.procs.clear();
        self.controller = None;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl PodNet {
    /// Brings up `namespaces × pods` pods with apps, capture rules, and the controller; each
    /// sidecar starts once `snapshot` (the cluster YAML, written first) is served.
    pub fn start(namespaces: &[&str], pods: &[&str], snapshot: &str) -> Result<Self> {
        Self::start_with(namespaces, pods, snapshot, None)
    }

    /// [`PodNet::start`], with a mesh when `mesh` is given.
    pub fn start_with(
        namespaces: &[&str],
        pods: &[&str],
        snapshot: &str,
        mesh: Option<MeshOptions>,
    ) -> Result<Self> {
        tools::check_prerequisites()?;
        let id = format!(
            "pn{}n{}",
            std::process::id() % 100_000,
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let dir = std::env::temp_dir().join(format!("portcullis-podnet-{id}"));
        std::fs::create_dir_all(dir.join("cluster"))?;
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
        let node = Netns::create(&format!("{id}-node"))?;
        node.ip(&["link", "add", "br0", "type", "bridge"])?;
        node.ip(&["addr", "add", &format!("{NODE_IP}/16"), "dev", "br0"])?;
        node.ip(&["link", "set", "br0", "up"])?;
        let mut bed = Self {
            pods: Vec::new(),
            procs: Vec::new(),
            controller: None,
            node,
            dir,
            credentials: None,
            mesh,
        };
        bed.write_snapshot(snapshot)?;
        for (i, ns) in namespaces.iter().enumerate() {
            for (j, pod) in pods.iter().enumerate() {
                let ip = format!("10.0.{}.{}", i + 1, j + 1);
                let netns = Netns::create(&format!("{id}-{ns}{pod}"))?;
                let veth = format!("v{i}{j}");
                bed.node.ip(&[
                    "link",
                    "add",
                    &veth,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    "eth0",
                    "netns",
                    netns.name(),
                ])?;
                bed.node
                    .ip(&["link", "set", &veth, "master", "br0", "up"])?;
                netns.ip(&["addr", "add", &format!("{ip}/16"), "dev", "eth0"])?;
                netns.ip(&["link", "set", "eth0", "up"])?;
                netns.ip(&["route", "add", "default", "via", NODE_IP])?;
                bed.pods.push(PodNs {
                    namespace: ns.to_string(),
                    name: pod.to_string(),
                    ip,
                    netns,
                });
            }
        }
        let pods: Vec<(String, String)> = bed
            .pods
            .iter()
            .map(|p| (p.namespace.clone(), p.name.clone()))
            .collect();
        bed.credentials = Some(ApiCredentials::make(
            &bed.dir.join("creds"),
            NODE_IP,
            &pods,
        )?);
        bed.start_controller()?;
        for i in 0..bed.pods.len() {
            bed.start_pod(i)?;
        }
        Ok(bed)
    }

    /// Writes the controller's source (atomically, as a ConfigMap update would).
    pub fn write_snapshot(&self, yaml: &str) -> Result<()> {
        let tmp = self.dir.join("cluster/.cluster.yaml.tmp");
        std::fs::write(&tmp, yaml)?;
        std::fs::rename(&tmp, self.dir.join("cluster/cluster.yaml"))?;
        Ok(())
    }

    fn credentials(&self) -> Result<&ApiCredentials> {
        self.credentials
            .as_ref()
            .context("credentials are made first")
    }

    /// The bed's directory (credentials, logs, the controller's source).
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// Stops the controller (by PID); the sidecars keep what they have.
    pub fn stop_controller(&mut self) {
        self.controller = None;
    }

    /// `GET path` on the controller's admin port, from the node.
    pub fn controller_admin(&self, path: &str) -> Result<String> {
        let out = self
            .node
            .command("curl")
            .args([
                "-s",
                "--max-time",
                "2",
                &format!("http://{NODE_IP}:15014{path}"),
            ])
            .output()?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Starts the controller (again).
    pub fn start_controller(&mut self) -> Result<()> {
        let bin = tools::binary("portcullis-controller")?;
        let mut cmd = self.node.command(bin.to_str().context("path")?);
        cmd.args([
            "--source",
            &format!("dir:{}", self.dir.join("cluster").display()),
        ])
        .args([
            "--api-addr",
            &format!("{NODE_IP}:15012"),
            "--admin-addr",
            &format!("{NODE_IP}:15014"),
        ])
        .args(["--source-poll", "200ms"])
        .args(self.credentials()?.controller_args());
        if let Some(mesh) = &self.mesh {
            let creds = self.dir.join("creds");
            cmd.arg("--ca-cert")
                .arg(creds.join("ca.crt"))
                .arg("--ca-key")
                .arg(creds.join("ca.key"))
                .args(["--svid-ttl", &mesh.svid_ttl]);
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("controller.log"))?;
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(log);
        self.controller = Some(Process::spawn("controller", &mut cmd)?);
        Ok(())
    }

    fn start_pod(&mut self, i: usize) -> Result<()> {
        let p = &self.pods[i];
        let app = tools::script("echo_server.py");
        let mut cmd = p.netns.command("python3");
        cmd.arg(app.to_str().context("path")?)
            .args(["--name", &format!("{}/{}", p.namespace, p.name)])
            .args(["--listen", "0.0.0.0:80", "--listen", "0.0.0.0:81"])
            .stdin(Stdio::null())
            .stderr(Stdio::null());
        let app = Process::spawn_until_ready(
            &format!("app {}", p.name),
            &mut cmd,
            Duration::from_secs(10),
        )?;
        self.procs.push(app);
        let init = tools::binary("portcullis-init")?;
        p.netns
            .exec(init.to_str().context("path")?, &["--mode", "redirect"])?;
        let copy = self.dir.join("portcullis-proxy");
        if !copy.exists() {
            std::fs::copy(tools::binary("portcullis-proxy")?, &copy)?;
        }
        let log = std::fs::File::create(
            self.dir
                .join(format!("proxy-{}-{}.log", p.namespace, p.name)),
        )?;
        let mut cmd = p.netns.command("setpriv");
        cmd.args(["--reuid=1337", "--regid=1337", "--clear-groups"])
            .arg(&copy)
            .arg("run")
            .args(self.credentials()?.proxy_args(
                &format!("https://{NODE_IP}:15012"),
                &p.namespace,
                &p.name,
            ));
        if self.mesh.is_some() {
            let identity = self.owned_by_proxy(&format!("identity-{}-{}", p.namespace, p.name))?;
            let access = self.access_log_path(i);
            std::fs::write(&access, "")?;
            std::os::unix::fs::chown(&access, Some(1337), Some(1337))?;
            cmd.args([
                "--identity-from-controller",
                "--trust-domain",
                "cluster.local",
            ])
            .arg("--identity-dir")
            .arg(identity)
            .arg("--access-log")
            .arg(access);
        } else {
            cmd.args(["--access-log", "off"]);
        }
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(log);
        let name = format!("proxy {}/{}", p.namespace, p.name);
        let mut proxy = Process::spawn(&name, &mut cmd)?;
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.admin(i, "/ready")? != "ready\n" {
            if proxy.has_exited() || Instant::now() > deadline {
                let log = self
                    .dir
                    .join(format!("proxy-{}-{}.log", p.namespace, p.name));
                let log = std::fs::read_to_string(log).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(10).collect();
                bail!(
                    "{name} did not become ready; its log ends:\n{}",
                    tail.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.procs.push(proxy);
        Ok(())
    }

    /// A fresh directory `name` in the bed that the proxy's UID owns.
    fn owned_by_proxy(&self, name: &str) -> Result<PathBuf> {
        let dir = self.dir.join(name);
        std::fs::create_dir_all(&dir)?;
        std::os::unix::fs::chown(&dir, Some(1337), Some(1337))?;
        Ok(dir)
    }

    /// Pod `i`'s access log (mesh beds).
    pub fn access_log_path(&self, i: usize) -> PathBuf {
        let p = &self.pods[i];
        self.dir
            .join(format!("access-{}-{}.log", p.namespace, p.name))
    }

    /// `GET path` on pod `i`'s admin port, from inside the pod.
    pub fn admin(&self, i: usize, path: &str) -> Result<String> {
        let out = self.pods[i]
            .netns
            .command("curl")
            .args([
                "-s",
                "--max-time",
                "2",
                &format!("http://127.0.0.1:15020{path}"),
            ])
            .output()?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Waits (bounded) until every sidecar enforces a view of at least `version`.
    pub fn wait_for_views(&self, version: u64) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        for i in 0..self.pods.len() {
            loop {
                let metrics = self.admin(i, "/metrics")?;
                let have = metrics
                    .lines()
                    .find_map(|l| l.strip_prefix("portcullis_controller_view_version "))
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .unwrap_or(0);
                if have >= version {
                    break;
                }
                if Instant::now() > deadline {
                    bail!(
                        "{}/{} holds view {have}, not {version}",
                        self.pods[i].namespace,
                        self.pods[i].name
                    );
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(())
    }

    /// Probes `targets` (`IP:PORT`) from pod `from`; whether each answered 200.
    pub fn probe(&self, from: usize, targets: &[String]) -> Result<Vec<bool>> {
        let script = tools::script("probe.py");
        let out = self.pods[from]
            .netns
            .command("python3")
            .arg(script.to_str().context("path")?)
            .args(targets)
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let got: std::collections::HashMap<&str, &str> =
            text.lines().filter_map(|l| l.split_once(' ')).collect();
        targets
            .iter()
            .map(|t| {
                got.get(t.as_str())
                    .map(|s| *s == "200")
                    .context("probe result")
            })
            .collect()
    }
}
