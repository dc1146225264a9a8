//! EWS standing in for Exchange Server on-premises: the admin switch of the accepted schemes and
//! the 401s that name them, Basic and NTLM sign-in with a user's name and password, and NTLM's
//! handshake bound to its TCP connection (raw HTTP/1.1 over one socket per connection, so the test
//! knows which connection carries what).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::mail::*;
use common::ntlm::{self, Credentials};
use common::*;
use m365_emulator::{Emulator, EwsAuthSpec, MailboxGrant};
use serde_json::json;

const EWS_SCOPE: &str = "https://outlook.office365.com/EWS.AccessAsUser.All";

/// One TCP connection to the emulator.
struct Conn {
    r: BufReader<TcpStream>,
    host: String,
}

#[derive(Debug)]
struct Answer {
    status: u16,
    /// Every `WWW-Authenticate` header, in order.
    www: Vec<String>,
    body: String,
}

impl Conn {
    fn open(emu: &Emulator) -> Conn {
        let s = TcpStream::connect(emu.addr()).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(20))).unwrap();
        Conn { r: BufReader::new(s), host: emu.addr().to_string() }
    }

    /// POSTs a SOAP body to the EWS endpoint on this connection.
    fn post(&mut self, authorization: Option<&str>, body: &str) -> Answer {
        let auth = authorization.map(|a| format!("Authorization: {a}\r\n")).unwrap_or_default();
        let req = format!(
            "POST /EWS/Exchange.asmx HTTP/1.1\r\nHost: {}\r\nContent-Type: text/xml; charset=utf-8\r\n\
             Content-Length: {}\r\n{auth}\r\n{body}",
            self.host,
            body.len()
        );
        self.r.get_mut().write_all(req.as_bytes()).unwrap();
        let mut line = String::new();
        self.r.read_line(&mut line).unwrap();
        assert!(line.starts_with("HTTP/1.1 "), "the server closed the connection or answered {line:?}");
        let status = line[9..12].parse().unwrap();
        let (mut www, mut length) = (Vec::new(), 0usize);
        loop {
            line.clear();
            self.r.read_line(&mut line).unwrap();
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            let (name, value) = l.split_once(':').unwrap();
            match name.to_ascii_lowercase().as_str() {
                "www-authenticate" => www.push(value.trim().to_string()),
                "content-length" => length = value.trim().parse().unwrap(),
                "transfer-encoding" => panic!("chunked answers are not read by this test"),
                "connection" => {
                    assert!(!value.trim().eq_ignore_ascii_case("close"), "the server closes the connection")
                }
                _ => {}
            }
        }
        let mut body = vec![0; length];
        self.r.read_exact(&mut body).unwrap();
        Answer { status, www, body: String::from_utf8(body).unwrap() }
    }
}

fn envelope(header: &str, body: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="utf-8"?>
<soap:Envelope xmlns:m="http://schemas.microsoft.com/exchange/services/2006/messages"
  xmlns:t="http://schemas.microsoft.com/exchange/services/2006/types"
  xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/">
  <soap:Header><t:RequestServerVersion Version="Exchange2016" />{header}</soap:Header>
  <soap:Body>{body}</soap:Body>
</soap:Envelope>"#
    )
}

/// FindItem on an inbox: the caller's own, or `mailbox`'s.
fn find_inbox(mailbox: Option<&str>) -> String {
    let folder = match mailbox {
        Some(m) => format!(
            r#"<t:DistinguishedFolderId Id="inbox"><t:Mailbox><t:EmailAddress>{m}</t:EmailAddress></t:Mailbox></t:DistinguishedFolderId>"#
        ),
        None => r#"<t:DistinguishedFolderId Id="inbox"/>"#.to_string(),
    };
    envelope(
        "",
        &format!(
            r#"<m:FindItem Traversal="Shallow"><m:ItemShape><t:BaseShape>IdOnly</t:BaseShape>
<t:AdditionalProperties><t:FieldURI FieldURI="item:Subject"/></t:AdditionalProperties></m:ItemShape>
<m:ParentFolderIds>{folder}</m:ParentFolderIds></m:FindItem>"#
        ),
    )
}

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{user}:{password}")))
}

fn ntlm_header(msg: &[u8]) -> String {
    format!("NTLM {}", STANDARD.encode(msg))
}

/// The CHALLENGE_MESSAGE of a 401 answering a NEGOTIATE.
fn challenge_of(a: &Answer) -> Vec<u8> {
    assert_eq!(a.status, 401, "{a:?}");
    assert_eq!(a.www.len(), 1, "{a:?}");
    let token = a.www[0].strip_prefix("NTLM ").unwrap_or_else(|| panic!("no NTLM challenge: {a:?}"));
    STANDARD.decode(token).unwrap()
}

/// NEGOTIATE on `c`; the AUTHENTICATE message for its challenge.
fn handshake(c: &mut Conn, creds: &Credentials<'_>, body: &str) -> Vec<u8> {
    let negotiate = ntlm::negotiate_message();
    let challenge = challenge_of(&c.post(Some(&ntlm_header(&negotiate)), body));
    ntlm::authenticate_message(&negotiate, &challenge, creds)
}

fn assert_served(a: &Answer, subject: &str) {
    assert_eq!(a.status, 200, "{a:?}");
    assert!(a.body.contains("NoError") && a.body.contains(subject), "{}", a.body);
}

fn assert_on_prem_401(a: &Answer) {
    assert_eq!(a.status, 401, "{a:?}");
    assert_eq!(a.www, ["Basic realm=\"127.0.0.1\"", "NTLM"], "{a:?}");
}

fn on_prem() -> Emulator {
    let emu = start_mail();
    emu.set_ews_auth(EwsAuthSpec::on_premises()).unwrap();
    emu.deliver_mime(USER, "inbox", &mime(1)).unwrap();
    emu.deliver_mime(SHARED, "inbox", &mime(2)).unwrap();
    emu
}

#[tokio::test]
async fn the_admin_switch_chooses_the_schemes_that_401s_name() {
    let emu = start_mail();
    emu.deliver_mime(USER, "inbox", &mime(1)).unwrap();
    let url = format!("{}/_admin/ews/auth", emu.base_url());
    let token = format!("Bearer {}", user_token(&emu, USER, &[EWS_SCOPE]));
    let set = |schemes: serde_json::Value| {
        let url = url.clone();
        async move {
            let r = client().post(&url).json(&json!({ "schemes": schemes })).send().await.unwrap();
            (r.status().as_u16(), r.json::<serde_json::Value>().await.unwrap())
        }
    };

    // Default: bearer tokens only, as Exchange Online.
    let r: serde_json::Value = client().get(&url).send().await.unwrap().json().await.unwrap();
    assert_eq!(r, json!({"schemes": ["Bearer"]}));
    let a = Conn::open(&emu).post(Some(&basic(USER, PASSWORD)), &find_inbox(None));
    assert_eq!(a.status, 401);
    assert_eq!(a.www.len(), 1);
    assert!(a.www[0].starts_with("Bearer client_id=\"00000002-0000-0ff1-ce00-000000000000\""), "{a:?}");
    assert_served(&Conn::open(&emu).post(Some(&token), &find_inbox(None)), "Request 1");

    // On-premises: Basic and NTLM; a valid bearer token no longer gets in.
    assert_eq!(set(json!(["Basic", "NTLM"])).await, (200, json!({"schemes": ["Basic", "NTLM"]})));
    assert_on_prem_401(&Conn::open(&emu).post(None, &find_inbox(None)));
    assert_on_prem_401(&Conn::open(&emu).post(Some(&token), &find_inbox(None)));
    assert_served(&Conn::open(&emu).post(Some(&basic(USER, PASSWORD)), &find_inbox(None)), "Request 1");

    // NTLM only: Basic is refused, the 401 names NTLM alone.
    assert_eq!(set(json!(["NTLM"])).await.0, 200);
    let a = Conn::open(&emu).post(Some(&basic(USER, PASSWORD)), &find_inbox(None));
    assert_eq!((a.status, a.www.clone()), (401, vec!["NTLM".to_string()]));

    // All three, in the order given (repeats dropped).
    let (s, r) = set(json!(["Bearer", "NTLM", "Basic", "NTLM"])).await;
    assert_eq!((s, r), (200, json!({"schemes": ["Bearer", "NTLM", "Basic"]})));
    let a = Conn::open(&emu).post(None, &find_inbox(None));
    assert_eq!(a.www.len(), 3, "{a:?}");
    assert!(a.www[0].starts_with("Bearer ") && a.www[1] == "NTLM" && a.www[2].starts_with("Basic realm="));
    assert_served(&Conn::open(&emu).post(Some(&token), &find_inbox(None)), "Request 1");
    assert_served(&Conn::open(&emu).post(Some(&basic(USER, PASSWORD)), &find_inbox(None)), "Request 1");

    // Nonsense is a 400 and changes nothing.
    assert_eq!(set(json!([])).await.0, 400);
    assert_eq!(set(json!(["Kerberos"])).await.0, 400);
    assert_eq!(emu.ews_auth().schemes.len(), 3);
    // The state dump carries the switch; a reset goes back to the start setup (Bearer).
    assert_eq!(emu.state().ews_auth, Some(emu.ews_auth()));
    emu.reset().unwrap();
    assert_eq!(emu.ews_auth(), EwsAuthSpec::default());
    assert_eq!(emu.state().ews_auth, None);
}

#[test]
fn a_setup_can_start_on_premises() {
    let mut setup = mail_setup();
    setup.ews_auth = Some(EwsAuthSpec::on_premises());
    let emu = start_with(setup.clone());
    assert_on_prem_401(&Conn::open(&emu).post(None, &find_inbox(None)));
    // The JSON config file shape.
    let text = serde_json::to_value(&setup).unwrap();
    assert_eq!(text["ews_auth"], json!({"schemes": ["Basic", "NTLM"]}));
    emu.reset().unwrap();
    assert_eq!(emu.ews_auth(), EwsAuthSpec::on_premises());
}

#[test]
fn basic_takes_upn_and_domain_forms_and_refuses_wrong_passwords() {
    let emu = on_prem();
    for name in [USER, "ROBOT@Contoso.Test", "robot", "CONTOSO\\robot", "contoso.test\\robot", "EMULATOR\\robot"] {
        assert_served(&Conn::open(&emu).post(Some(&basic(name, PASSWORD)), &find_inbox(None)), "Request 1");
    }
    for (name, password) in [
        (USER, "wrong"),
        (USER, ""),
        ("robot", "passw0rd!"),
        ("FABRIKAM\\robot", PASSWORD),
        ("nobody@contoso.test", PASSWORD),
        ("", PASSWORD),
    ] {
        assert_on_prem_401(&Conn::open(&emu).post(Some(&basic(name, password)), &find_inbox(None)));
    }
    assert_on_prem_401(&Conn::open(&emu).post(Some("Basic not-base64!"), &find_inbox(None)));
    assert_on_prem_401(
        &Conn::open(&emu).post(Some(&format!("Basic {}", STANDARD.encode("no-colon"))), &find_inbox(None)),
    );

    // A delegate: another mailbox only with a grant, never impersonation.
    let alice = basic(ALICE, PASSWORD);
    let a = Conn::open(&emu).post(Some(&alice), &find_inbox(Some(SHARED)));
    assert_eq!(a.status, 200);
    assert!(a.body.contains("ErrorAccessDenied"), "{}", a.body);
    emu.grant_mailbox_access(MailboxGrant { tenant: DOMAIN.into(), mailbox: SHARED.into(), username: ALICE.into() })
        .unwrap();
    assert_served(&Conn::open(&emu).post(Some(&alice), &find_inbox(Some(SHARED))), "Request 2");
    let impersonating = envelope(
        &format!(
            "<t:ExchangeImpersonation><t:ConnectingSID><t:SmtpAddress>{SHARED}</t:SmtpAddress></t:ConnectingSID></t:ExchangeImpersonation>"
        ),
        r#"<m:FindItem Traversal="Shallow"><m:ItemShape><t:BaseShape>IdOnly</t:BaseShape></m:ItemShape>
<m:ParentFolderIds><t:DistinguishedFolderId Id="inbox"/></m:ParentFolderIds></m:FindItem>"#,
    );
    let a = Conn::open(&emu).post(Some(&alice), &impersonating);
    assert_eq!(a.status, 500);
    assert!(a.body.contains("ErrorImpersonateUserDenied"), "{}", a.body);
}

#[test]
fn ntlm_signs_in_on_the_connection_that_got_the_challenge() {
    let emu = on_prem();
    let upn = Credentials { user: USER, domain: "", password: PASSWORD };
    let mut c = Conn::open(&emu);
    // The first try without credentials, as HTTP clients do, then the handshake on the same socket.
    assert_on_prem_401(&c.post(None, &find_inbox(None)));
    let negotiate = ntlm::negotiate_message();
    let challenge = challenge_of(&c.post(Some(&ntlm_header(&negotiate)), &find_inbox(None)));
    // The challenge names the server (MsvAvNbDomainName etc.) and has a timestamp, so the client
    // sends a MIC, which the emulator checks.
    let utf16 = |s: &str| s.encode_utf16().flat_map(u16::to_le_bytes).collect::<Vec<u8>>();
    for name in ["EMULATOR", "EXCHANGE", "emulator.test", "exchange.emulator.test"] {
        assert!(challenge.windows(utf16(name).len()).any(|w| w == utf16(name)), "{name} missing");
    }
    let auth = ntlm::authenticate_message(&negotiate, &challenge, &upn);
    assert_served(&c.post(Some(&ntlm_header(&auth)), &find_inbox(None)), "Request 1");
    // Single use: the same AUTHENTICATE again is refused.
    assert_on_prem_401(&c.post(Some(&ntlm_header(&auth)), &find_inbox(None)));
    // The connection is not kept signed in: the next request needs a handshake of its own.
    assert_on_prem_401(&c.post(None, &find_inbox(None)));

    // Other name forms: DOMAIN\name (the tenant's NetBIOS name, the emulator's) and a bare name.
    for (user, domain) in [("robot", "CONTOSO"), ("robot", "EMULATOR"), ("Robot", ""), ("robot", "contoso.test")] {
        let auth = handshake(&mut c, &Credentials { user, domain, password: PASSWORD }, &find_inbox(None));
        assert_served(&c.post(Some(&ntlm_header(&auth)), &find_inbox(None)), "Request 1");
    }
    // A grant reaches the shared mailbox, as with Basic.
    let auth = handshake(&mut c, &upn, &find_inbox(Some(SHARED)));
    let a = c.post(Some(&ntlm_header(&auth)), &find_inbox(Some(SHARED)));
    assert!(a.status == 200 && a.body.contains("ErrorAccessDenied"), "{a:?}");
    emu.grant_mailbox_access(MailboxGrant { tenant: DOMAIN.into(), mailbox: SHARED.into(), username: USER.into() })
        .unwrap();
    let auth = handshake(&mut c, &upn, &find_inbox(Some(SHARED)));
    assert_served(&c.post(Some(&ntlm_header(&auth)), &find_inbox(Some(SHARED))), "Request 2");
}

#[test]
fn ntlm_refuses_wrong_passwords_other_connections_stale_challenges_and_ntlmv1() {
    let emu = on_prem();
    let good = Credentials { user: USER, domain: "", password: PASSWORD };
    let body = find_inbox(None);

    // Wrong password, unknown user, a domain that is not ours.
    for creds in [
        Credentials { user: USER, domain: "", password: "wrong" },
        Credentials { user: "nobody", domain: "CONTOSO", password: PASSWORD },
        Credentials { user: "robot", domain: "FABRIKAM", password: PASSWORD },
    ] {
        let mut c = Conn::open(&emu);
        let auth = handshake(&mut c, &creds, &body);
        assert_on_prem_401(&c.post(Some(&ntlm_header(&auth)), &body));
    }

    // The AUTHENTICATE on another connection than the challenge: refused there, and the
    // challenge still waits on its own connection.
    let mut first = Conn::open(&emu);
    let auth = handshake(&mut first, &good, &body);
    let mut second = Conn::open(&emu);
    assert_on_prem_401(&second.post(Some(&ntlm_header(&auth)), &body));
    // Even when the other connection has a challenge of its own.
    let negotiate = ntlm::negotiate_message();
    challenge_of(&second.post(Some(&ntlm_header(&negotiate)), &body));
    assert_on_prem_401(&second.post(Some(&ntlm_header(&auth)), &body));
    assert_served(&first.post(Some(&ntlm_header(&auth)), &body), "Request 1");

    // A challenge answered after more than a minute.
    let mut c = Conn::open(&emu);
    let auth = handshake(&mut c, &good, &body);
    emu.advance_clock(61);
    assert_on_prem_401(&c.post(Some(&ntlm_header(&auth)), &body));

    // NTLMv1 (24-byte responses) after a proper challenge.
    let mut c = Conn::open(&emu);
    challenge_of(&c.post(Some(&ntlm_header(&ntlm::negotiate_message())), &body));
    assert_on_prem_401(&c.post(Some(&ntlm_header(&ntlm::v1_authenticate_message("robot", "CONTOSO"))), &body));

    // Garbage and a CHALLENGE sent by the client.
    let mut c = Conn::open(&emu);
    assert_on_prem_401(&c.post(Some("NTLM %%%"), &body));
    assert_on_prem_401(&c.post(Some(&format!("NTLM {}", STANDARD.encode(b"NTLMSSP\0\x02\0\0\0"))), &body));
    // The connection survived all of it.
    let auth = handshake(&mut c, &good, &body);
    assert_served(&c.post(Some(&ntlm_header(&auth)), &body), "Request 1");
}
