//! The subcommands besides `run`: [`check`] validates policy sources, [`explain`] shows how
//! the policy decides one connection or request, [`dev_certs`] makes throwaway identities and [`dev_tokens`] throwaway service-account tokens.
//! Each returns what it prints, so that it can be tested without a process. [`cluster`] reads
//! the `--cluster DIR` snapshot both take.

pub mod check;
pub(crate) mod cluster;
pub mod dev_certs;
pub mod dev_tokens;
pub mod explain;
