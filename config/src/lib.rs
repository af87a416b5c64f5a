//! The Portcullis policy language (`docs/policy.md`): parsing, validation and
//! compilation into an immutable [`CompiledPolicy`], and the pure decision functions.
//! No IO except [`load`], which reads the policy source.
//!
//! - [`model`]: the YAML shapes (serde, spans kept for error locations);
//! - [`load`]: files and directories → documents, errors as `file:line:col: message`;
//! - [`source`]: parsed documents with their files, and the located [`PolicyError`];
//! - [`compile`]: documents → [`CompiledPolicy`] (validation, NetworkPolicy import via [`netpol`]),
//!   reporting through [`diagnostics`];
//! - [`compiled`]: the compiled policy (per-direction rules and defaults), made of [`rule`]s;
//! - [`matchers`]: the compiled match primitives (CIDR, identity, host, path, header);
//! - [`decide`]: connection-level and request-level judgement, with an optional trace;
//! - [`index`]: per-direction candidate indexes (ports, CIDR trie, paths) behind `decide`;
//! - [`normalize`]: the request normalization the proxy forwards and the engine judges;
//! - [`workload`]: the workload's own labels and named ports (NetworkPolicy selection);
//! - [`selector`]: Kubernetes label selector semantics;
//! - [`cluster`]: what the control plane knows of other pods and namespaces, for selectors;
//! - [`snapshot`]: a `kubectl get -A -o yaml` snapshot → the cluster, its policies and its
//!   guardrails;
//! - [`guardrail`]: `PolicyGuardrail`s — what every policy of a namespace must (not) say — and
//!   the check of policy documents against them.
//!
//! Modules depend one way (no import cycles; `scripts/check-module-cycles.py`): inside the
//! crate, items are named by their defining module, never through the re-exports below.

pub mod cluster;
pub mod compile;
pub mod compiled;
pub mod decide;
pub mod diagnostics;
pub mod guardrail;
pub mod index;
pub mod load;
pub mod matchers;
pub mod model;
pub mod netpol;
pub mod normalize;
pub mod rule;
pub mod selector;
pub mod snapshot;
pub mod source;
pub mod workload;

pub use compiled::{CompileContext, CompiledPolicy};
pub use decide::{ConnDecision, Connection, Decision, Direction, Request, Verdict};
pub use diagnostics::Warning;
pub use load::{LoadError, LoadedPolicy, load_path, load_policy, parse_str};
pub use source::PolicyError;
