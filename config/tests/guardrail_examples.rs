//! The guardrails users copy: `deploy/kubernetes/guardrails/*.yaml` and every `PolicyGuardrail`
//! block of the README and docs/policy.md read whole, as the controller reads them.

use std::path::{Path, PathBuf};

use portcullis_config::snapshot::Snapshot;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The fenced YAML blocks of a Markdown file that hold a PolicyGuardrail.
fn guardrail_blocks(file: &str) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(root().join(file)).expect("read");
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        match (&mut current, line.trim_start()) {
            (None, "```yaml") => current = Some(String::new()),
            (Some(block), "```") => {
                if block.contains("kind: PolicyGuardrail") {
                    blocks.push((format!("{file}#{}", blocks.len()), block.clone()));
                }
                current = None;
            }
            (Some(block), _) => {
                block.push_str(line);
                block.push('\n');
            }
            _ => {}
        }
    }
    blocks
}

#[test]
fn every_example_guardrail_reads_whole() {
    let dir = root().join("deploy/kubernetes/guardrails");
    let mut files: Vec<(String, String)> = std::fs::read_dir(&dir)
        .expect("guardrails dir")
        .filter_map(|e| {
            let path = e.ok()?.path();
            let text = std::fs::read_to_string(&path).ok()?;
            Some((path.display().to_string(), text))
        })
        .collect();
    let shipped = files.len();
    assert!(shipped >= 1, "no example in {}", dir.display());
    files.extend(guardrail_blocks("README.md"));
    files.extend(guardrail_blocks("docs/policy.md"));
    assert!(
        files.len() >= shipped + 2,
        "the README and policy.md show one each"
    );
    for (name, text) in &files {
        let s = Snapshot::parse(&[(name.clone(), text.clone())]);
        assert!(s.errors.is_empty(), "{name}: {:?}", s.errors);
        assert!(!s.guardrails.is_empty(), "{name}: no guardrail read");
    }
}
