//! Scripted IMAP servers, for what a real one will not send (lies, floods,
//! folders of 50,000 mails): the commands every session needs, answered as
//! a plain server would.

/// The answer to a routine command (`upper` is the command, upper-cased,
/// without its tag); `BAD` for anything else.
pub fn routine_answer(tag: &str, upper: &str) -> String {
    if upper.starts_with("CAPABILITY") {
        format!("* CAPABILITY IMAP4rev1 MOVE UIDPLUS\r\n{tag} OK done\r\n")
    } else if upper.starts_with("LOGIN") || upper.starts_with("CREATE") || upper.starts_with("SUBSCRIBE") {
        format!("{tag} OK done\r\n")
    } else if upper.starts_with("LIST") {
        format!("* LIST () \"/\" INBOX\r\n{tag} OK done\r\n")
    } else if upper.starts_with("LOGOUT") {
        format!("* BYE\r\n{tag} OK bye\r\n")
    } else {
        format!("{tag} BAD unknown\r\n")
    }
}

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::TcpListener;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// One client's session with a scripted server: read its commands, write
/// whatever the script says.
pub struct Session {
    lines: Lines<BufReader<OwnedReadHalf>>,
    pub writer: OwnedWriteHalf,
}

/// A listener on a free loopback port, and the port.
pub async fn listen() -> (TcpListener, u16) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    (listener, port)
}

impl Session {
    /// Accepts one client and greets it.
    pub async fn accept(listener: &TcpListener) -> Session {
        let (stream, _) = listener.accept().await.unwrap();
        let (read, mut writer) = stream.into_split();
        writer.write_all(b"* OK IMAP4rev1 ready\r\n").await.unwrap();
        Session { lines: BufReader::new(read).lines(), writer }
    }

    /// The next command: (tag, command, command upper-cased); None once the
    /// client is gone.
    pub async fn next_command(&mut self) -> Option<(String, String, String)> {
        let line = self.lines.next_line().await.ok()??;
        let (tag, command) = line.split_once(' ').unwrap_or((&line, ""));
        Some((tag.to_string(), command.to_string(), command.to_ascii_uppercase()))
    }
}
