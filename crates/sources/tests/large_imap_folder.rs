//! A folder of 50,000 mails: listed through several `UID SEARCH UID a:b`
//! commands, so no answer line is long (async-imap reads a long line in
//! quadratic time: a million-mail folder's one-line answer took minutes).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mailrobot_sources::{Credentials, ImapConfig, ImapSource, MailSource, SettleAction, TlsMode};
use tokio::io::AsyncWriteExt;

mod common;
use common::scripted_imap;

const MAILS: u32 = 50_000;

/// The folder holds the even UIDs 2..=100,000.
fn in_folder(uid: u32) -> bool {
    uid.is_multiple_of(2) && (2..=2 * MAILS).contains(&uid)
}

/// UIDs of an IMAP set (`1:5,7,9:*`), `*` being the highest UID in use.
fn uids_of(set: &str) -> Vec<u32> {
    set.split(',')
        .flat_map(|part| {
            let (a, b) = part.split_once(':').unwrap_or((part, part));
            let bound = |s: &str| if s == "*" { 2 * MAILS } else { s.parse().unwrap() };
            let (a, b) = (bound(a), bound(b));
            a.min(b)..=a.max(b)
        })
        .filter(|u| in_folder(*u))
        .collect()
}

/// Serves the folder; records each SEARCH command and its answer's length,
/// and counts the SELECTs.
async fn large_folder_server(searches: Arc<Mutex<Vec<(String, usize)>>>, selects: Arc<AtomicUsize>) -> u16 {
    let (listener, port) = scripted_imap::listen().await;
    tokio::spawn(async move {
        let mut session = scripted_imap::Session::accept(&listener).await;
        while let Some((tag, command, upper)) = session.next_command().await {
            let w = &mut session.writer;
            let answer = if upper.starts_with("SELECT") {
                selects.fetch_add(1, Ordering::SeqCst);
                let next = 2 * MAILS + 1;
                format!(
                    "* {MAILS} EXISTS\r\n* OK [UIDVALIDITY 7] ok\r\n* OK [UIDNEXT {next}] ok\r\n{tag} OK [READ-WRITE] done\r\n"
                )
            } else if upper.starts_with("UID SEARCH") {
                let words: Vec<&str> = command.split_whitespace().collect();
                let found = match words.get(2) {
                    Some(w) if w.eq_ignore_ascii_case("UID") => uids_of(words[3]),
                    _ => uids_of("1:*"),
                };
                let line: String = found.iter().map(|u| format!(" {u}")).collect();
                let line = format!("* SEARCH{line}\r\n");
                searches.lock().unwrap().push((command.to_string(), line.len()));
                format!("{line}{tag} OK done\r\n")
            } else if upper.starts_with("UID FETCH") {
                let set = command.split_whitespace().nth(2).unwrap();
                let mut answer = String::new();
                for uid in uids_of(set) {
                    answer.push_str(&format!("* {} FETCH (UID {uid} RFC822.SIZE 100)\r\n", uid / 2));
                }
                format!("{answer}{tag} OK done\r\n")
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

#[tokio::test]
async fn a_large_folder_is_searched_in_uid_ranges() {
    let searches = Arc::new(Mutex::new(Vec::new()));
    let selects = Arc::new(AtomicUsize::new(0));
    let port = large_folder_server(searches.clone(), selects.clone()).await;
    let mut source = ImapSource::connect(ImapConfig {
        host: "127.0.0.1".into(),
        port,
        tls: TlsMode::None,
        credentials: Credentials::Password { username: "u".into(), password: "p".into() },
        tokens: None,
        folder: "INBOX".into(),
        processed_folder: "Processed".into(),
        error_folder: "Errors".into(),
        settle: SettleAction::Move,
        extra_ca_file: None,
        timeout: Duration::from_secs(30),
        max_message_bytes: 1 << 20,
    })
    .await
    .unwrap();
    let listed = source.list().await.unwrap();
    assert_eq!(listed.len(), MAILS as usize);
    let want: Vec<String> = (1..=MAILS).map(|i| format!("7:{}", 2 * i)).collect();
    assert_eq!(listed.iter().map(|l| l.remote_id.clone()).collect::<Vec<_>>(), want);
    assert!(listed.iter().all(|l| l.size == Some(100)));
    // Connecting selected the folder; the first listing used that SELECT.
    assert_eq!(selects.load(Ordering::SeqCst), 1);

    {
        let searches = searches.lock().unwrap();
        assert!(searches.len() > 1, "{searches:?}");
        assert!(searches.iter().all(|(command, _)| command.starts_with("UID SEARCH UID ")), "{searches:?}");
        // One search of everything would have answered in one 339 KB line.
        let longest = searches.iter().map(|(_, len)| *len).max().unwrap();
        assert!(longest < 150_000, "longest SEARCH answer {longest} bytes: {searches:?}");
    }
    // A later listing on the same session selects again, to see new mail.
    assert_eq!(source.list().await.unwrap().len(), MAILS as usize);
    assert_eq!(selects.load(Ordering::SeqCst), 2);
}
