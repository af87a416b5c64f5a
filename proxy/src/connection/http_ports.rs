//! The destination ports that have carried HTTP, per direction: once a port is known to speak
//! HTTP, a client that connects and stays silent (an HTTP pool connecting early) is given the
//! HTTP header read timeout for its first byte rather than the detect timeout, which is for
//! server-first protocols. One bit per port and direction (16 KiB), lock-free.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::vocab::Direction;

const WORDS: usize = 65536 / 64;

/// Ports seen speaking HTTP.
#[derive(Debug)]
pub(crate) struct HttpPorts {
    bits: Box<[AtomicU64]>,
}

impl Default for HttpPorts {
    fn default() -> Self {
        Self {
            bits: (0..2 * WORDS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl HttpPorts {
    fn slot(direction: Direction, port: u16) -> (usize, u64) {
        let base = match direction {
            Direction::Inbound => 0,
            Direction::Outbound => WORDS,
        };
        (base + usize::from(port) / 64, 1u64 << (port % 64))
    }

    /// Records that `port` carried HTTP.
    pub(crate) fn learn(&self, direction: Direction, port: u16) {
        let (word, bit) = Self::slot(direction, port);
        if self.bits[word].load(Ordering::Relaxed) & bit == 0 {
            self.bits[word].fetch_or(bit, Ordering::Relaxed);
        }
    }

    /// Whether `port` has carried HTTP.
    pub(crate) fn knows(&self, direction: Direction, port: u16) -> bool {
        let (word, bit) = Self::slot(direction, port);
        self.bits[word].load(Ordering::Relaxed) & bit != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_learned_per_direction() {
        let ports = HttpPorts::default();
        for p in [0, 1, 63, 64, 8080, 65535] {
            assert!(!ports.knows(Direction::Inbound, p));
            ports.learn(Direction::Inbound, p);
            assert!(ports.knows(Direction::Inbound, p), "{p}");
            assert!(!ports.knows(Direction::Outbound, p), "{p}");
        }
        assert!(!ports.knows(Direction::Inbound, 8081));
    }
}
