//! A parsed policy source: its documents with the file each came from, and the located error
//! every stage reports (`file:line:col: message`).

use std::fmt;
use std::sync::Arc;

use crate::model::Document;

/// One problem in a policy source, at a place in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    /// The file, as given.
    pub file: Arc<str>,
    /// 1-based line (0 when unknown).
    pub line: u64,
    /// 1-based column (0 when unknown).
    pub column: u64,
    /// What is wrong and what was expected.
    pub message: String,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.message
        )
    }
}

/// A parsed document and where it came from.
#[derive(Debug)]
pub struct SourceDoc {
    /// File name as given.
    pub file: Arc<str>,
    /// Lines of the file before this document (its locations are relative to its own start).
    pub line_offset: u64,
    /// The document.
    pub doc: Document,
}
