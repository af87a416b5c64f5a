//! Reading a policy source (a YAML file, or a directory of `*.yaml`/`*.yml` such as a mounted
//! ConfigMap) into parsed documents. Errors carry `file:line:column`; YAML bombs are stopped by
//! size, depth and alias budgets.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::compiled::{CompileContext, CompiledPolicy};
use crate::diagnostics::Warning;
use crate::model::Document;
pub use crate::source::{PolicyError, SourceDoc};

/// Largest policy file accepted.
pub const MAX_FILE_BYTES: usize = 4 * 1024 * 1024;
/// Deepest YAML nesting accepted.
pub const MAX_DEPTH: usize = 64;
/// Most aliases accepted per file.
pub const MAX_ALIASES: usize = 256;

/// Why a policy source could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The path could not be read.
    #[error("{path}")]
    Io {
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A directory without any policy file.
    #[error("{0}: no *.yaml or *.yml files")]
    Empty(PathBuf),
    /// The documents are invalid; every error found is listed.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<PolicyError>),
}

/// The raw text of a policy source, ready to parse.
#[derive(Debug, Clone)]
pub struct Source {
    /// (file name, contents), in a stable order.
    pub files: Vec<(String, String)>,
}

/// A hex SHA-256 prefix (8 bytes) of `(name, text)` pairs, each part closed by a NUL: the
/// identity of a set of documents.
pub fn named_texts_hash<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut h = Sha256::new();
    for (name, text) in pairs {
        h.update(name.as_bytes());
        h.update([0]);
        h.update(text.as_bytes());
        h.update([0]);
    }
    short_hex(&h.finalize())
}

/// The first 8 bytes of a digest, as hex.
pub fn short_hex(digest: &[u8]) -> String {
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

impl Source {
    /// A hex SHA-256 prefix over every file's name and contents: the policy's identity in
    /// `/policy`, metrics and reload logs.
    pub fn content_hash(&self) -> String {
        named_texts_hash(self.files.iter().map(|(n, t)| (n.as_str(), t.as_str())))
    }
}

fn is_policy_file(p: &Path) -> bool {
    let hidden = p
        .file_name()
        .and_then(|n| n.to_str())
        .is_none_or(|n| n.starts_with('.'));
    let yaml = matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"));
    !hidden && yaml && p.is_file()
}

fn read(path: &Path) -> Result<String, LoadError> {
    let io = |source| LoadError::Io {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if meta.len() > MAX_FILE_BYTES as u64 {
        return Err(LoadError::Invalid(vec![PolicyError {
            file: path.display().to_string().into(),
            line: 0,
            column: 0,
            message: format!("file is larger than {MAX_FILE_BYTES} bytes"),
        }]));
    }
    std::fs::read_to_string(path).map_err(io)
}

/// Reads a file, or every policy file of a directory (sorted by name; hidden entries such as a
/// ConfigMap's `..data` are skipped, the visible symlinks to them are followed).
pub fn read_source(path: &Path) -> Result<Source, LoadError> {
    let meta = std::fs::metadata(path).map_err(|source| LoadError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if !meta.is_dir() {
        return Ok(Source {
            files: vec![(path.display().to_string(), read(path)?)],
        });
    }
    let mut paths: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|source| LoadError::Io {
            path: path.to_path_buf(),
            source,
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| is_policy_file(p))
        .collect();
    paths.sort();
    if paths.is_empty() {
        return Err(LoadError::Empty(path.to_path_buf()));
    }
    let files = paths
        .iter()
        .map(|p| Ok((p.display().to_string(), read(p)?)))
        .collect::<Result<_, LoadError>>()?;
    Ok(Source { files })
}

pub(crate) fn options() -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_depth = MAX_DEPTH;
    budget.max_aliases = MAX_ALIASES;
    let mut opts = serde_saphyr::Options::default();
    opts.budget = Some(budget);
    opts.with_snippet = false;
    opts
}

/// Only the kind of a document, read first: a foreign object (an Istio AuthorizationPolicy, a
/// CiliumNetworkPolicy, a ConfigMap) is named as such instead of as a list of unknown fields.
#[derive(Debug, serde::Deserialize)]
struct KindOnly {
    kind: Option<crate::model::Spanned<String>>,
}

/// The document's kind, if this loader does not read it, as an error.
fn foreign_kind(file: &Arc<str>, text: &str) -> Option<PolicyError> {
    let docs = serde_saphyr::from_multiple_with_options::<KindOnly>(text, options()).ok()?;
    docs.into_iter().find_map(|d| {
        let kind = d.kind?;
        let hint = match kind.value.as_str() {
            "AccessPolicy" | "NetworkPolicy" => return None,
            "ConfigMap" => "; mount the ConfigMap and point --policy at the directory",
            "AuthorizationPolicy" | "CiliumNetworkPolicy" | "CiliumClusterwideNetworkPolicy" => {
                "; Portcullis reads its own AccessPolicy and Kubernetes NetworkPolicy"
            }
            _ => "",
        };
        Some(PolicyError {
            file: file.clone(),
            line: kind.referenced.line(),
            column: kind.referenced.column(),
            message: format!(
                "unsupported kind {:?} (expected AccessPolicy or NetworkPolicy{hint})",
                kind.value
            ),
        })
    })
}

/// The documents of a multi-document YAML text, each with the number of lines before it, split
/// at `---` and after `...` lines, so that each is parsed (and its first error reported) on its
/// own. A text with directives (`%YAML`) is not split.
pub fn split_documents(text: &str) -> Vec<(u64, &str)> {
    if text.lines().any(|l| l.starts_with('%')) {
        return vec![(0, text)];
    }
    let mut out = Vec::new();
    let (mut start, mut start_line, mut line, mut at) = (0usize, 0u64, 0u64, 0usize);
    for l in text.split_inclusive('\n') {
        let bare = l.trim_end_matches(['\n', '\r']);
        let opens = bare == "---" || bare.starts_with("--- ") || bare.starts_with("---\t");
        if opens && at > start {
            out.push((start_line, &text[start..at]));
            (start, start_line) = (at, line);
        }
        at += l.len();
        line += 1;
        if bare == "..." {
            out.push((start_line, &text[start..at]));
            (start, start_line) = (at, line);
        }
    }
    if at > start {
        out.push((start_line, &text[start..at]));
    }
    out
}

/// Parses one document's text (`offset` lines into the file).
pub(crate) fn parse_document(
    file: &Arc<str>,
    offset: u64,
    text: &str,
) -> Result<Option<SourceDoc>, PolicyError> {
    let located = |mut e: PolicyError| {
        e.line += offset;
        e
    };
    if let Some(e) = foreign_kind(file, text) {
        return Err(located(e));
    }
    match serde_saphyr::from_multiple_with_options::<Document>(text, options()) {
        Ok(docs) => Ok(docs.into_iter().next().map(|doc| SourceDoc {
            file: file.clone(),
            line_offset: offset,
            doc,
        })),
        Err(e) => {
            let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
            Err(located(PolicyError {
                file: file.clone(),
                line,
                column,
                message: clean_message(&e.to_string()),
            }))
        }
    }
}

/// Parses the documents of one file; every document is parsed, and the first error of each
/// is returned.
pub fn parse_str(file: &str, text: &str) -> Result<Vec<SourceDoc>, Vec<PolicyError>> {
    match parse_lenient(file, text) {
        (docs, errors) if errors.is_empty() => Ok(docs),
        (_, errors) => Err(errors),
    }
}

/// [`parse_str`], keeping the documents that parsed beside the errors of those that did not.
fn parse_lenient(file: &str, text: &str) -> (Vec<SourceDoc>, Vec<PolicyError>) {
    let file: Arc<str> = file.into();
    let at_start = |message: String, line| PolicyError {
        file: file.clone(),
        line,
        column: line,
        message,
    };
    if text.len() > MAX_FILE_BYTES {
        let message = format!("file is larger than {MAX_FILE_BYTES} bytes");
        return (Vec::new(), vec![at_start(message, 0)]);
    }
    let (mut docs, mut errors) = (Vec::new(), Vec::new());
    for (offset, chunk) in split_documents(text) {
        match parse_document(&file, offset, chunk) {
            Ok(Some(doc)) => docs.push(doc),
            Ok(None) => {}
            Err(e) => errors.push(e),
        }
    }
    // An empty file is a mistake (a truncated ConfigMap, the wrong path), never "no rules": it
    // is refused rather than read as a policy that enforces nothing.
    if docs.is_empty() && errors.is_empty() {
        errors.push(at_start("no policy document in this file".into(), 1));
    }
    (docs, errors)
}

/// serde-saphyr appends the location in words (we print it as `file:line:col:` instead) and
/// sometimes advice meant for programmers, which never reaches a user.
pub(crate) fn clean_message(msg: &str) -> String {
    let first = msg.lines().next().unwrap_or(msg).trim();
    let first = match first.rfind(" at line ") {
        Some(i) => &first[..i],
        None => first,
    };
    match first.split_once(", set DuplicateKeyPolicy") {
        Some((dup, _)) => dup.replace("duplicate mapping key: ", "duplicate key "),
        None => first.to_string(),
    }
}

/// Parses every file of a source: the documents that parse, and the errors of those that do
/// not (every file and every document is parsed).
pub fn parse_source(source: &Source) -> (Vec<SourceDoc>, Vec<PolicyError>) {
    let mut docs = Vec::new();
    let mut errors = Vec::new();
    for (name, text) in &source.files {
        let (file_docs, file_errors) = parse_lenient(name, text);
        docs.extend(file_docs);
        errors.extend(file_errors);
    }
    (docs, errors)
}

/// A compiled policy with what it was compiled from.
#[derive(Debug, Clone)]
pub struct LoadedPolicy {
    /// The compiled policy.
    pub policy: CompiledPolicy,
    /// Warnings (unenforceable selectors, unknown named ports).
    pub warnings: Vec<Warning>,
    /// Content hash of the source.
    pub hash: String,
}

/// Reads, parses and compiles a policy source; any error anywhere fails the whole load, and
/// every error found is reported: those of documents that do not parse and those of the
/// documents that do, in file order.
pub fn load_policy(path: &Path, ctx: &CompileContext) -> Result<LoadedPolicy, LoadError> {
    let source = read_source(path)?;
    let (docs, mut errors) = parse_source(&source);
    match crate::compile::compile(&docs, ctx) {
        Ok((policy, warnings)) if errors.is_empty() => Ok(LoadedPolicy {
            policy,
            warnings,
            hash: source.content_hash(),
        }),
        Ok(_) => Err(LoadError::Invalid(errors)),
        Err(more) => {
            errors.extend(more);
            errors.sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
            Err(LoadError::Invalid(errors))
        }
    }
}

/// Reads and parses a policy source.
pub fn load_path(path: &Path) -> Result<(Source, Vec<SourceDoc>), LoadError> {
    let source = read_source(path)?;
    match parse_source(&source) {
        (docs, errors) if errors.is_empty() => Ok((source, docs)),
        (_, errors) => Err(LoadError::Invalid(errors)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alias_bombs_and_deep_nesting_are_refused() {
        // Inside a field that is accepted and skipped, so only the budget can stop it.
        let mut bomb = String::from(
            "apiVersion: portcullis.dev/v1alpha1\nkind: AccessPolicy\nmetadata:\n  name: x\n  generateName:\n    a: &a [x, x, x, x, x, x, x, x, x, x]\n",
        );
        for i in 0..40 {
            let prev = if i == 0 {
                "a".to_string()
            } else {
                format!("l{}", i - 1)
            };
            bomb.push_str(&format!("    l{i}: &l{i} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"));
        }
        let err = parse_str("bomb.yaml", &bomb)
            .expect_err("alias bomb refused")
            .remove(0);
        assert!(
            err.message.to_lowercase().contains("budget") || err.message.contains("alias"),
            "{err}"
        );

        let deep = format!(
            "apiVersion: v\nkind: k\nmetadata:\n  name: x\n  generateName: {}x{}\n",
            "[".repeat(MAX_DEPTH + 10),
            "]".repeat(MAX_DEPTH + 10)
        );
        let err = parse_str("deep.yaml", &deep)
            .expect_err("too deep")
            .remove(0);
        assert!(
            err.message.to_lowercase().contains("depth") || err.message.contains("budget"),
            "{err}"
        );
    }

    #[test]
    fn errors_name_file_line_and_column() {
        let err = parse_str(
            "p.yaml",
            "apiVersion: v\nkind: AccessPolicy\nmetadata: {name: x}\nspec: {bogus: 1}\n",
        )
        .expect_err("unknown field")
        .remove(0);
        assert_eq!((err.line, err.column), (4, 8), "{err}");
        assert!(
            err.to_string()
                .starts_with("p.yaml:4:8: unknown field `bogus`"),
            "{err}"
        );
    }

    #[test]
    fn documents_are_split_at_their_markers_with_their_line_offsets() {
        let cases: &[(&str, &[(u64, &str)])] = &[
            ("a: 1\n", &[(0, "a: 1\n")]),
            ("a: 1\n---\nb: 2\n", &[(0, "a: 1\n"), (1, "---\nb: 2\n")]),
            (
                "---\na: 1\n--- \nb: 2",
                &[(0, "---\na: 1\n"), (2, "--- \nb: 2")],
            ),
            ("a: 1\n...\nb: 2\n", &[(0, "a: 1\n...\n"), (2, "b: 2\n")]),
            ("a: |\n  ---x\n----\n", &[(0, "a: |\n  ---x\n----\n")]),
            (
                "%YAML 1.2\n---\na: 1\n---\nb: 2\n",
                &[(0, "%YAML 1.2\n---\na: 1\n---\nb: 2\n")],
            ),
            (
                "a: 1\r\n---\r\nb: 2\r\n",
                &[(0, "a: 1\r\n"), (1, "---\r\nb: 2\r\n")],
            ),
        ];
        for (text, want) in cases {
            assert_eq!(split_documents(text), *want, "{text:?}");
        }
    }

    #[test]
    fn every_document_reports_its_first_error_at_its_own_line() {
        let text = "apiVersion: portcullis.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {name: a}\nspec: {bogus: 1}\n---\napiVersion: portcullis.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {name: b}\nspec:\n  inbound: {default: maybe}\n---\nkind: CiliumNetworkPolicy\n";
        let errors: Vec<String> = parse_str("m.yaml", text)
            .expect_err("three broken documents")
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(errors.len(), 3, "{errors:#?}");
        assert!(
            errors[0].starts_with("m.yaml:4:8: unknown field `bogus`"),
            "{errors:#?}"
        );
        assert!(
            errors[1].starts_with("m.yaml:10:22: unknown variant `maybe`"),
            "{errors:#?}"
        );
        assert!(
            errors[2].starts_with("m.yaml:12:7: unsupported kind \"CiliumNetworkPolicy\""),
            "{errors:#?}"
        );
    }
}
