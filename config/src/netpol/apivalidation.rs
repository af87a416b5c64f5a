//! The Kubernetes API server's name rules that a NetworkPolicy must pass (apimachinery's
//! `IsQualifiedName`, `IsValidLabelValue`, `IsValidPortName`, `IsDNS1123Subdomain`), with the
//! API server's own wording, so that `check` refuses what `kubectl apply` would refuse. Pure.

const NAME_CHARS: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";

fn alnum_edges(s: &str) -> bool {
    let ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    ok(s.chars().next()) && ok(s.chars().last())
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`.
fn is_name_part(s: &str) -> bool {
    alnum_edges(s)
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Why `s` is not a lowercase RFC 1123 subdomain (empty when it is one).
pub fn dns1123_subdomain(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 253 {
        errs.push("must be no more than 253 characters".to_string());
    }
    let label_ok = |l: &str| {
        let edge =
            |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        edge(l.chars().next())
            && edge(l.chars().last())
            && l.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    };
    if !s.split('.').all(label_ok) {
        errs.push("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character".to_string());
    }
    errs
}

/// Why `key` is not a valid label key (empty when it is one).
pub fn qualified_name(key: &str) -> Vec<String> {
    let mut errs = Vec::new();
    let name = match key.split('/').collect::<Vec<_>>()[..] {
        [name] => name,
        [prefix, name] => {
            if prefix.is_empty() {
                errs.push("prefix part must be non-empty".to_string());
            } else {
                errs.extend(
                    dns1123_subdomain(prefix)
                        .into_iter()
                        .map(|m| format!("prefix part {m}")),
                );
            }
            name
        }
        _ => {
            errs.push(format!("a qualified name {NAME_CHARS}, with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"));
            return errs;
        }
    };
    if name.is_empty() {
        errs.push("name part must be non-empty".to_string());
    } else if name.len() > 63 {
        errs.push("name part must be no more than 63 characters".to_string());
    }
    if !is_name_part(name) {
        errs.push(format!("name part {NAME_CHARS}"));
    }
    errs
}

/// Why `value` is not a valid label value (empty when it is one; the empty value is valid).
pub fn label_value(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > 63 {
        errs.push("must be no more than 63 characters".to_string());
    }
    if !value.is_empty() && !is_name_part(value) {
        errs.push(format!(
            "a valid label must be an empty string or {}",
            &NAME_CHARS[5..]
        ));
    }
    errs
}

/// Why `name` is not a valid port name (IANA_SVC_NAME; empty when it is one).
pub fn port_name(name: &str) -> Vec<&'static str> {
    let mut errs = Vec::new();
    if name.len() > 15 {
        errs.push("must be no more than 15 characters");
    }
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        errs.push("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)");
    }
    if !name.chars().any(|c| c.is_ascii_lowercase()) {
        errs.push("must contain at least one letter (a-z)");
    }
    if name.contains("--") {
        errs.push("must not contain consecutive hyphens");
    }
    if name.starts_with('-') || name.ends_with('-') {
        errs.push("must not begin or end with a hyphen");
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_keys() {
        for ok in [
            "app",
            "app.kubernetes.io/name",
            "kubernetes.io/metadata.name",
            "A_b-c.d",
            "x/y",
        ] {
            assert_eq!(qualified_name(ok), Vec::<String>::new(), "{ok}");
        }
        let cases: &[(&str, &str)] = &[
            ("", "name part must be non-empty"),
            ("-app", "name part must consist of"),
            ("app-", "name part must consist of"),
            ("a b", "name part must consist of"),
            ("/app", "prefix part must be non-empty"),
            (
                "Example.com/app",
                "prefix part a lowercase RFC 1123 subdomain",
            ),
            ("a/b/c", "a qualified name must consist of"),
            (
                &"x".repeat(64),
                "name part must be no more than 63 characters",
            ),
        ];
        for (key, want) in cases {
            let errs = qualified_name(key);
            assert!(
                errs.iter().any(|e| e.starts_with(want)),
                "{key:?}: {errs:?}"
            );
        }
    }

    #[test]
    fn label_values() {
        for ok in ["", "web", "v1.2_3-x", "9"] {
            assert!(label_value(ok).is_empty(), "{ok}");
        }
        for bad in ["-web", "web-", "a/b", "a b", &"v".repeat(64)] {
            assert!(!label_value(bad).is_empty(), "{bad}");
        }
        assert_eq!(
            label_value("a/b"),
            [
                "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"
            ]
        );
    }

    #[test]
    fn port_names() {
        for ok in ["http", "serve-80-udp", "h2c", "a1"] {
            assert!(port_name(ok).is_empty(), "{ok}");
        }
        let cases: &[(&str, &str)] = &[
            ("80", "must contain at least one letter (a-z)"),
            (
                "HTTP",
                "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)",
            ),
            ("a--b", "must not contain consecutive hyphens"),
            ("-http", "must not begin or end with a hyphen"),
            ("http_alt", "must contain only alpha-numeric"),
            ("abcdefghijklmnop", "must be no more than 15 characters"),
            ("", "must contain only alpha-numeric"),
        ];
        for (name, want) in cases {
            assert!(
                port_name(name).iter().any(|m| m.starts_with(want)),
                "{name:?}: {:?}",
                port_name(name)
            );
        }
    }
}
