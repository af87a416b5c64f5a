//! The Portcullis policy language (`../shared/spec/POLICY.md`): parsing, validation and
//! compilation into an immutable [`CompiledPolicy`], and the pure decision functions.
//! No IO except [`load`], which reads the policy source.
//!
//! - [`model`]: the YAML shapes (serde, spans kept for error locations);
//! - [`load`]: files and directories → documents, errors as `file:line:col: message`;
//! - [`compile`]: documents → [`CompiledPolicy`] (validation, NetworkPolicy import via [`netpol`]);
//! - [`matchers`]: the compiled match primitives (CIDR, identity, host, path, header);
//! - [`decide`]: connection-level and request-level judgement, with an optional trace;
//! - [`index`]: per-direction candidate indexes (ports, CIDR trie, paths) behind `decide`;
//! - [`normalize`]: the request normalization the proxy forwards and the engine judges;
//! - [`workload`]: the workload's own labels and named ports (NetworkPolicy selection).

pub mod compile;
pub mod decide;
pub mod index;
pub mod load;
pub mod matchers;
pub mod model;
pub mod netpol;
pub mod normalize;
pub mod workload;

pub use compile::{CompileContext, CompiledPolicy, Warning};
pub use decide::{ConnDecision, Connection, Decision, Direction, Request, Verdict};
pub use load::{LoadError, LoadedPolicy, PolicyError, load_path, load_policy, parse_str};
