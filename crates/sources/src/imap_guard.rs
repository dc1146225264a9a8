//! A bound on what an IMAP server can make the robot hold in memory.
//!
//! The IMAP client library buffers each response whole before parsing it
//! (up to 512 MiB), and a literal announces its own size (`{N}`). A broken or
//! hostile server could announce or send far more than the mail it was asked
//! for. [`FrameGuard`] sits between the connection and the client and follows
//! IMAP's framing as bytes arrive — lines, and literals announced at a
//! line's end — refusing a literal over `max_literal`, a line over
//! `max_line`, or a response (lines and literals up to the line that ends
//! it) over their sum. The robot asks for at most `limit + 1` bytes of a
//! mail (`BODY.PEEK[]<0.limit+1>`), so an honest server never meets it.
//! It also refuses a response whose parenthesised lists nest deeper than
//! [`MAX_NESTING`]: imap-proto parses them recursively, and a few thousand
//! levels overflowed the stack, which aborts the whole process.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Lines carry UID SEARCH results: ~7 bytes a mail, so this allows a couple
/// of million mails in one folder.
pub const MAX_LINE: u64 = 16 << 20;

/// Parentheses a response may nest (outside quoted strings and literals).
/// A BODYSTRUCTURE nests two levels per MIME level; mails nest a few.
pub const MAX_NESTING: u32 = 256;

/// The server sent more than the guard allows (inside an `io::Error`).
#[derive(Debug)]
pub struct TooMuch(pub String);

impl std::fmt::Display for TooMuch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TooMuch {}

impl TooMuch {
    /// The guard's refusal, if that is what this I/O error is.
    pub fn find(e: &io::Error) -> Option<&TooMuch> {
        e.get_ref()?.downcast_ref::<TooMuch>()
    }
}

#[derive(Debug)]
enum State {
    /// Inside a line: its length so far and its last bytes (to spot `{N}`).
    Line { len: u64, tail: Vec<u8> },
    /// Inside a literal: bytes still to come.
    Literal { remaining: u64 },
}

#[derive(Debug)]
pub struct FrameGuard<T> {
    inner: T,
    state: State,
    /// Bytes of the response being received (reset when a line ends it).
    response: u64,
    /// Open parentheses of the response so far, and whether a quoted
    /// string (with a `\` escape pending) is open.
    depth: u32,
    quoted: bool,
    escaped: bool,
    max_literal: u64,
    max_line: u64,
}

impl<T> FrameGuard<T> {
    pub fn new(inner: T, max_literal: u64) -> Self {
        Self {
            inner,
            state: State::Line { len: 0, tail: Vec::new() },
            response: 0,
            depth: 0,
            quoted: false,
            escaped: false,
            max_literal,
            max_line: MAX_LINE,
        }
    }

    pub fn into_inner(self) -> T {
        self.inner
    }

    fn too_much(what: String) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, TooMuch(what))
    }

    /// Follows the framing over bytes just read.
    fn observe(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        let max_response = self.max_literal.saturating_add(self.max_line);
        while !bytes.is_empty() {
            match &mut self.state {
                State::Literal { remaining } => {
                    let take = (*remaining).min(bytes.len() as u64);
                    *remaining -= take;
                    self.response += take;
                    bytes = &bytes[take as usize..];
                    if *remaining == 0 {
                        self.state = State::Line { len: 0, tail: Vec::new() };
                    }
                }
                State::Line { len, tail } => {
                    let end = bytes.iter().position(|&b| b == b'\n');
                    let take = end.map_or(bytes.len(), |i| i + 1);
                    *len += take as u64;
                    self.response += take as u64;
                    tail.extend_from_slice(&bytes[..take]);
                    if tail.len() > 32 {
                        tail.drain(..tail.len() - 32);
                    }
                    for &b in &bytes[..take] {
                        if self.quoted {
                            match b {
                                _ if self.escaped => self.escaped = false,
                                b'\\' => self.escaped = true,
                                b'"' => self.quoted = false,
                                _ => {}
                            }
                        } else if b == b'"' {
                            self.quoted = true;
                        } else if b == b'(' {
                            self.depth += 1;
                            if self.depth > MAX_NESTING {
                                return Err(Self::too_much(format!(
                                    "the IMAP server sent a response nested deeper than {MAX_NESTING} levels"
                                )));
                            }
                        } else if b == b')' {
                            self.depth = self.depth.saturating_sub(1);
                        }
                    }
                    bytes = &bytes[take..];
                    if *len > self.max_line {
                        return Err(Self::too_much(format!(
                            "the IMAP server sent a line longer than {} bytes",
                            self.max_line
                        )));
                    }
                    if end.is_some() {
                        // A quoted string ends with its line.
                        (self.quoted, self.escaped) = (false, false);
                        match literal_announced(tail) {
                            Some(n) if n > self.max_literal => {
                                return Err(Self::too_much(format!(
                                    "the IMAP server announced {n} bytes where at most {} were asked for",
                                    self.max_literal
                                )));
                            }
                            Some(0) => self.state = State::Line { len: 0, tail: Vec::new() },
                            Some(n) => self.state = State::Literal { remaining: n },
                            None => {
                                // A line without a literal ends the response.
                                self.response = 0;
                                self.depth = 0;
                                self.state = State::Line { len: 0, tail: Vec::new() };
                            }
                        }
                    }
                }
            }
            if self.response > max_response {
                return Err(Self::too_much(format!(
                    "the IMAP server sent a response longer than {max_response} bytes"
                )));
            }
        }
        Ok(())
    }
}

/// `{N}` (or `{N+}`) right before the line's CRLF: a literal of N bytes follows.
fn literal_announced(line_end: &[u8]) -> Option<u64> {
    let line = line_end.strip_suffix(b"\n")?;
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let inner = line.strip_suffix(b"}")?;
    let open = inner.iter().rposition(|&b| b == b'{')?;
    let digits = &inner[open + 1..];
    let digits = digits.strip_suffix(b"+").unwrap_or(digits);
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

impl<T: AsyncRead + Unpin> AsyncRead for FrameGuard<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let new = &buf.filled()[before..];
                // Copied out: `observe` needs `this` mutably.
                let new = new.to_vec();
                let verdict = this.observe(&new);
                if verdict.is_err() {
                    // A read that fails has read nothing (callers such as
                    // tokio's read_to_end rely on it).
                    buf.set_filled(before);
                }
                Poll::Ready(verdict)
            }
            other => other,
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for FrameGuard<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(max_literal: u64) -> FrameGuard<()> {
        FrameGuard { max_line: 100, ..FrameGuard::new((), max_literal) }
    }

    #[test]
    fn refuses_deep_nesting_but_not_parentheses_in_strings_or_literals() {
        let deep = format!("* 1 FETCH (BODYSTRUCTURE {}\r\n", "(".repeat(300));
        let err = guard(10).observe(deep.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("nested deeper than 256"), "{err}");
        // Parentheses in quoted strings (escapes included) and literals do
        // not count, and each response starts from zero.
        let mut g = FrameGuard { max_line: 10_000, ..guard(1000) };
        let quoted = format!("* 1 FETCH (X \"{}\\\"{}\")\r\n", "(".repeat(300), "(".repeat(300));
        g.observe(quoted.as_bytes()).unwrap();
        let literal = format!("* 1 FETCH (BODY[] {{300}}\r\n{})\r\n", "(".repeat(300));
        g.observe(literal.as_bytes()).unwrap();
        for _ in 0..300 {
            g.observe(b"* OK (unbalanced\r\n").unwrap();
        }
        // Nesting continues across a literal within one response.
        let mut g = FrameGuard { max_line: 10_000, ..guard(1000) };
        let split = format!("* 1 FETCH {}X {{1}}\r\nx{}\r\n", "(".repeat(200), "(".repeat(100));
        assert!(g.observe(split.as_bytes()).is_err());
    }

    #[test]
    fn spots_literal_announcements() {
        assert_eq!(literal_announced(b"* 1 FETCH (BODY[] {42}\r\n"), Some(42));
        assert_eq!(literal_announced(b"a {7+}\r\n"), Some(7));
        assert_eq!(literal_announced(b"* OK {not}\r\n"), None);
        assert_eq!(literal_announced(b"* OK done\r\n"), None);
    }

    #[test]
    fn honest_responses_pass_in_any_chunking() {
        let stream = b"* 1 FETCH (UID 5 BODY[]<0> {10}\r\n0123456789)\r\n* 2 FETCH (UID 6 BODY[]<0> {3}\r\nabc)\r\nA1 OK done\r\n";
        for chunk in 1..stream.len() {
            let mut g = guard(10);
            for piece in stream.chunks(chunk) {
                g.observe(piece).unwrap();
            }
            assert!(matches!(g.state, State::Line { len: 0, .. }));
            assert_eq!(g.response, 0);
        }
    }

    #[test]
    fn refuses_a_big_literal_a_long_line_and_a_long_response() {
        let err = guard(10).observe(b"* 1 FETCH (BODY[] {300000000}\r\n").unwrap_err();
        assert!(err.to_string().contains("announced 300000000 bytes"), "{err}");
        let err = guard(10).observe(&[b'x'; 200]).unwrap_err();
        assert!(err.to_string().contains("line longer than 100"), "{err}");
        // Many small literals in one response add up.
        let mut g = guard(10);
        let err = (0..20).find_map(|_| g.observe(b"* 1 FETCH (X {10}\r\n0123456789 Y").err()).unwrap();
        assert!(err.to_string().contains("response longer than 110"), "{err}");
    }
}
