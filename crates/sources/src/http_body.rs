//! Every HTTP body the robot reads has a bound: a broken or hostile server
//! (or something pretending to be one) cannot make it buffer without end.
//! Written once here; the token client, Graph and EWS read through it.

use std::fmt;

/// Bodies of answers that carry no mail: token endpoint answers, Graph
/// error bodies and small JSON documents.
pub const SMALL: u64 = 1 << 20;
/// Graph JSON pages (delta pages, folder lists, `$batch` answers).
pub const JSON_PAGE: u64 = 16 << 20;

/// Why a body could not be read.
#[derive(Debug)]
pub enum BodyError {
    /// The body (or its Content-Length) passed `cap` bytes; reading stopped.
    TooLarge {
        cap: u64,
        at_least: u64,
    },
    Network(reqwest::Error),
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BodyError::TooLarge { cap, at_least } => {
                write!(f, "the answer is at least {at_least} bytes, more than the {cap} bytes the robot reads")
            }
            BodyError::Network(e) => f.write_str(&without_url(e)),
        }
    }
}

impl std::error::Error for BodyError {}

/// The body, read no further than `cap` bytes.
pub async fn read_capped(mut response: reqwest::Response, cap: u64) -> Result<Vec<u8>, BodyError> {
    if let Some(length) = response.content_length().filter(|l| *l > cap) {
        return Err(BodyError::TooLarge { cap, at_least: length });
    }
    let mut body = Vec::with_capacity(response.content_length().unwrap_or(0) as usize);
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Network)? {
        body.extend_from_slice(&chunk);
        if body.len() as u64 > cap {
            return Err(BodyError::TooLarge { cap, at_least: body.len() as u64 });
        }
    }
    Ok(body)
}

/// A reqwest error's text without its URL's path and query (which may
/// carry a token or a delta link).
pub fn without_url(e: &reqwest::Error) -> String {
    let text = e.to_string();
    match e.url() {
        Some(url) => text.replace(url.as_str(), &url.origin().ascii_serialization()),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A server that answers one request with `head` and then `body_len`
    /// bytes of body.
    async fn server(head: &'static str, body_len: usize) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            let _ = s.write_all(head.as_bytes()).await;
            let chunk = vec![b'x'; 64 * 1024];
            let mut sent = 0;
            while sent < body_len {
                if s.write_all(&chunk).await.is_err() {
                    break;
                }
                sent += chunk.len();
            }
        });
        format!("http://{addr}/")
    }

    #[tokio::test]
    async fn a_body_over_the_cap_is_refused_with_or_without_content_length() {
        let client = reqwest::Client::new();
        let url = server("HTTP/1.1 200 OK\r\nContent-Length: 99999999\r\n\r\n", 0).await;
        let err = read_capped(client.get(&url).send().await.unwrap(), 1000).await.unwrap_err();
        assert!(matches!(err, BodyError::TooLarge { at_least: 99999999, .. }), "{err}");

        let url = server("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", 8 << 20).await;
        let err = read_capped(client.get(&url).send().await.unwrap(), 100_000).await.unwrap_err();
        assert!(matches!(err, BodyError::TooLarge { at_least, .. } if at_least < 1 << 20), "{err}");

        let url = server("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", 0).await;
        assert_eq!(read_capped(client.get(&url).send().await.unwrap(), 5).await.unwrap(), b"hello");
    }
}
