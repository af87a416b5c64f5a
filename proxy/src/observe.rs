//! What the proxy shows of its work: [`metrics`] (Prometheus, bounded labels), the
//! [`access_log`] (one JSON line per decision, written off the hot path), and [`Chain`], the one
//! way an error reaches a log line — with its causes, each printed once.

pub(crate) mod access_log;
pub(crate) mod metrics;

use std::fmt;

/// Displays an error followed by its causes: `outer: inner: innermost`. Error texts never
/// repeat their source, so each cause appears once.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Chain<'a>(pub(crate) &'a (dyn std::error::Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(e) = cause {
            write!(f, ": {e}")?;
            cause = e.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn each_cause_once() {
        let e = Outer(std::io::Error::other("inner"));
        assert_eq!(Chain(&e).to_string(), "outer: inner");
    }
}
