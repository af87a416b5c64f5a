//! The thin shell around the pure planners: finds the iptables flavour, reads what is installed,
//! and applies one `iptables-restore --noflush` per family and table, then the `ip` commands.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::config::{Backend, InitConfig, Ipv6Mode};
use crate::plan::{self, TablePlan};
use crate::routing::{self, IpCommand, RoutingState};
use crate::rules::{self, Family};
use crate::state::SavedState;

/// Why the rules could not be installed or removed.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// Neither root nor CAP_NET_ADMIN.
    #[error("not permitted: needs root or CAP_NET_ADMIN in the pod's network namespace")]
    NotPermitted,
    /// No usable iptables binary.
    #[error("iptables not found: none of {0} is on PATH (install the iptables package)")]
    Missing(String),
    /// `--ipv6 on` but the kernel or ip6tables cannot do it.
    #[error("--ipv6 on, but {0}")]
    Ipv6Unavailable(String),
    /// A tool could not be started.
    #[error("could not run {tool}: {source}")]
    Spawn {
        /// The program.
        tool: String,
        /// Why.
        source: std::io::Error,
    },
    /// A tool ran and failed.
    #[error("{tool} failed ({status}): {stderr}")]
    Failed {
        /// The command line.
        tool: String,
        /// Its exit status.
        status: String,
        /// What it said.
        stderr: String,
    },
}

/// What to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Bring the rules to what the configuration asks.
    Install,
    /// Remove everything of ours.
    Cleanup,
}

/// The iptables binaries of one flavour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flavour {
    /// `""`, `"-nft"` or `"-legacy"`.
    suffix: &'static str,
}

impl Flavour {
    fn tool(&self, family: Family, what: &str) -> String {
        format!("{}{}-{what}", family.tool(), self.suffix)
    }
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

fn has_rules(tool: &str) -> bool {
    Command::new(tool)
        .stderr(Stdio::null())
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.starts_with("-A "))
        })
        .unwrap_or(false)
}

/// Resolves `--backend`: `auto` takes the flavour that already holds rules, else nft, else legacy,
/// else the distribution's plain `iptables-restore`.
pub fn resolve_backend(choice: Backend) -> Result<Flavour, ApplyError> {
    let nft = Flavour { suffix: "-nft" };
    let legacy = Flavour { suffix: "-legacy" };
    let usable = |f: &Flavour| find_on_path(&f.tool(Family::V4, "restore")).is_some();
    let candidates = match choice {
        Backend::Nft => vec![nft],
        Backend::Legacy => vec![legacy],
        Backend::Auto => {
            let legacy_in_use = usable(&legacy) && has_rules(&legacy.tool(Family::V4, "save"));
            let nft_in_use = usable(&nft) && has_rules(&nft.tool(Family::V4, "save"));
            if legacy_in_use && !nft_in_use {
                vec![legacy]
            } else {
                vec![nft, legacy, Flavour { suffix: "" }]
            }
        }
    };
    let names: Vec<String> = candidates
        .iter()
        .map(|f| f.tool(Family::V4, "restore"))
        .collect();
    candidates
        .into_iter()
        .find(usable)
        .ok_or_else(|| ApplyError::Missing(names.join(", ")))
}

fn run(program: &str, args: &[String], stdin: Option<&str>) -> Result<String, ApplyError> {
    let tool = std::iter::once(program.to_string())
        .chain(args.iter().cloned())
        .collect::<Vec<_>>()
        .join(" ");
    let spawn = |source| ApplyError::Spawn {
        tool: tool.clone(),
        source,
    };
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn)?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes()).map_err(spawn)?;
    }
    let out = child.wait_with_output().map_err(spawn)?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr)
            .trim()
            .replace('\n', "; ");
        if stderr.contains("Permission denied") || stderr.contains("Operation not permitted") {
            return Err(ApplyError::NotPermitted);
        }
        return Err(ApplyError::Failed {
            tool,
            status: out.status.to_string(),
            stderr,
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether this process holds CAP_NET_ADMIN (bit 12 of CapEff).
fn has_net_admin() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        })
        .is_some_and(|caps| caps & (1 << 12) != 0)
}

fn families(mode: Ipv6Mode, flavour: &Flavour) -> Result<Vec<Family>, ApplyError> {
    // IPv6 can be compiled in yet disabled in this network namespace (Docker does so on
    // networks without IPv6): then `::6` cannot be added to lo, and there is no IPv6 to capture.
    let disabled_here = std::fs::read_to_string("/proc/sys/net/ipv6/conf/lo/disable_ipv6")
        .is_ok_and(|v| v.trim() == "1");
    let kernel_v6 = Path::new("/proc/net/if_inet6").exists() && !disabled_here;
    let tool_v6 = find_on_path(&flavour.tool(Family::V6, "restore")).is_some();
    match mode {
        Ipv6Mode::Off => Ok(vec![Family::V4]),
        Ipv6Mode::Auto if kernel_v6 && tool_v6 => Ok(Family::ALL.to_vec()),
        Ipv6Mode::Auto => Ok(vec![Family::V4]),
        Ipv6Mode::On if !kernel_v6 => Err(ApplyError::Ipv6Unavailable(
            "IPv6 is disabled in this network namespace".into(),
        )),
        Ipv6Mode::On if !tool_v6 => Err(ApplyError::Ipv6Unavailable(format!(
            "{} is not installed",
            flavour.tool(Family::V6, "restore")
        ))),
        Ipv6Mode::On => Ok(Family::ALL.to_vec()),
    }
}

/// One family's complete plan.
#[derive(Debug)]
struct FamilyPlan {
    family: Family,
    tables: Vec<TablePlan>,
    ip: Vec<IpCommand>,
}

fn plan_family(
    cfg: &InitConfig,
    action: Action,
    family: Family,
    flavour: &Flavour,
    tolerant: bool,
) -> Result<FamilyPlan, ApplyError> {
    let saved = match run(&flavour.tool(family, "save"), &[], None) {
        Ok(text) => SavedState::parse(&text),
        Err(_) if tolerant => SavedState::empty(),
        Err(e) => return Err(e),
    };
    let flag = if family == Family::V4 { "-4" } else { "-6" };
    let routing_state = match run("ip", &[flag.into(), "rule".into(), "show".into()], None) {
        Ok(text) => RoutingState::parse(&text),
        Err(_) if tolerant => RoutingState::default(),
        Err(e) => return Err(e),
    };
    let (want, ip) = match action {
        Action::Install => (
            rules::desired(cfg, family),
            routing::install(cfg, family, routing_state),
        ),
        Action::Cleanup => (rules::nothing(), routing::cleanup(family, routing_state)),
    };
    Ok(FamilyPlan {
        family,
        tables: plan::plan(&want, &saved),
        ip,
    })
}

/// Installs or removes the rules; with `dry_run`, returns what would be applied and changes
/// nothing (reading the current state where it can, assuming a clean namespace where it cannot).
pub fn execute(
    cfg: &InitConfig,
    action: Action,
    backend: Backend,
    ipv6: Ipv6Mode,
    dry_run: bool,
) -> Result<String, ApplyError> {
    if !dry_run && !has_net_admin() {
        return Err(ApplyError::NotPermitted);
    }
    let flavour = match resolve_backend(backend) {
        Ok(f) => f,
        Err(_) if dry_run => Flavour { suffix: "" },
        Err(e) => return Err(e),
    };
    let plans = families(ipv6, &flavour)?
        .into_iter()
        .map(|family| plan_family(cfg, action, family, &flavour, dry_run))
        .collect::<Result<Vec<_>, _>>()?;
    let mut report = String::new();
    for p in &plans {
        report.push_str(&plan::render(p.family, &p.tables, &p.ip));
        if dry_run {
            continue;
        }
        let restore = flavour.tool(p.family, "restore");
        for t in &p.tables {
            run(&restore, &["--noflush".to_string()], Some(&t.script))?;
        }
        for cmd in &p.ip {
            match run("ip", &cmd.args, None) {
                Err(e) if cmd.must_succeed => return Err(e),
                _ => {}
            }
        }
    }
    Ok(report)
}
