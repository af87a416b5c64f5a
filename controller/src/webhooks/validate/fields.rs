//! Which field a line of an object rendered as pretty JSON holds
//! (`spec.ingress[0].from[0].ipBlock.cidr`). The config crate locates an error in an object by
//! line and column of that rendering; the field path is what a user finds in their own YAML.

use serde_json::Value;

/// The object as the config crate reads it from the API server (`Snapshot::add_object`):
/// pretty JSON without `status`. Kept in step with it; the tests catch a drift.
pub(super) fn rendered(v: &Value) -> String {
    let mut v = v.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("status");
    }
    serde_json::to_string_pretty(&v).unwrap_or_default()
}

/// The field path of every line of a pretty-printed JSON text.
#[derive(Debug, Default)]
pub(super) struct Fields {
    /// Index: line − 1; `None` for the root.
    lines: Vec<Option<String>>,
}

enum Frame {
    Object(String),
    Array(String, usize),
}

/// `"key": rest` → (key, rest).
fn split_key(line: &str) -> Option<(String, &str)> {
    let mut escaped = false;
    let end = line
        .char_indices()
        .skip(1)
        .find(|&(_, c)| {
            let close = c == '"' && !escaped;
            escaped = c == '\\' && !escaped;
            close
        })?
        .0;
    let key: String = serde_json::from_str(&line[..=end]).ok()?;
    Some((key, line[end + 1..].strip_prefix(": ")?))
}

fn join(parent: &str, key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    match (parent.is_empty(), plain) {
        (true, true) => key.to_string(),
        (false, true) => format!("{parent}.{key}"),
        (_, false) => format!("{parent}[{key:?}]"),
    }
}

impl Fields {
    /// Reads `text` as `serde_json::to_string_pretty` writes it: one member or element per
    /// line, a container opening at the end of its line and closing on a line of its own.
    pub(super) fn of(text: &str) -> Self {
        let mut stack: Vec<Frame> = Vec::new();
        let mut lines = Vec::new();
        for line in text.lines() {
            let t = line.trim();
            if t.starts_with('}') || t.starts_with(']') {
                let path = match stack.pop() {
                    Some(Frame::Object(p) | Frame::Array(p, _)) => p,
                    None => String::new(),
                };
                lines.push(Some(path).filter(|p| !p.is_empty()));
                continue;
            }
            let (path, rest) = match stack.last_mut() {
                Some(Frame::Object(parent)) => match split_key(t) {
                    Some((key, rest)) => (join(parent, &key), rest),
                    None => (parent.clone(), t),
                },
                Some(Frame::Array(parent, i)) => {
                    *i += 1;
                    (format!("{parent}[{}]", *i - 1), t)
                }
                None => (String::new(), t),
            };
            match rest.strip_suffix(',').unwrap_or(rest) {
                "{" => stack.push(Frame::Object(path.clone())),
                "[" => stack.push(Frame::Array(path.clone(), 0)),
                _ => {}
            }
            lines.push(Some(path).filter(|p| !p.is_empty()));
        }
        Self { lines }
    }

    /// The field at 1-based `line`, if any.
    pub(super) fn at(&self, line: u64) -> Option<&str> {
        let i = usize::try_from(line.checked_sub(1)?).ok()?;
        self.lines.get(i)?.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_line_names_its_field() {
        let v = json!({
            "metadata": {"name": "web", "labels": {"app.kubernetes.io/name": "x"}},
            "spec": {"ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/33"}}], "ports": [80, {"port": "h\"p"}]}], "podSelector": {}},
            "status": {"ignored": true},
        });
        let text = rendered(&v);
        let fields = Fields::of(&text);
        let line =
            |needle: &str| 1 + text.lines().position(|l| l.contains(needle)).expect("line") as u64;
        let cases = [
            ("\"name\": \"web\"", "metadata.name"),
            (
                "\"app.kubernetes.io/name\"",
                "metadata.labels[\"app.kubernetes.io/name\"]",
            ),
            ("\"cidr\"", "spec.ingress[0].from[0].ipBlock.cidr"),
            ("80", "spec.ingress[0].ports[0]"),
            ("\"port\"", "spec.ingress[0].ports[1].port"),
            ("\"podSelector\": {}", "spec.podSelector"),
        ];
        for (needle, want) in cases {
            assert_eq!(fields.at(line(needle)), Some(want), "{needle}\n{text}");
        }
        assert!(!text.contains("status"));
        assert_eq!(fields.at(1), None);
        assert_eq!(fields.at(0), None);
        assert_eq!(fields.at(10_000), None);
    }
}
