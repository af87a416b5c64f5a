//! The mesh CA as it runs: the root loaded from its files (or made at start), re-read when the
//! files change — cert-manager renewing a CA Certificate, or an operator replacing the Secret —
//! with the previous root kept in the bundle ([`super::roots`]). A change that does not load
//! (a key that does not match, a half-written file) keeps the last good root and is logged.
//! Each new bundle goes to every sidecar with its view.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use super::roots::Roots;
use super::{Authority, AuthorityError};
use crate::publish::Publisher;

/// Where the root comes from.
#[derive(Debug, Clone)]
struct Files {
    cert: PathBuf,
    key: PathBuf,
    bundle: Option<PathBuf>,
}

/// What the files held when last read.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Read {
    cert: String,
    key: String,
    extra: String,
}

fn read(files: &Files) -> Result<Read, AuthorityError> {
    let text = |p: &std::path::Path| {
        std::fs::read_to_string(p).map_err(|e| AuthorityError::new(format!("{}: {e}", p.display())))
    };
    Ok(Read {
        cert: text(&files.cert)?,
        key: text(&files.key)?,
        extra: match &files.bundle {
            Some(b) => text(b)?,
            None => String::new(),
        },
    })
}

#[derive(Debug)]
struct State {
    read: Read,
    roots: Roots,
    bundle: String,
}

/// The CA in force.
#[derive(Debug)]
pub struct LiveCa {
    trust_domain: String,
    ttl: Duration,
    files: Option<Files>,
    state: Mutex<Option<State>>,
    authority: RwLock<Arc<Authority>>,
}

impl LiveCa {
    /// A root made now, in memory only.
    pub fn generated(trust_domain: &str, ttl: Duration) -> Result<Self, AuthorityError> {
        let authority = Authority::generate(trust_domain, SystemTime::now())?;
        Ok(Self {
            trust_domain: trust_domain.to_string(),
            ttl,
            files: None,
            state: Mutex::new(None),
            authority: RwLock::new(Arc::new(authority)),
        })
    }

    /// The root in `cert`/`key` (also trusting `bundle`), loaded now: an error names the file.
    pub fn from_files(
        trust_domain: &str,
        ttl: Duration,
        (cert, key, bundle): (PathBuf, PathBuf, Option<PathBuf>),
    ) -> Result<Self, AuthorityError> {
        let files = Files { cert, key, bundle };
        let r = read(&files)?;
        let roots = Roots::new(&r.cert, &r.extra);
        let bundle = roots.bundle(SystemTime::now());
        let authority = Authority::from_pem(trust_domain, &r.cert, &r.key, &bundle)?;
        Ok(Self {
            trust_domain: trust_domain.to_string(),
            ttl,
            files: Some(files),
            state: Mutex::new(Some(State {
                read: r,
                roots,
                bundle,
            })),
            authority: RwLock::new(Arc::new(authority)),
        })
    }

    /// The authority signing now.
    pub fn current(&self) -> Arc<Authority> {
        self.authority
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Re-reads the files at `now`; the new bundle when it changed (a rotation, new extra
    /// roots, or a retired root whose time ran out).
    pub fn refresh(&self, now: SystemTime) -> Result<Option<String>, AuthorityError> {
        let Some(files) = &self.files else {
            return Ok(None);
        };
        let mut guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let Some(state) = guard.as_mut() else {
            return Ok(None);
        };
        let r = read(files)?;
        let mut roots = state.roots.clone();
        roots.rotate(&r.cert, now, self.ttl);
        roots.set_extra(&r.extra);
        let bundle = roots.bundle(now);
        if r == state.read && bundle == state.bundle {
            return Ok(None);
        }
        let authority = Authority::from_pem(&self.trust_domain, &r.cert, &r.key, &bundle)?;
        *self.authority.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(authority);
        *state = State {
            read: r,
            roots,
            bundle: bundle.clone(),
        };
        Ok(Some(bundle))
    }

    /// Tells `publisher` the bundle, then re-reads the files every `poll`, telling it each new
    /// one.
    pub async fn run(self: Arc<Self>, publisher: Arc<Publisher>, poll: Duration) {
        publisher.set_trust_bundle(self.current().bundle());
        if self.files.is_none() {
            return;
        }
        let mut tick = tokio::time::interval(poll);
        loop {
            tick.tick().await;
            match self.refresh(SystemTime::now()) {
                Ok(Some(bundle)) => {
                    let roots = super::roots::certificates(&bundle).len();
                    tracing::info!(roots, "mesh CA root or trust bundle changed");
                    publisher.set_trust_bundle(&bundle);
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::error!("mesh CA files do not load; keeping the last good root: {e}");
                }
            }
        }
    }
}
