//! Servers that lie about sizes or never stop sending: a mail is read no
//! further than the mailbox's limit + 1 byte, whatever was announced.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use mailrobot_sources::{
    Credentials, ImapConfig, ImapSource, MailSource, Pop3Config, Pop3Source, SettleAction, TlsMode,
};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

mod common;
use common::scripted_imap;

const LIMIT: u64 = 1 << 20;
const FLOOD: u64 = 300 << 20;

fn credentials() -> Credentials {
    Credentials::Password { username: "u".into(), password: "p".into() }
}

/// Writes `line` repeatedly until `FLOOD` bytes went out or the peer left;
/// returns how many bytes the peer let it write.
async fn flood(w: &mut (impl AsyncWriteExt + Unpin), line: &[u8]) -> u64 {
    let mut sent = 0u64;
    while sent < FLOOD {
        if w.write_all(line).await.is_err() {
            break;
        }
        sent += line.len() as u64;
    }
    sent
}

/// POP3: LIST says 100 bytes, RETR sends 300 MiB.
async fn lying_pop3_server(written: Arc<AtomicU64>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (s, _) = listener.accept().await.unwrap();
        let (r, mut w) = s.into_split();
        let mut lines = BufReader::new(r).lines();
        w.write_all(b"+OK ready\r\n").await.unwrap();
        while let Ok(Some(line)) = lines.next_line().await {
            let answer: &[u8] = match line.split_whitespace().next().unwrap_or("") {
                "CAPA" => b"+OK\r\nUSER\r\nUIDL\r\n.\r\n",
                "USER" | "PASS" | "QUIT" => b"+OK\r\n",
                "UIDL" => b"+OK\r\n1 uid-1\r\n.\r\n",
                "LIST" => b"+OK\r\n1 100\r\n.\r\n",
                "RETR" => {
                    w.write_all(b"+OK 100 octets\r\nSubject: big\r\n\r\n").await.unwrap();
                    let line = [b"x".repeat(1022), b"\r\n".to_vec()].concat();
                    written.store(flood(&mut w, &line).await, Ordering::SeqCst);
                    return;
                }
                _ => b"-ERR unknown\r\n",
            };
            w.write_all(answer).await.unwrap();
        }
    });
    port
}

#[tokio::test]
async fn pop3_stops_reading_a_mail_at_the_limit_whatever_list_announced() {
    let written = Arc::new(AtomicU64::new(0));
    let port = lying_pop3_server(written.clone()).await;
    let mut src = Pop3Source::connect(Pop3Config {
        host: "127.0.0.1".into(),
        port,
        tls: TlsMode::None,
        credentials: credentials(),
        tokens: None,
        keep_on_server: false,
        extra_ca_file: None,
        timeout: Duration::from_secs(10),
        max_message_bytes: LIMIT,
    })
    .await
    .unwrap();
    let listed = src.list().await.unwrap();
    assert_eq!(listed[0].size, Some(100), "the server lied small");
    let mails = src.fetch(&["uid-1".to_string()]).await.unwrap();
    assert_eq!(mails.len(), 1);
    let at_least = mails[0].oversized_at_least().expect("refused as too large");
    assert!(at_least > LIMIT && at_least < LIMIT + 4096, "{at_least}");
    assert!(mails[0].raw.is_empty());
    // The robot hung up: the server could not push the whole flood.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while written.load(Ordering::SeqCst) == 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let sent = written.load(Ordering::SeqCst);
    assert!(sent > 0 && sent < 64 << 20, "the server wrote {sent} bytes before the robot hung up");
}

/// IMAP: RFC822.SIZE says 100; the FETCH answer is either honest about the
/// partial body the robot asked for (limit + 1 bytes) or announces a
/// 300 MiB literal and floods.
async fn lying_imap_server(flood_literal: bool, written: Arc<AtomicU64>, asked: Arc<std::sync::Mutex<String>>) -> u16 {
    let (listener, port) = scripted_imap::listen().await;
    tokio::spawn(async move {
        let mut session = scripted_imap::Session::accept(&listener).await;
        while let Some((tag, command, upper)) = session.next_command().await {
            let w = &mut session.writer;
            let answer = if upper.starts_with("SELECT") {
                format!(
                    "* 1 EXISTS\r\n* OK [UIDVALIDITY 7] ok\r\n* OK [UIDNEXT 2] ok\r\n{tag} OK [READ-WRITE] done\r\n"
                )
            } else if upper.starts_with("UID SEARCH") {
                format!("* SEARCH 1\r\n{tag} OK done\r\n")
            } else if upper.starts_with("UID FETCH") && !upper.contains("BODY") {
                format!("* 1 FETCH (UID 1 RFC822.SIZE 100)\r\n{tag} OK done\r\n")
            } else if upper.starts_with("UID FETCH") {
                *asked.lock().unwrap() = command.to_string();
                if flood_literal {
                    w.write_all(b"* 1 FETCH (UID 1 RFC822.SIZE 100 BODY[]<0> {314572800}\r\n").await.unwrap();
                    written.store(flood(w, &[b'x'; 1024]).await, Ordering::SeqCst);
                    return;
                }
                let n = LIMIT + 1;
                w.write_all(format!("* 1 FETCH (UID 1 RFC822.SIZE 100 BODY[]<0> {{{n}}}\r\n").as_bytes())
                    .await
                    .unwrap();
                w.write_all(&vec![b'x'; n as usize]).await.unwrap();
                format!(")\r\n{tag} OK done\r\n")
            } else {
                scripted_imap::routine_answer(&tag, &upper)
            };
            if w.write_all(answer.as_bytes()).await.is_err() {
                return;
            }
        }
    });
    port
}

async fn imap_source(port: u16) -> ImapSource {
    ImapSource::connect(ImapConfig {
        host: "127.0.0.1".into(),
        port,
        tls: TlsMode::None,
        credentials: credentials(),
        tokens: None,
        folder: "INBOX".into(),
        processed_folder: "Processed".into(),
        error_folder: "Errors".into(),
        settle: SettleAction::Move,
        extra_ca_file: None,
        timeout: Duration::from_secs(10),
        max_message_bytes: LIMIT,
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn imap_asks_for_the_limit_plus_one_byte_and_refuses_a_mail_that_fills_it() {
    let asked = Arc::new(std::sync::Mutex::new(String::new()));
    let port = lying_imap_server(false, Arc::default(), asked.clone()).await;
    let mut src = imap_source(port).await;
    let listed = src.list().await.unwrap();
    assert_eq!(listed[0].size, Some(100));
    let mails = src.fetch(&["7:1".to_string()]).await.unwrap();
    assert!(asked.lock().unwrap().contains(&format!("BODY.PEEK[]<0.{}>", LIMIT + 1)), "{}", asked.lock().unwrap());
    assert_eq!(mails[0].oversized_at_least(), Some(LIMIT + 1));
    assert!(mails[0].raw.is_empty());
}

#[tokio::test]
async fn imap_refuses_a_literal_larger_than_it_asked_for_without_buffering_it() {
    let written = Arc::new(AtomicU64::new(0));
    let port = lying_imap_server(true, written.clone(), Arc::default()).await;
    let mut src = imap_source(port).await;
    src.list().await.unwrap();
    let err = src.fetch(&["7:1".to_string()]).await.unwrap_err();
    assert!(err.to_string().contains("announced 314572800 bytes"), "{err}");
    drop(src);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while written.load(Ordering::SeqCst) == 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let sent = written.load(Ordering::SeqCst);
    assert!(sent < 64 << 20, "the server wrote {sent} bytes before the robot hung up");
}
