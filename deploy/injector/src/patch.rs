//! JSON Patch building blocks shared by the pod mutation and the probe rewrite: explicit `add`
//! operations on the raw JSON (never a diff of a typed round-trip, which would drop fields it
//! does not know), and the admin port the patch points probes at.

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, PatchOperation};
use serde_json::Value;

/// The admin port (health, metrics, rewritten probes).
pub const ADMIN_PORT: i32 = 15020;

/// An `add` operation at the path made of `tokens` (escaped as JSON Pointer needs).
pub(crate) fn add(tokens: &[&str], value: Value) -> PatchOperation {
    PatchOperation::Add(AddOperation {
        path: PointerBuf::from_tokens(tokens.iter().copied()),
        value,
    })
}
