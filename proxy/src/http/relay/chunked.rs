//! Finds where a chunked message body (RFC 9112 7.1) ends without decoding it, so the relay can
//! forward the bytes as they are and know when the message is over. Strict: sizes are hex digits
//! only (at most 15), every line ends in CRLF, and the trailer section is bounded.

/// Trailer section bytes accepted at most.
pub(crate) const MAX_TRAILER_BYTES: usize = 16 * 1024;

/// The framing is broken; the connection cannot be trusted any further.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ChunkError {
    /// A chunk size that is not 1–15 hex digits.
    #[error("invalid chunk size")]
    Size,
    /// A line that does not end in CRLF, or a control character in an extension.
    #[error("invalid chunk line")]
    Line,
    /// Chunk data not followed by CRLF.
    #[error("chunk data not followed by CRLF")]
    DataEnd,
    /// Trailers longer than [`MAX_TRAILER_BYTES`].
    #[error("trailer section too large")]
    Trailers,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Size { value: u64, digits: u8 },
    Ext { value: u64 },
    SizeLf { value: u64 },
    Data { left: u64 },
    DataCr,
    DataLf,
    TrailerStart,
    Trailer,
    TrailerLf,
    FinalLf,
    Done,
}

/// Where a chunked body is, fed the bytes in order.
#[derive(Debug, Clone)]
pub(crate) struct Scanner {
    state: State,
    trailer_bytes: usize,
}

impl Default for Scanner {
    fn default() -> Self {
        Self::new()
    }
}

impl Scanner {
    /// At the start of a body.
    pub(crate) fn new() -> Self {
        Self {
            state: State::Size {
                value: 0,
                digits: 0,
            },
            trailer_bytes: 0,
        }
    }

    /// Whether the whole body has been seen.
    pub(crate) fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Feeds the next bytes; returns how many of them belong to the body (all of them unless
    /// the body ends inside `data`).
    pub(crate) fn feed(&mut self, data: &[u8]) -> Result<usize, ChunkError> {
        let mut i = 0;
        while i < data.len() && self.state != State::Done {
            if let State::Data { left } = self.state {
                let take = left.min((data.len() - i) as u64);
                i += take as usize;
                self.state = if take == left {
                    State::DataCr
                } else {
                    State::Data { left: left - take }
                };
                continue;
            }
            let b = data[i];
            i += 1;
            self.state = match self.state {
                State::Size { value, digits } => match b {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        if digits >= 15 {
                            return Err(ChunkError::Size);
                        }
                        let d = (b as char).to_digit(16).unwrap_or(0);
                        State::Size {
                            value: value * 16 + u64::from(d),
                            digits: digits + 1,
                        }
                    }
                    b';' | b' ' | b'\t' if digits > 0 => State::Ext { value },
                    b'\r' if digits > 0 => State::SizeLf { value },
                    _ => return Err(ChunkError::Size),
                },
                State::Ext { value } => match b {
                    b'\r' => State::SizeLf { value },
                    b'\t' => State::Ext { value },
                    0..=0x1f | 0x7f => return Err(ChunkError::Line),
                    _ => State::Ext { value },
                },
                State::SizeLf { value } => match b {
                    b'\n' if value == 0 => State::TrailerStart,
                    b'\n' => State::Data { left: value },
                    _ => return Err(ChunkError::Line),
                },
                State::Data { .. } => unreachable!("handled above"),
                State::DataCr => match b {
                    b'\r' => State::DataLf,
                    _ => return Err(ChunkError::DataEnd),
                },
                State::DataLf => match b {
                    b'\n' => State::Size {
                        value: 0,
                        digits: 0,
                    },
                    _ => return Err(ChunkError::DataEnd),
                },
                State::TrailerStart => match b {
                    b'\r' => State::FinalLf,
                    b'\n' => return Err(ChunkError::Line),
                    _ => self.trailer_byte()?,
                },
                State::Trailer => match b {
                    b'\r' => State::TrailerLf,
                    b'\n' => return Err(ChunkError::Line),
                    _ => self.trailer_byte()?,
                },
                State::TrailerLf | State::FinalLf if b != b'\n' => return Err(ChunkError::Line),
                State::TrailerLf => State::TrailerStart,
                State::FinalLf | State::Done => State::Done,
            };
        }
        Ok(i)
    }

    fn trailer_byte(&mut self) -> Result<State, ChunkError> {
        self.trailer_bytes += 1;
        if self.trailer_bytes > MAX_TRAILER_BYTES {
            return Err(ChunkError::Trailers);
        }
        Ok(State::Trailer)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    type End = Result<Option<usize>, ChunkError>;

    fn end_of(input: &[u8]) -> End {
        let mut s = Scanner::new();
        let n = s.feed(input)?;
        Ok(s.is_done().then_some(n))
    }

    #[test]
    fn table() {
        let cases: &[(&[u8], End)] = &[
            (b"0\r\n\r\n", Ok(Some(5))),
            (b"0\r\n\r\nGET / HTTP/1.1", Ok(Some(5))),
            (b"5\r\nhello\r\n0\r\n\r\n", Ok(Some(15))),
            (b"5;name=\"x\"\r\nhello\r\n0\r\n\r\n", Ok(Some(24))),
            (b"A\r\n0123456789\r\n0\r\nx-t: 1\r\n\r\n", Ok(Some(28))),
            (b"5\r\nhel", Ok(None)),
            (b"5\r\nhello\r\n", Ok(None)),
            (b"\r\n", Err(ChunkError::Size)),
            (b"-1\r\n", Err(ChunkError::Size)),
            (b"0x5\r\n", Err(ChunkError::Size)),
            (b"1000000000000000\r\n", Err(ChunkError::Size)),
            (b"5\nhello", Err(ChunkError::Size)),
            (b"5\r\nhelloXY0\r\n\r\n", Err(ChunkError::DataEnd)),
            (b"5;a\nb\r\n", Err(ChunkError::Line)),
            (b"0\r\n\n", Err(ChunkError::Line)),
            (b"0\r\nx: 1\n\r\n", Err(ChunkError::Line)),
        ];
        for (input, want) in cases {
            assert_eq!(&end_of(input), want, "{:?}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn trailers_are_bounded() {
        let mut body = b"0\r\nx: ".to_vec();
        body.extend(std::iter::repeat_n(b'a', MAX_TRAILER_BYTES));
        assert_eq!(end_of(&body), Err(ChunkError::Trailers));
    }

    fn encode(chunks: &[Vec<u8>], ext: bool, trailers: &[String]) -> Vec<u8> {
        let mut out = Vec::new();
        for c in chunks.iter().filter(|c| !c.is_empty()) {
            out.extend(format!("{:X}", c.len()).as_bytes());
            if ext {
                out.extend(b";e=1");
            }
            out.extend(b"\r\n");
            out.extend(c);
            out.extend(b"\r\n");
        }
        out.extend(b"0\r\n");
        for t in trailers {
            out.extend(format!("x-{t}: v\r\n").as_bytes());
        }
        out.extend(b"\r\n");
        out
    }

    proptest! {
        /// However the bytes are split, the end is found exactly and nothing after it is taken.
        #[test]
        fn finds_the_end_across_any_split(
            chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..6),
            ext in any::<bool>(),
            trailers in proptest::collection::vec("[a-z]{1,8}", 0..3),
            tail in proptest::collection::vec(any::<u8>(), 0..20),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..5),
        ) {
            let body = encode(&chunks, ext, &trailers);
            let mut input = body.clone();
            input.extend(&tail);
            let mut points: Vec<usize> = cuts.iter().map(|c| c.index(input.len() + 1)).collect();
            points.push(0);
            points.push(input.len());
            points.sort_unstable();
            let mut s = Scanner::new();
            let mut consumed = 0;
            for w in points.windows(2) {
                let piece = &input[w[0].max(consumed)..w[1].max(consumed)];
                consumed += s.feed(piece).expect("valid body");
                if s.is_done() {
                    break;
                }
            }
            prop_assert!(s.is_done());
            prop_assert_eq!(consumed, body.len());
        }

        /// Arbitrary bytes never panic, and a reported end is inside the input.
        #[test]
        fn arbitrary_input_is_safe(input in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut s = Scanner::new();
            if let Ok(n) = s.feed(&input) {
                prop_assert!(n <= input.len());
            }
        }
    }
}
