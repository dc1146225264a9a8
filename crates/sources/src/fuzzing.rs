//! Entry points for the fuzz targets (`crates/fuzz`), not an API: each
//! feeds untrusted bytes to a reader the way the robot uses it. The IMAP,
//! POP3 and SMTP ones run a whole session against a scripted server whose
//! answers come from memory, in reads of varying size, so every split of
//! a line or literal across reads is tried.
//!
//! Targets stop where the session would (at the first error); they panic
//! only where the code under test panics or breaks an invariant the
//! pipeline relies on (a mail over the limit, one not asked for).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

use crate::credentials::Credentials;
use crate::tls::Transport;
use crate::{BearerTokens, SettleAction, SourceError};

/// A server whose answers are a fixed script: reads serve it in chunks
/// whose sizes follow `chunking` (0: as much as the reader asks for), then
/// end of stream; writes are taken and dropped.
#[derive(Debug)]
pub struct Scripted {
    script: Vec<u8>,
    at: usize,
    rng: u64,
}

impl Scripted {
    pub fn new(script: &[u8], chunking: u64) -> Self {
        Self { script: script.to_vec(), at: 0, rng: chunking }
    }

    fn next_chunk(&mut self) -> usize {
        if self.rng == 0 {
            return usize::MAX;
        }
        // xorshift64: cheap, and the same script splits the same way each run.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let r = self.rng;
        if r.is_multiple_of(4) { 1 + (r >> 8) as usize % 8 } else { 1 + (r >> 8) as usize % 4096 }
    }
}

impl AsyncRead for Scripted {
    fn poll_read(self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let n = this.next_chunk().min(this.script.len() - this.at).min(buf.remaining());
        buf.put_slice(&this.script[this.at..this.at + n]);
        this.at += n;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Scripted {
    fn poll_write(self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Runs a session future on this thread's runtime (one per thread, kept:
/// building one per input would cost more than most inputs).
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    thread_local! {
        static RUNTIME: tokio::runtime::Runtime =
            tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime");
    }
    RUNTIME.with(|rt| rt.block_on(future))
}

fn transport(script: &[u8], chunking: u64) -> Transport {
    Transport::Scripted(Scripted::new(script, chunking))
}

// A session's `options` byte picks its set-up: bits 0–1 the size limit
// (64 bytes, 4 KiB, 1 MiB, 1 MiB; small so that small inputs reach it),
// bit 2 XOAUTH2 instead of a password, bits 3–4 the IMAP settle action
// (move, mark read, delete, move) or the SMTP login (password, XOAUTH2,
// none, password). Seeds pick theirs with their first byte.

fn limit(options: u8) -> u64 {
    [64, 4096, 1 << 20, 1 << 20][usize::from(options & 3)]
}

fn credentials(options: u8) -> Credentials {
    if options & 4 == 0 {
        Credentials::Password { username: "robot@fuzz.invalid".into(), password: "secret".into() }
    } else {
        Credentials::XOAuth2 { username: "robot@fuzz.invalid".into(), access_token: "token".into(), app_id: None }
    }
}

/// A POP3 session (greeting, CAPA, login, UIDL, LIST, RETR, DELE, QUIT)
/// against `script`; says how far it got (`quit` at the end).
pub fn pop3_session(script: &[u8], options: u8, chunking: u64) -> &'static str {
    block_on(crate::pop3::scripted_session(transport(script, chunking), credentials(options), limit(options)))
}

/// An IMAP session (greeting, login, CAPABILITY, LIST/CREATE, SELECT, UID
/// SEARCH, UID FETCH, settle, LOGOUT) against `script`, through the frame
/// guard and async-imap's parser as the robot uses them; says how far it
/// got (`settle` at the end).
pub fn imap_session(script: &[u8], options: u8, chunking: u64) -> &'static str {
    let settle = [SettleAction::Move, SettleAction::MarkRead, SettleAction::Delete, SettleAction::Move]
        [usize::from((options >> 3) & 3)];
    block_on(crate::imap::scripted_session(transport(script, chunking), credentials(options), settle, limit(options)))
}

/// The IMAP frame guard alone: its verdict on a stream must not depend on
/// how the stream is split into reads.
pub fn imap_frames(stream: &[u8], options: u8, chunking: u64) {
    let max_literal = limit(options);
    let read = |chunking: u64| {
        block_on(async {
            let mut guard = crate::imap_guard::FrameGuard::new(Scripted::new(stream, chunking), max_literal);
            let mut out = Vec::new();
            let result = guard.read_to_end(&mut out).await.map_err(|e| e.to_string());
            (result, out.len())
        })
    };
    let whole = read(0);
    let split = read(chunking | 1);
    // Which bound a refused stream passes first may depend on the split;
    // whether it is refused may not.
    assert_eq!(
        whole.0.is_ok(),
        split.0.is_ok(),
        "the frame guard's verdict depends on how the stream is split: {whole:?} / {split:?}"
    );
    if whole.0.is_ok() {
        assert_eq!(whole.1, stream.len(), "the frame guard let a stream through incompletely");
    }
}

struct FixedToken;

#[async_trait::async_trait]
impl BearerTokens for FixedToken {
    async fn token(&self, _renew: bool) -> Result<String, SourceError> {
        Ok("token".to_string())
    }
}

/// An SMTP session (greeting, EHLO, AUTH, MAIL/RCPT/DATA, QUIT) against
/// `script`; says how far it got (`sent` at the end).
pub fn smtp_session(script: &[u8], options: u8, chunking: u64) -> &'static str {
    use crate::smtp::SmtpLogin;
    let login = match (options >> 3) & 3 {
        1 => SmtpLogin::XOAuth2 { username: "robot@fuzz.invalid".into(), tokens: Arc::new(FixedToken), app_id: None },
        2 => SmtpLogin::Anonymous,
        _ => SmtpLogin::Password { username: "robot@fuzz.invalid".into(), password: "secret".into() },
    };
    let mail = b"From: robot@fuzz.invalid\r\nSubject: x\r\n\r\n.line with a dot\nbody \xc3\xa4\r\n";
    block_on(crate::smtp::scripted_session(transport(script, chunking), login, mail))
}

/// An EWS SOAP answer through every reader the source has for one.
pub fn ews_answer(text: &[u8]) {
    // reqwest reads an answer's text as UTF-8, replacing what is not.
    crate::ews::read_answer(&String::from_utf8_lossy(text));
}

/// A `WWW-Authenticate` header value as an EWS password login reads it.
pub fn www_authenticate(value: &[u8]) {
    // Header values reach the parser only when they are visible ASCII.
    if let Ok(value) = reqwest::header::HeaderValue::from_bytes(value)
        && let Ok(text) = value.to_str()
    {
        crate::ews::read_www_authenticate(text);
    }
}

/// A Graph answer body through the error, delta and `$batch` readers.
pub fn graph_answer(body: &[u8]) {
    crate::graph::read_answer(body);
}

/// An NTLM CHALLENGE message: parsed, then answered. Neither may panic;
/// an answer is a well-formed AUTHENTICATE message.
pub fn ntlm_challenge(message: &[u8]) {
    use crate::ntlm;
    let Ok(challenge) = ntlm::ChallengeMessage::parse(message) else { return };
    let _ = challenge.av_pairs();
    let identity = ntlm::Identity::new("CONTOSO\\svc-robot", "pässword");
    let Ok(answer) = ntlm::authenticate_message(&identity, &challenge, &[7; 8], 133_000_000_000_000_000) else {
        return;
    };
    assert!(answer.len() >= 64 && answer.starts_with(b"NTLMSSP\0"), "a malformed AUTHENTICATE message");
    assert_eq!(u32::from_le_bytes(answer[8..12].try_into().expect("4 bytes")), 3, "not an AUTHENTICATE message");
    // Every field the answer announces lies within it.
    for at in [12, 20, 28, 36, 44, 52] {
        let len = u16::from_le_bytes([answer[at], answer[at + 1]]) as usize;
        let offset = u32::from_le_bytes(answer[at + 4..at + 8].try_into().expect("4 bytes")) as usize;
        assert!(offset + len <= answer.len(), "an AUTHENTICATE field runs past the message");
    }
}
