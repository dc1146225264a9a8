//! Servers whose listings never end: a Graph delta that always sends another
//! `@odata.nextLink`, an EWS SyncFolderItems that always says
//! `IncludesLastItemInRange` false. Each request was bounded; the listing
//! was not, and one pass asked for pages forever. Now it stops with an error
//! that says so.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use mailrobot_sources::ews::{EwsAuth, EwsConfig, EwsSource};
use mailrobot_sources::graph::{GraphConfig, GraphSource};
use mailrobot_sources::paging::MAX_EMPTY_PAGES;
use mailrobot_sources::{BearerTokens, MailSource, PasswordScheme, SettleAction, SourceError};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// A keep-alive HTTP/1.1 server on loopback that answers each request with
/// `answer(base URL, request line, body)`: (content type, body). Returns its
/// base URL and the count of requests.
async fn scripted_http(
    answer: impl Fn(&str, &str, &str) -> (&'static str, String) + Send + Sync + 'static,
) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let served_base = base.clone();
    let requests = Arc::new(AtomicUsize::new(0));
    let (answer, counted) = (Arc::new(answer), requests.clone());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (answer, counted, base) = (answer.clone(), counted.clone(), served_base.clone());
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut read = BufReader::new(read);
                loop {
                    let mut request_line = String::new();
                    if read.read_line(&mut request_line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let mut length = 0;
                    loop {
                        let mut header = String::new();
                        read.read_line(&mut header).await.unwrap();
                        if header.trim().is_empty() {
                            break;
                        }
                        if let Some((name, value)) = header.split_once(':')
                            && name.eq_ignore_ascii_case("content-length")
                        {
                            length = value.trim().parse().unwrap();
                        }
                    }
                    let mut body = vec![0; length];
                    read.read_exact(&mut body).await.unwrap();
                    counted.fetch_add(1, Ordering::SeqCst);
                    let (content_type, text) = answer(&base, request_line.trim(), &String::from_utf8_lossy(&body));
                    // One write: a head and a body in two make the peer's
                    // delayed ACK cost 40 ms a request.
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{text}",
                        text.len()
                    );
                    if write.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (base, requests)
}

struct FixedToken;

#[async_trait::async_trait]
impl BearerTokens for FixedToken {
    async fn token(&self, _renew: bool) -> Result<String, SourceError> {
        Ok("token".into())
    }
}

#[tokio::test]
async fn a_graph_delta_that_never_ends_is_stopped() {
    let page = Arc::new(AtomicUsize::new(0));
    let (base, requests) = scripted_http(move |base, line, _| {
        let body = if line.contains("/delta") {
            // Always another page, nothing on it, each link a new one.
            let n = page.fetch_add(1, Ordering::SeqCst);
            format!(
                r#"{{"value":[],"@odata.nextLink":"{base}/v1.0/users/desk%40example.test/mailFolders/inbox-id/messages/delta?$skiptoken=p{n}"}}"#
            )
        } else {
            r#"{"id":"inbox-id","displayName":"Inbox"}"#.to_string()
        };
        ("application/json", body)
    })
    .await;
    let mut source = GraphSource::connect(GraphConfig {
        base_url: base,
        address: "desk@example.test".into(),
        folder: "inbox".into(),
        processed_folder: "deleteditems".into(),
        error_folder: "deleteditems".into(),
        settle: SettleAction::Delete,
        tokens: Arc::new(FixedToken),
        timeout: Duration::from_secs(5),
        delta_link: None,
        max_message_bytes: Some(1 << 20),
    })
    .await
    .unwrap();
    let before = requests.load(Ordering::SeqCst);
    let err =
        tokio::time::timeout(Duration::from_secs(60), source.list()).await.expect("the listing ended").unwrap_err();
    assert!(err.to_string().contains("empty pages in a row"), "{err}");
    assert!(err.is_transient(), "{err}");
    assert_eq!(requests.load(Ordering::SeqCst) - before, MAX_EMPTY_PAGES);
}

fn soap(body: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\">\
         <s:Body xmlns:m=\"http://schemas.microsoft.com/exchange/services/2006/messages\" \
         xmlns:t=\"http://schemas.microsoft.com/exchange/services/2006/types\">{body}</s:Body></s:Envelope>"
    )
}

#[tokio::test]
async fn an_ews_sync_that_never_reaches_the_last_item_is_stopped() {
    let round = Arc::new(AtomicUsize::new(0));
    let (base, requests) = scripted_http(move |_, _, body| {
        let answer = if body.contains("SyncFolderItems") {
            // Always "more to come": one new change per page, never the last.
            let n = round.fetch_add(1, Ordering::SeqCst);
            format!(
                "<m:SyncFolderItemsResponse><m:ResponseMessages><m:SyncFolderItemsResponseMessage ResponseClass=\"Success\">\
                 <m:ResponseCode>NoError</m:ResponseCode><m:SyncState>state-{n}</m:SyncState>\
                 <m:IncludesLastItemInRange>false</m:IncludesLastItemInRange><m:Changes>{}</m:Changes>\
                 </m:SyncFolderItemsResponseMessage></m:ResponseMessages></m:SyncFolderItemsResponse>",
                // Pages after the first list nothing.
                if n == 0 { "<t:Create><t:Message><t:ItemId Id=\"item-0\"/></t:Message></t:Create>" } else { "" }
            )
        } else {
            "<m:GetFolderResponse><m:ResponseMessages><m:GetFolderResponseMessage ResponseClass=\"Success\">\
             <m:ResponseCode>NoError</m:ResponseCode><m:Folders><t:Folder><t:FolderId Id=\"folder-id\"/></t:Folder>\
             </m:Folders></m:GetFolderResponseMessage></m:ResponseMessages></m:GetFolderResponse>"
                .to_string()
        };
        ("text/xml; charset=utf-8", soap(&answer))
    })
    .await;
    let mut source = EwsSource::connect(EwsConfig {
        url: format!("{base}/EWS/Exchange.asmx"),
        address: "desk@example.test".into(),
        folder: "inbox".into(),
        processed_folder: "deleteditems".into(),
        error_folder: "deleteditems".into(),
        settle: SettleAction::Delete,
        auth: EwsAuth::Password { username: "desk".into(), password: "pw".into(), scheme: PasswordScheme::Basic },
        timeout: Duration::from_secs(5),
        sync_state: None,
        max_message_bytes: 1 << 20,
    })
    .await
    .unwrap();
    let before = requests.load(Ordering::SeqCst);
    let err =
        tokio::time::timeout(Duration::from_secs(60), source.list()).await.expect("the listing ended").unwrap_err();
    assert!(err.to_string().contains("empty pages in a row") && err.to_string().contains("SyncFolderItems"), "{err}");
    // The first page listed something; the hundred after it nothing.
    assert_eq!(requests.load(Ordering::SeqCst) - before, MAX_EMPTY_PAGES + 1);
}
