//! Deterministic generator of realistic mails for tests and benchmarks.
//!
//! Mail number `index` of a corpus seeded with `seed` is a pure function of
//! `(index, seed, options)`: it can be made alone, in any order, on any
//! thread, and is the same every time. The mix:
//!
//! - about half `text/plain` (8bit or quoted-printable UTF-8),
//! - about a third `multipart/alternative` (text + HTML),
//! - the rest `multipart/mixed` with one base64 attachment (PDF-like or
//!   PNG-like bytes),
//! - a share of [`GenOptions::reply_ratio`] are replies: `Re: ` subject,
//!   `In-Reply-To:` and `References:` naming an *earlier* mail of the corpus
//!   (see [`reply_target`]).
//!
//! Every mail has the Message-ID `<gen-{seed}-{index}@bench.example>`
//! ([`message_id`]), a Date that grows with the index, CRLF line ends and no
//! line over 998 bytes. Sizes scatter around [`GenOptions::target_size`]
//! (±25 %); below about 1.5 KB the headers alone are larger than the target.

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, RngCore, SeedableRng};
use std::fmt::Write as _;

/// Knobs of the generator.
#[derive(Clone, Debug, PartialEq)]
pub struct GenOptions {
    /// Share of mails (after the first) that reply to an earlier one, 0.0..=1.0.
    pub reply_ratio: f64,
    /// Aimed-at size of one mail in bytes (headers included).
    pub target_size: usize,
}

impl Default for GenOptions {
    fn default() -> Self {
        GenOptions { reply_ratio: 0.10, target_size: 10 * 1024 }
    }
}

/// The Message-ID of generated mail `index`, without angle brackets.
pub fn message_id(index: usize, seed: u64) -> String {
    format!("gen-{seed}-{index}@bench.example")
}

/// Which earlier mail (index < `index`) generated mail `index` replies to,
/// or `None` when it starts a new thread. Mail 0 never replies.
pub fn reply_target(index: usize, seed: u64, opts: &GenOptions) -> Option<usize> {
    if index == 0 {
        return None;
    }
    let mut rng = rng_for(seed, index, Stream::Thread);
    let p = opts.reply_ratio.clamp(0.0, 1.0);
    if !rng.gen_bool(p) {
        return None;
    }
    // Mostly recent mails, now and then one from long ago.
    let window = index.min(200);
    let x: f64 = rng.r#gen();
    let back = 1 + ((x * x * x) * window as f64) as usize;
    Some(index - back.min(index))
}

/// Generated mail number `index` of the corpus `seed`, as raw RFC 5322 bytes.
pub fn generate_mail(index: usize, seed: u64, opts: &GenOptions) -> Vec<u8> {
    let mut rng = rng_for(seed, index, Stream::Content);
    let from = PEOPLE.choose(&mut rng).expect("people");
    let ts = timestamp(index, seed);
    let tz = *[60i32, 60, 120, 0, -300, 330].choose(&mut rng).expect("tz");

    // Thread: parent, ancestors (oldest first), subject of the thread root.
    let parent = reply_target(index, seed, opts);
    let mut ancestors = Vec::new();
    let mut top = index;
    let mut cur = parent;
    while let Some(p) = cur {
        ancestors.push(p);
        top = p;
        if ancestors.len() >= 64 {
            break;
        }
        cur = reply_target(p, seed, opts);
    }
    ancestors.reverse();
    let topic = topic(top, seed);
    let subject = if parent.is_some() { format!("Re: {topic}") } else { topic.to_string() };

    // Size budget: scatter ±25 % around the target.
    let target = (opts.target_size as f64 * rng.gen_range(0.75..1.25)) as usize;

    let mut head = String::with_capacity(1024);
    let rcpt = "helpdesk@contoso.example";
    let _ = write!(
        head,
        "Return-Path: <{addr}>\r\n\
         Delivered-To: {rcpt}\r\n\
         Received: from mx1.contoso.example (mx1.contoso.example [10.0.0.25])\r\n\
         \tby mbox.contoso.example (Postfix) with ESMTPS id {qid1}\r\n\
         \tfor <{rcpt}>; {date}\r\n\
         Received: from {host} ({host} [{ip}])\r\n\
         \tby mx1.contoso.example (Postfix) with ESMTPS id {qid2}\r\n\
         \tfor <{rcpt}>; {date}\r\n",
        addr = from.addr,
        date = rfc2822_date(ts + 3, tz),
        host = from.host(),
        ip = format_args!("198.51.100.{}", rng.gen_range(2..250)),
        qid1 = queue_id(&mut rng),
        qid2 = queue_id(&mut rng),
    );
    let _ = write!(head, "From: {} <{}>\r\n", encode_word(from.name), from.addr);
    head.push_str("To: IT Helpdesk <helpdesk@contoso.example>\r\n");
    let _ = write!(head, "Subject: {}\r\n", encode_word(&subject));
    let _ = write!(head, "Date: {}\r\n", rfc2822_date(ts, tz));
    let _ = write!(head, "Message-ID: <{}>\r\n", message_id(index, seed));
    if let Some(p) = parent {
        let _ = write!(head, "In-Reply-To: <{}>\r\n", message_id(p, seed));
        head.push_str("References:");
        for a in ancestors.iter().skip(ancestors.len().saturating_sub(20)) {
            let _ = write!(head, "\r\n <{}>", message_id(*a, seed));
        }
        head.push_str("\r\n");
    }
    let _ = write!(head, "X-Mailer: {}\r\n", MAILERS.choose(&mut rng).expect("mailer"));
    head.push_str("MIME-Version: 1.0\r\n");

    // Room left for the body after the headers and MIME overhead.
    let room = target.saturating_sub(head.len() + 120).max(200);
    let quote = parent.map(|p| quoted_intro(p, seed));
    let shape: f64 = rng.r#gen();
    let mut out = head.into_bytes();
    if shape < 0.50 {
        let text = body_text(&mut rng, from.name, room, quote.as_deref());
        if rng.gen_bool(0.5) {
            out.extend_from_slice(
                b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n",
            );
            out.extend_from_slice(text.as_bytes());
        } else {
            out.extend_from_slice(
                b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n",
            );
            out.extend_from_slice(quoted_printable(text.as_bytes()).as_bytes());
        }
    } else if shape < 0.85 {
        let boundary = format!("=_alt_{:016x}", rng.next_u64());
        let text = body_text(&mut rng, from.name, room.saturating_sub(400) * 10 / 22, quote.as_deref());
        let html = to_html(&text);
        let _ = write!(
            out_str(&mut out),
            "Content-Type: multipart/alternative; boundary=\"{boundary}\"\r\n\r\n\
             --{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n\
             {text}\r\n--{boundary}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n\
             {html}\r\n--{boundary}--\r\n"
        );
    } else {
        let boundary = format!("=_mixed_{:016x}", rng.next_u64());
        let text = body_text(&mut rng, from.name, (room / 3).max(200), quote.as_deref());
        // base64 grows 4/3 plus CRLF every 76: about 1.37
        let raw_len = ((room.saturating_sub(text.len() + 300)) as f64 / 1.37) as usize;
        let (name, ctype, data) = if rng.gen_bool(0.5) {
            (format!("report-{index}.pdf"), "application/pdf", pdf_like(&mut rng, raw_len.max(64)))
        } else {
            (format!("screenshot-{index}.png"), "image/png", png_like(&mut rng, raw_len.max(64)))
        };
        let _ = write!(
            out_str(&mut out),
            "Content-Type: multipart/mixed; boundary=\"{boundary}\"\r\n\r\n\
             This is a multi-part message in MIME format.\r\n\
             --{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n\
             {text}\r\n--{boundary}\r\nContent-Type: {ctype}; name=\"{name}\"\r\n\
             Content-Disposition: attachment; filename=\"{name}\"\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        );
        base64_lines(&data, &mut out);
        let _ = write!(out_str(&mut out), "--{boundary}--\r\n");
    }
    out
}

/// `n` mails of the corpus `seed`, in index order (0..n).
pub fn generate_corpus(n: usize, seed: u64, opts: &GenOptions) -> impl Iterator<Item = Vec<u8>> + use<> {
    let opts = opts.clone();
    (0..n).map(move |i| generate_mail(i, seed, &opts))
}

/// One mail carrying one base64 attachment (`application/octet-stream`,
/// `large-{attachment_bytes}.bin`) that decodes to exactly `attachment_bytes`
/// bytes; base64 lines of 76 characters, CRLF line ends.
pub fn large_attachment_mail(attachment_bytes: usize) -> Vec<u8> {
    let mut rng = StdRng::seed_from_u64(0x1a59_e000 ^ attachment_bytes as u64);
    let mut data = vec![0u8; attachment_bytes];
    rng.fill_bytes(&mut data);
    let boundary = "=_large_5f3c9a0e7b21d864";
    let mut out = Vec::with_capacity(attachment_bytes / 57 * 78 + 2048);
    let _ = write!(
        out_str(&mut out),
        "From: Backup Server <backup@contoso.example>\r\n\
         To: IT Helpdesk <helpdesk@contoso.example>\r\n\
         Subject: Nightly export ({attachment_bytes} bytes)\r\n\
         Date: Wed, 01 Jan 2025 03:00:00 +0000\r\n\
         Message-ID: <large-{attachment_bytes}@bench.example>\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"{boundary}\"\r\n\r\n\
         --{boundary}\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n\
         The nightly export is attached.\r\n\
         --{boundary}\r\nContent-Type: application/octet-stream; name=\"large-{attachment_bytes}.bin\"\r\n\
         Content-Disposition: attachment; filename=\"large-{attachment_bytes}.bin\"\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n"
    );
    base64_lines(&data, &mut out);
    let _ = write!(out_str(&mut out), "--{boundary}--\r\n");
    out
}

// ---------------------------------------------------------------------------

#[derive(Clone, Copy)]
enum Stream {
    Thread = 1,
    Content = 2,
    Topic = 3,
}

fn rng_for(seed: u64, index: usize, stream: Stream) -> StdRng {
    StdRng::seed_from_u64(splitmix(
        splitmix(seed ^ 0x6d61_696c_726f_626f) ^ (index as u64).wrapping_mul(4) ^ stream as u64,
    ))
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Seconds since the epoch (UTC) of mail `index`: strictly increasing (41 to
/// 259 s apart), starting on 2025-01-06 08:00 UTC.
fn timestamp(index: usize, seed: u64) -> i64 {
    let step = 150i64;
    let jitter = (splitmix(seed ^ 0x7469_6d65 ^ (index as u64).wrapping_mul(0x9E37)) % 110) as i64;
    1_736_150_400 + index as i64 * step + jitter
}

fn out_str(out: &mut Vec<u8>) -> VecWriter<'_> {
    VecWriter(out)
}

struct VecWriter<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for VecWriter<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

struct Person {
    name: &'static str,
    addr: &'static str,
}

impl Person {
    fn host(&self) -> String {
        let domain = self.addr.rsplit('@').next().unwrap_or("example.com");
        format!("mail.{domain}")
    }
}

const PEOPLE: &[Person] = &[
    Person { name: "Emily Carter", addr: "emily.carter@example.com" },
    Person { name: "Raj Patel", addr: "raj.patel@example.net" },
    Person { name: "Jürgen Weiß", addr: "juergen.weiss@example.org" },
    Person { name: "Sofia Rossi", addr: "sofia.rossi@fabrikam.example.com" },
    Person { name: "Lars Nilsson", addr: "lars.nilsson@example.net" },
    Person { name: "Nadia Haddad", addr: "nadia.haddad@example.com" },
    Person { name: "Oliver Grant", addr: "oliver.grant@example.com" },
    Person { name: "Claudia Becker", addr: "claudia.becker@example.org" },
    Person { name: "François Lefèvre", addr: "francois.lefevre@example.net" },
    Person { name: "Maja Schneider", addr: "maja.schneider@example.com" },
    Person { name: "Michael Brown", addr: "michael.brown@example.org" },
    Person { name: "Björn Åkesson", addr: "bjorn.akesson@example.org" },
    Person { name: "Léa Fontaine", addr: "lea.fontaine@example.net" },
    Person { name: "Tom Baker", addr: "tom.baker@example.com" },
    Person { name: "Anna Berg", addr: "anna.berg@example.org" },
    Person { name: "Pieter de Vries", addr: "p.devries@example.net" },
];

const MAILERS: &[&str] = &[
    "Microsoft Outlook 16.0",
    "Mozilla Thunderbird 128.4.0",
    "Apple Mail (2.3826.500.181.1.5)",
    "Roundcube Webmail/1.6.9",
    "Evolution 3.52.4",
];

const OBJECTS: &[&str] = &[
    "printer on the 3rd floor",
    "VPN connection",
    "laptop",
    "docking station",
    "Outlook calendar",
    "shared drive P:",
    "Teams headset",
    "SAP login",
    "meeting room display",
    "password reset",
    "mobile phone",
    "Wi-Fi in building C",
];

const PROBLEMS: &[&str] = &[
    "does not work",
    "is very slow",
    "shows an error",
    "needs to be replaced",
    "keeps disconnecting",
    "access request",
    "stopped working after the update",
    "question",
];

const SENTENCES: &[&str] = &[
    "Since this morning the {o} {p}.",
    "I already restarted everything twice, without success.",
    "Could someone please have a look at it today?",
    "The error message says that the connection was reset by the server.",
    "My colleagues in the same room see the same behaviour.",
    "It worked fine until last Friday; nothing was changed on my side.",
    "Die Kollegen im Büro nebenan haben das gleiche Problem mit dem {o}.",
    "Ich habe das Gerät bereits neu gestartet, leider ohne Erfolg.",
    "The asset tag on the device is CT-{n}.",
    "This blocks the monthly closing, so it is rather urgent.",
    "I attached a screenshot of the message I get when I open the {o}.",
    "You can reach me on extension {n} until 5 pm.",
    "We need this for the new colleague who starts on Monday.",
    "Please let me know if you need any further details.",
];

/// The subject of a thread started by mail `index` (replies use their root's).
fn topic(index: usize, seed: u64) -> String {
    let mut rng = rng_for(seed, index, Stream::Topic);
    let o = OBJECTS.choose(&mut rng).expect("object");
    let p = PROBLEMS.choose(&mut rng).expect("problem");
    let mut s = format!("{}{} {p}", o[..1].to_uppercase(), &o[1..]);
    if rng.gen_bool(0.2) {
        let _ = write!(s, " (#{})", rng.gen_range(1000..9999));
    }
    s
}

fn quoted_intro(parent: usize, seed: u64) -> String {
    let mut rng = rng_for(seed, parent, Stream::Content);
    let who = PEOPLE.choose(&mut rng).expect("people");
    let t = timestamp(parent, seed);
    format!("On {}, {} wrote:\r\n> {}\r\n> ", rfc2822_date(t, 0), who.name, topic(parent, seed))
}

/// Plain text of about `size` bytes: greeting, wrapped paragraphs, signature.
fn body_text(rng: &mut StdRng, name: &str, size: usize, quote: Option<&str>) -> String {
    let mut out = String::with_capacity(size + 200);
    out.push_str(["Hello,", "Hi team,", "Hallo zusammen,", "Good morning,"].choose(rng).expect("greeting"));
    out.push_str("\r\n\r\n");
    let sign = format!("\r\nBest regards\r\n{name}\r\n");
    let quote_len = quote.map_or(0, |q| q.len() + 200);
    let budget = size.saturating_sub(sign.len() + quote_len).max(60);
    let mut first = true;
    while out.len() < budget {
        let mut para = String::new();
        let n = rng.gen_range(2..6);
        for _ in 0..n {
            let s = SENTENCES.choose(rng).expect("sentence");
            let s = s
                .replace("{o}", OBJECTS.choose(rng).expect("object"))
                .replace("{p}", PROBLEMS.choose(rng).expect("problem"))
                .replace("{n}", &rng.gen_range(1000..9999).to_string());
            if !para.is_empty() {
                para.push(' ');
            }
            para.push_str(&s);
        }
        if !first {
            out.push_str("\r\n");
        }
        first = false;
        wrap_into(&para, 72, &mut out);
    }
    out.push_str(&sign);
    if let Some(q) = quote {
        out.push_str("\r\n");
        out.push_str(q);
        let mut filler = String::new();
        while filler.len() < 160 {
            filler.push_str(SENTENCES.choose(rng).expect("sentence"));
            filler.push(' ');
        }
        let mut wrapped = String::new();
        wrap_into(filler.trim_end(), 70, &mut wrapped);
        out.push_str(&wrapped.replace("\r\n", "\r\n> "));
        out.truncate(out.trim_end_matches(['>', ' ']).len());
    }
    out
}

fn wrap_into(text: &str, width: usize, out: &mut String) {
    let mut line = 0;
    for word in text.split(' ') {
        if line > 0 && line + 1 + word.chars().count() > width {
            out.push_str("\r\n");
            line = 0;
        } else if line > 0 {
            out.push(' ');
            line += 1;
        }
        out.push_str(word);
        line += word.chars().count();
    }
    out.push_str("\r\n");
}

fn to_html(text: &str) -> String {
    let mut html = String::with_capacity(text.len() * 6 / 5 + 300);
    html.push_str(
        "<html><head><meta http-equiv=\"Content-Type\" content=\"text/html; charset=utf-8\">\r\n\
         <style>p { margin: 0 0 8px 0; font-family: Calibri, sans-serif; }</style></head>\r\n<body>\r\n",
    );
    for para in text.split("\r\n\r\n") {
        html.push_str("<p>");
        for c in para.chars() {
            match c {
                '&' => html.push_str("&amp;"),
                '<' => html.push_str("&lt;"),
                '>' => html.push_str("&gt;"),
                _ => html.push(c),
            }
        }
        html.push_str("</p>\r\n");
    }
    html.push_str("</body></html>");
    html
}

fn pdf_like(rng: &mut StdRng, len: usize) -> Vec<u8> {
    let head = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n";
    let tail = b"\nstartxref\n116\n%%EOF\n";
    let mut v = Vec::with_capacity(len);
    v.extend_from_slice(head);
    while v.len() + tail.len() < len {
        v.push(rng.r#gen());
    }
    v.extend_from_slice(tail);
    v.truncate(len);
    v
}

fn png_like(rng: &mut StdRng, len: usize) -> Vec<u8> {
    let head = b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR\x00\x00\x02\x80\x00\x00\x01\xe0\x08\x02\x00\x00\x00";
    let tail = b"\x00\x00\x00\x00IEND\xaeB`\x82";
    let mut v = Vec::with_capacity(len);
    v.extend_from_slice(head);
    while v.len() + tail.len() < len {
        v.push(rng.r#gen());
    }
    v.extend_from_slice(tail);
    v.truncate(len);
    v
}

fn queue_id(rng: &mut StdRng) -> String {
    const HEX: &[u8] = b"0123456789ABCDEF";
    (0..11).map(|_| HEX[rng.gen_range(0..16)] as char).collect()
}

/// RFC 2047 B-encodes `s` when it is not plain ASCII (one word per ≤ 45 bytes
/// of UTF-8, split at character boundaries, folded onto continuation lines).
fn encode_word(s: &str) -> String {
    if s.is_ascii() {
        return s.to_string();
    }
    let mut words = Vec::new();
    let mut chunk = String::new();
    for c in s.chars() {
        if chunk.len() + c.len_utf8() > 45 {
            words.push(std::mem::take(&mut chunk));
        }
        chunk.push(c);
    }
    if !chunk.is_empty() {
        words.push(chunk);
    }
    words.iter().map(|w| format!("=?UTF-8?B?{}?=", base64(w.as_bytes()))).collect::<Vec<_>>().join("\r\n ")
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let n = (c[0] as u32) << 16 | (*c.get(1).unwrap_or(&0) as u32) << 8 | *c.get(2).unwrap_or(&0) as u32;
        out.push(B64[(n >> 18) as usize & 63] as char);
        out.push(B64[(n >> 12) as usize & 63] as char);
        out.push(if c.len() > 1 { B64[(n >> 6) as usize & 63] as char } else { '=' });
        out.push(if c.len() > 2 { B64[n as usize & 63] as char } else { '=' });
    }
    out
}

/// Appends `data` base64-encoded in lines of 76 characters, each ended by CRLF.
fn base64_lines(data: &[u8], out: &mut Vec<u8>) {
    for line in data.chunks(57) {
        out.extend_from_slice(base64(line).as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

/// Quoted-printable (RFC 2045 6.7) of CRLF text, soft breaks before 76 characters.
fn quoted_printable(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len() * 11 / 10);
    for (i, line) in data.split(|b| *b == b'\n').enumerate() {
        if i > 0 {
            out.push_str("\r\n");
        }
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let mut col = 0;
        for (j, &b) in line.iter().enumerate() {
            let last = j + 1 == line.len();
            let plain = ((b == b' ' || b == b'\t') && !last) || ((33..=126).contains(&b) && b != b'=');
            let piece_len = if plain { 1 } else { 3 };
            if col + piece_len > 75 {
                out.push_str("=\r\n");
                col = 0;
            }
            if plain {
                out.push(b as char);
            } else {
                let _ = write!(out, "={b:02X}");
            }
            col += piece_len;
        }
    }
    out
}

/// `Wed, 01 Jan 2025 09:30:00 +0100` for a UTC timestamp shown in the zone
/// `offset_min` minutes east of UTC.
fn rfc2822_date(utc: i64, offset_min: i32) -> String {
    let local = utc + offset_min as i64 * 60;
    let days = local.div_euclid(86_400);
    let secs = local.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    const WD: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MON: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let sign = if offset_min < 0 { '-' } else { '+' };
    let off = offset_min.abs();
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} {}{:02}{:02}",
        WD[days.rem_euclid(7) as usize],
        d,
        MON[(m - 1) as usize],
        y,
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        sign,
        off / 60,
        off % 60
    )
}

/// Howard Hinnant's days-to-civil algorithm (proleptic Gregorian).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header<'a>(mail: &'a str, name: &str) -> Option<&'a str> {
        let head = &mail[..mail.find("\r\n\r\n").expect("header/body separator")];
        let prefix = format!("{name}: ");
        head.split("\r\n").find_map(|l| l.strip_prefix(prefix.as_str()))
    }

    fn b64_decode(s: &str) -> Vec<u8> {
        let mut out = Vec::new();
        let (mut acc, mut bits) = (0u32, 0);
        for c in s.bytes() {
            let v = match c {
                b'A'..=b'Z' => c - b'A',
                b'a'..=b'z' => c - b'a' + 26,
                b'0'..=b'9' => c - b'0' + 52,
                b'+' => 62,
                b'/' => 63,
                _ => continue,
            };
            acc = acc << 6 | v as u32;
            bits += 6;
            if bits >= 8 {
                bits -= 8;
                out.push((acc >> bits) as u8);
            }
        }
        out
    }

    fn assert_wellformed(mail: &[u8]) {
        for (i, w) in mail.windows(2).enumerate() {
            assert!(!(w[1] == b'\n' && w[0] != b'\r'), "bare LF at {}", i + 1);
        }
        assert!(mail.ends_with(b"\r\n"));
        for line in mail.split(|b| *b == b'\n') {
            assert!(line.len() <= 998, "line of {} bytes", line.len());
        }
        assert!(std::str::from_utf8(mail).is_ok(), "not UTF-8");
    }

    #[test]
    fn same_input_same_mail() {
        let o = GenOptions::default();
        for i in [0, 1, 7, 123, 9_999] {
            assert_eq!(generate_mail(i, 42, &o), generate_mail(i, 42, &o));
            assert_ne!(generate_mail(i, 42, &o), generate_mail(i, 43, &o));
        }
        let a: Vec<_> = generate_corpus(50, 7, &o).collect();
        let b: Vec<_> = (0..50).map(|i| generate_mail(i, 7, &o)).collect();
        assert_eq!(a, b);
    }

    #[test]
    fn golden_values_do_not_drift() {
        // If this changes, stored benchmark corpora and expectations built on
        // them change too: bump it on purpose only.
        let o = GenOptions::default();
        let m = String::from_utf8(generate_mail(3, 1, &o)).expect("utf-8");
        assert_eq!(header(&m, "Message-ID"), Some("<gen-1-3@bench.example>"));
        assert_eq!(rfc2822_date(0, 0), "Thu, 01 Jan 1970 00:00:00 +0000");
        assert_eq!(rfc2822_date(1_736_150_400, 60), "Mon, 06 Jan 2025 09:00:00 +0100");
        assert_eq!(rfc2822_date(1_709_164_800, -300), "Wed, 28 Feb 2024 19:00:00 -0500");
        assert_eq!(base64(b"Man"), "TWFu");
        assert_eq!(base64(b"Ma"), "TWE=");
        assert_eq!(base64(b"M"), "TQ==");
        assert_eq!(encode_word("Jürgen Weiß"), "=?UTF-8?B?SsO8cmdlbiBXZWnDnw==?=");
        assert_eq!(quoted_printable("Grüße = gut \r\nx".as_bytes()), "Gr=C3=BC=C3=9Fe =3D gut=20\r\nx");
    }

    #[test]
    fn mails_are_wellformed_with_unique_ids_and_growing_dates() {
        let o = GenOptions::default();
        let mut ids = std::collections::HashSet::new();
        let mut last = i64::MIN;
        for (i, m) in generate_corpus(300, 99, &o).enumerate() {
            assert_wellformed(&m);
            let s = String::from_utf8(m).expect("utf-8");
            let id = header(&s, "Message-ID").expect("Message-ID").to_string();
            assert_eq!(id, format!("<{}>", message_id(i, 99)));
            assert!(ids.insert(id));
            assert!(header(&s, "From").is_some() && header(&s, "Date").is_some());
            let ts = timestamp(i, 99);
            assert!(ts > last, "dates must grow");
            last = ts;
        }
    }

    #[test]
    fn sizes_are_near_the_target() {
        for target in [4 * 1024, 10 * 1024, 64 * 1024] {
            let o = GenOptions { target_size: target, ..GenOptions::default() };
            let sizes: Vec<usize> = generate_corpus(200, 5, &o).map(|m| m.len()).collect();
            let avg = sizes.iter().sum::<usize>() as f64 / sizes.len() as f64;
            assert!((avg - target as f64).abs() < target as f64 * 0.15, "target {target}: average {avg}");
            for s in &sizes {
                assert!(
                    *s as f64 > target as f64 * 0.5 && (*s as f64) < target as f64 * 1.6,
                    "target {target}: size {s}"
                );
            }
        }
    }

    #[test]
    fn the_mix_has_all_shapes() {
        let o = GenOptions::default();
        let (mut plain, mut alt, mut mixed) = (0, 0, 0);
        for m in generate_corpus(400, 11, &o) {
            let s = String::from_utf8(m).expect("utf-8");
            match header(&s, "Content-Type").expect("Content-Type") {
                t if t.starts_with("text/plain") => plain += 1,
                t if t.starts_with("multipart/alternative") => alt += 1,
                t if t.starts_with("multipart/mixed") => mixed += 1,
                t => panic!("unexpected {t}"),
            }
        }
        assert!(plain > 150 && alt > 90 && mixed > 30, "{plain} {alt} {mixed}");
    }

    #[test]
    fn replies_point_backwards() {
        let o = GenOptions::default();
        let n = 1_000;
        let mut replies = 0;
        for (i, m) in generate_corpus(n, 3, &o).enumerate() {
            let s = String::from_utf8(m).expect("utf-8");
            match reply_target(i, 3, &o) {
                Some(t) => {
                    replies += 1;
                    assert!(t < i);
                    let want = format!("<{}>", message_id(t, 3));
                    assert_eq!(header(&s, "In-Reply-To"), Some(want.as_str()));
                    let refs = &s[s.find("References:").expect("References")..];
                    let refs = &refs[..refs.find("\r\nX-Mailer").expect("end of References")];
                    assert!(refs.trim_end().ends_with(&want), "References ends with the parent");
                    let subject = header(&s, "Subject").expect("Subject");
                    // Same topic as the thread root.
                    let mut root = t;
                    while let Some(p) = reply_target(root, 3, &o) {
                        root = p;
                    }
                    assert_eq!(subject, format!("Re: {}", topic(root, 3)));
                }
                None => {
                    assert!(header(&s, "In-Reply-To").is_none());
                    assert!(!s.contains("\r\nReferences:"));
                }
            }
        }
        assert!((60..=140).contains(&replies), "{replies} replies in {n}");
        assert_eq!(reply_target(0, 3, &GenOptions { reply_ratio: 1.0, ..o.clone() }), None);
        assert!((1..200).all(|i| { reply_target(i, 3, &GenOptions { reply_ratio: 1.0, ..o.clone() },).is_some() }));
        assert!((0..200).all(|i| { reply_target(i, 3, &GenOptions { reply_ratio: 0.0, ..o.clone() },).is_none() }));
    }

    #[test]
    fn attachments_decode_to_their_bytes() {
        let o = GenOptions::default();
        let mut seen = 0;
        for m in generate_corpus(200, 8, &o) {
            let s = String::from_utf8(m).expect("utf-8");
            if let Some(pos) = s.find("Content-Transfer-Encoding: base64\r\n\r\n") {
                let body = &s[pos + 37..];
                let body = &body[..body.find("--=_mixed").expect("closing boundary")];
                let data = b64_decode(body);
                assert!(data.starts_with(b"%PDF-") || data.starts_with(b"\x89PNG"));
                assert!(body.split("\r\n").all(|l| l.len() <= 76));
                seen += 1;
            }
        }
        assert!(seen > 10);
    }

    #[test]
    fn large_attachment_has_exact_size() {
        for n in [0usize, 1, 2, 3, 56, 57, 58, 1_000_003] {
            let m = large_attachment_mail(n);
            assert_wellformed(&m);
            let s = std::str::from_utf8(&m).expect("ascii");
            let start = s.find("Content-Transfer-Encoding: base64\r\n\r\n").expect("part") + 37;
            let body = &s[start..s.rfind("--=_large_").expect("closing boundary")];
            let lines: Vec<&str> = body.split("\r\n").collect();
            assert!(lines.iter().all(|l| l.len() <= 76));
            assert!(lines.iter().rev().skip(2).all(|l| l.len() == 76), "all but the last line are full");
            assert_eq!(b64_decode(body).len(), n);
        }
        assert_eq!(large_attachment_mail(4096), large_attachment_mail(4096));
    }
}
