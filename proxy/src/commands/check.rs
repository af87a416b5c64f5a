//! `portcullis-proxy check`: validates policy sources and summarizes each document. Output is
//! built as text (pure apart from reading the sources) so that it can be tested directly.

use portcullis_config::LoadError;

use crate::observe::Chain;
use crate::policy::{self, PolicyLoadError};
use crate::settings::cli::CheckArgs;

/// What `check` prints and how it exits.
#[derive(Debug, Default)]
pub struct Report {
    /// Summaries (stdout).
    pub out: String,
    /// Errors and warnings (stderr).
    pub err: String,
    /// 0 valid, 1 invalid.
    pub code: u8,
}

fn plural(n: usize, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

/// Checks every path; all of them are checked even after a failure.
pub fn run(args: &CheckArgs) -> Report {
    let mut r = Report::default();
    for path in &args.paths {
        match policy::load(path, &args.workload.workload()) {
            Ok(loaded) => {
                for d in &loaded.policy.documents {
                    let scope = if d.applies {
                        ""
                    } else {
                        " (does not select this workload)"
                    };
                    r.out.push_str(&format!(
                        "{}: {} {:?}: {}, {}{scope}\n",
                        d.file,
                        d.kind,
                        d.name,
                        plural(d.inbound_rules, "inbound rule"),
                        plural(d.outbound_rules, "outbound rule"),
                    ));
                }
                for w in &loaded.warnings {
                    r.err.push_str(&format!("{w}\n"));
                }
                r.out.push_str(&format!(
                    "{}: valid ({}, hash {})\n",
                    path.display(),
                    plural(loaded.policy.documents.len(), "document"),
                    loaded.hash
                ));
            }
            Err(PolicyLoadError::Policy(LoadError::Invalid(errors))) => {
                for e in &errors {
                    r.err.push_str(&format!("{e}\n"));
                }
                r.err.push_str(&format!(
                    "{}: invalid ({})\n",
                    path.display(),
                    plural(errors.len(), "error")
                ));
                r.code = 1;
            }
            Err(e) => {
                r.err.push_str(&format!("{}\n", Chain(&e)));
                r.code = 1;
            }
        }
    }
    r
}
