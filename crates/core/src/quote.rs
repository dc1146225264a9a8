//! The new text of a reply told apart from the history it quotes, so a
//! ticket shows what the sender wrote now with the rest folded away. Only
//! where it is clear: a reply whose quotes are interleaved with answers
//! keeps its whole text as new. The full text is always kept; this only
//! says where the history starts.
//!
//! One pass over the lines (plus a few lines of look-ahead), no regular
//! expressions: it runs on every mail.

/// The new text of a reply: the text before its quoted history (top
/// posting), or after a history quoted at its very start (bottom posting).
/// None when no history was found, or nothing new is left beside it.
pub fn new_text(text: &str) -> Option<&str> {
    let lines = Lines::of(text);
    let new = match trailing_history(&lines) {
        Some(start) => text[..start].trim_end(),
        None => text[leading_history_end(&lines)?..].trim(),
    };
    (!new.trim().is_empty()).then_some(new)
}

/// The lines of a text with their byte offsets, for look-ahead. Each line
/// is kept as written (without its line end) and trimmed: the checks below
/// look at the trimmed line, which is worked out once per line, not once
/// per check.
struct Lines<'a> {
    lines: Vec<Line<'a>>,
}

struct Line<'a> {
    at: usize,
    text: &'a str,
    trimmed: &'a str,
}

impl<'a> Lines<'a> {
    fn of(text: &'a str) -> Self {
        let mut lines = Vec::new();
        let mut at = 0;
        // One scan for all line ends (a search per line cost more than
        // the checks on it).
        for end in memchr::memchr_iter(b'\n', text.as_bytes()).map(|i| i + 1).chain(std::iter::once(text.len())) {
            if end <= at {
                continue; // the text ends with a line end: no line after it
            }
            let line = text[at..end].trim_end_matches(['\r', '\n']);
            lines.push(Line { at, text: line, trimmed: line.trim() });
            at = end;
        }
        Self { lines }
    }

    fn text(&self, i: usize) -> &'a str {
        self.lines.get(i).map_or("", |l| l.text)
    }

    fn trimmed(&self, i: usize) -> &'a str {
        self.lines.get(i).map_or("", |l| l.trimmed)
    }

    fn next_non_blank(&self, from: usize) -> Option<usize> {
        (from..self.lines.len()).find(|&i| !self.trimmed(i).is_empty())
    }
}

/// Whether a trimmed line is quoted.
fn is_quoted(trimmed: &str) -> bool {
    trimmed.starts_with('>')
}

/// Where the history at the end of the text starts: a reply header
/// (Outlook's "-----Original Message-----", its "From: … Sent: …" block, a
/// GroupWise ">>> … >>>" line), or an attribution ("On … wrote:", "Am …
/// schrieb …:") followed by quoted lines, or quoted lines alone, that run
/// to the end.
fn trailing_history(lines: &Lines<'_>) -> Option<usize> {
    let n = lines.lines.len();
    // Where the quoted lines at the end start (blank lines and a last
    // non-quoted signature separator aside).
    let mut tail_quote = n;
    for i in (0..n).rev() {
        let line = lines.trimmed(i);
        if is_quoted(line) {
            tail_quote = i;
        } else if !line.is_empty() {
            break;
        }
    }
    for i in 0..n {
        let (line, trimmed) = (lines.text(i), lines.trimmed(i));
        if is_original_message_separator(trimmed) || is_groupwise_header(trimmed) {
            return Some(lines.lines[i].at);
        }
        if line.is_empty() || is_quoted(trimmed) && i < tail_quote {
            continue;
        }
        if is_rule(trimmed) && lines.next_non_blank(i + 1).is_some_and(|j| j <= i + 2 && is_header_block(lines, j)) {
            return Some(lines.lines[i].at);
        }
        if is_header_block(lines, i) {
            return Some(lines.lines[i].at);
        }
        if let Some(end) = attribution_end(lines, i)
            && lines.next_non_blank(end + 1).is_some_and(|j| j >= tail_quote && j < n)
        {
            return Some(lines.lines[i].at);
        }
        if i == tail_quote && i > 0 {
            return Some(lines.lines[i].at);
        }
    }
    None
}

/// Where the new text starts after a history quoted at the very start
/// (attribution, then quoted lines, then the answer with no more quotes).
fn leading_history_end(lines: &Lines<'_>) -> Option<usize> {
    let first = lines.next_non_blank(0)?;
    let quote_start = match attribution_end(lines, first) {
        Some(end) => lines.next_non_blank(end + 1)?,
        None => first,
    };
    if !is_quoted(lines.trimmed(quote_start)) {
        return None;
    }
    let mut i = quote_start;
    while i < lines.lines.len() && (is_quoted(lines.trimmed(i)) || lines.trimmed(i).is_empty()) {
        i += 1;
    }
    // No interleaving: nothing quoted after the answer.
    if i == lines.lines.len() || (i..lines.lines.len()).any(|j| is_quoted(lines.trimmed(j))) {
        return None;
    }
    Some(lines.lines[i].at)
}

fn starts_with_ignore_case(line: &str, prefix: &str) -> bool {
    line.len() >= prefix.len()
        && line.is_char_boundary(prefix.len())
        && line[..prefix.len()].eq_ignore_ascii_case(prefix)
}

fn ends_with_ignore_case(line: &str, suffix: &str) -> bool {
    line.len() >= suffix.len()
        && line.is_char_boundary(line.len() - suffix.len())
        && line[line.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
}

/// "-----Original Message-----" and its translations (a trimmed line).
fn is_original_message_separator(line: &str) -> bool {
    if !line.starts_with("---") || !line.ends_with("---") {
        return false;
    }
    let words = line.trim_matches('-').trim().to_lowercase();
    [
        "original message",
        "ursprüngliche nachricht",
        "original-nachricht",
        "originalnachricht",
        "message d'origine",
        "mensaje original",
        "messaggio originale",
        "oorspronkelijk bericht",
        "oprindelig meddelelse",
        "ursprungligt meddelande",
        "alkuperäinen viesti",
        "wiadomość oryginalna",
    ]
    .contains(&words.as_str())
}

/// GroupWise: ">>> Name <addr> 26-3-2025 11:02 >>>" (a trimmed line).
fn is_groupwise_header(line: &str) -> bool {
    line.len() > 8 && line.starts_with(">>> ") && line.ends_with(" >>>")
}

/// Outlook Web's line of underscores above its header block (a trimmed
/// line).
fn is_rule(line: &str) -> bool {
    line.len() >= 10 && line.bytes().all(|b| b == b'_')
}

/// Whether a trimmed line starts with one of `labels`, each at most
/// `longest` bytes.
fn label(line: &str, labels: &[&str], longest: usize) -> bool {
    // Plain text made from HTML marks the labels bold: "*From:* …".
    let line = line.trim_start_matches('*');
    // Every label ends with a colon: a line without one that early is
    // none of them (most lines; this spares comparing each label).
    if !line.as_bytes().iter().take(longest).any(|&b| b == b':') {
        return false;
    }
    labels.iter().any(|l| starts_with_ignore_case(line, l))
}

/// The length in bytes of the longest of `labels`.
const fn longest(labels: &[&str]) -> usize {
    let mut i = 0;
    let mut max = 0;
    while i < labels.len() {
        if labels[i].len() > max {
            max = labels[i].len();
        }
        i += 1;
    }
    max
}

const FROM: &[&str] = &["From:", "Von:", "De:", "Van:", "Da:", "Från:", "Fra:", "Od:"];
const SENT: &[&str] =
    &["Sent:", "Date:", "Gesendet:", "Datum:", "Envoyé :", "Envoyé:", "Enviado:", "Verzonden:", "Inviato:", "Skickat:"];
const TO_OR_SUBJECT: &[&str] = &[
    "To:",
    "Subject:",
    "An:",
    "Betreff:",
    "À :",
    "À:",
    "Objet :",
    "Objet:",
    "Para:",
    "Asunto:",
    "Aan:",
    "Onderwerp:",
    "A:",
    "Oggetto:",
    "Till:",
    "Ämne:",
];

/// Outlook's header block: "From: …" with "Sent: …" (or Date) and "To: …"
/// or "Subject: …" in the lines right after.
fn is_header_block(lines: &Lines<'_>, i: usize) -> bool {
    if !label(lines.trimmed(i), FROM, const { longest(FROM) }) {
        return false;
    }
    let next = (i + 1..(i + 6).min(lines.lines.len())).map(|j| lines.trimmed(j));
    let (mut sent, mut to) = (false, false);
    for line in next {
        sent |= label(line, SENT, const { longest(SENT) });
        to |= label(line, TO_OR_SUBJECT, const { longest(TO_OR_SUBJECT) });
    }
    sent && to
}

/// The last line of an attribution starting at line `i` ("On … wrote:",
/// "Am … schrieb …:", "Le … a écrit :"…), which mail programs wrap over two
/// lines when it is long.
fn attribution_end(lines: &Lines<'_>, i: usize) -> Option<usize> {
    let first = lines.trimmed(i);
    const OPENERS: &[&str] = &["On ", "Am ", "Le ", "El ", "Il ", "Op ", "Den ", "W dniu "];
    // Each opener is a word of at most three letters and a space: most
    // lines start with a longer word and need no comparison.
    if !first.as_bytes().iter().take(4).any(|&b| b == b' ')
        || !OPENERS.iter().any(|o| starts_with_ignore_case(first, o))
    {
        return None;
    }
    let ends = |line: &str| {
        let line = line.trim_end();
        ends_with_ignore_case(line, "wrote:")
            || ends_with_ignore_case(line, "a écrit :")
            || ends_with_ignore_case(line, "a écrit:")
            || ends_with_ignore_case(line, "escribió:")
            || ends_with_ignore_case(line, "ha scritto:")
            || (line.ends_with(':')
                && (line.contains(" schrieb") || line.contains(" schreef") || line.contains(" skrev")))
    };
    if ends(first) {
        return Some(i);
    }
    let second = lines.trimmed(i + 1);
    (!second.is_empty() && !is_quoted(second) && ends(lines.text(i + 1))).then_some(i + 1)
}

/// Where the quoted history of an HTML body starts: the byte offset of the
/// tag that opens it (Gmail's gmail_quote, Outlook's divRplyFwdMsg or its
/// header block's top border, Thunderbird's moz-cite-prefix, a cited
/// blockquote). None when there is none or nothing comes before it.
pub fn html_quote_start(html: &str) -> Option<usize> {
    // ASCII lower-casing keeps every byte offset.
    let lower = html.to_ascii_lowercase();
    const MARKERS: &[&str] = &[
        "gmail_quote",
        "divrplyfwdmsg",
        "appendonsend",
        "moz-cite-prefix",
        "type=\"cite\"",
        "type=cite",
        "yahoo_quoted",
        "border-top:solid #e1e1e1",
        "border-top:solid #b5c4df",
    ];
    let at = MARKERS.iter().filter_map(|m| lower.find(m)).min()?;
    // The tag the marker stands in.
    let open = lower[..at].rfind('<')?;
    if lower[open..at].contains('>') {
        return None;
    }
    let before = &html[..open];
    let visible = mail_parser::decoders::html::html_to_text(before);
    (!visible.trim().is_empty()).then_some(open)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gmail_attribution_and_quotes() {
        let text = "Quick addition: she will also need a Teams license.\n\nOn Wed, 12 Mar 2025 at 08:30, Raj Patel <raj.patel@example.net> wrote:\n> Hi team,\n> our contractor starts on Monday\n>\n";
        assert_eq!(new_text(text), Some("Quick addition: she will also need a Teams license."));
    }

    #[test]
    fn a_wrapped_attribution() {
        let text = "Thanks!\n\nOn Wed, 12 Mar 2025 at 08:30, Raj Patel with a long name <\nraj.patel@example.net> wrote:\n\n> Hi\n";
        assert_eq!(new_text(text), Some("Thanks!"));
    }

    #[test]
    fn outlook_header_block_in_german() {
        let text = "Hallo,\r\nes geht wieder.\r\n\r\nVon: IT Helpdesk <helpdesk@contoso.com>\r\nGesendet: Dienstag, 25. März 2025 16:30\r\nAn: Kurz, Renate <renate.kurz@example.org>\r\nBetreff: [TKT-000042] Drucker\r\n\r\nIhre Anfrage …\r\n";
        assert_eq!(new_text(text), Some("Hallo,\r\nes geht wieder."));
    }

    #[test]
    fn original_message_separator() {
        let text = "Done.\n\n-----Original Message-----\nFrom: a\nSent: b\nsomething\n";
        assert_eq!(new_text(text), Some("Done."));
        let text = "Erledigt.\n\n-----Ursprüngliche Nachricht-----\nVon: a\n";
        assert_eq!(new_text(text), Some("Erledigt."));
    }

    #[test]
    fn groupwise() {
        let text = "Het werkt weer.\n\n>>> IT Helpdesk <helpdesk@contoso.com> 26-3-2025 11:02 >>>\nUw melding is geregistreerd.\n";
        assert_eq!(new_text(text), Some("Het werkt weer."));
    }

    #[test]
    fn bottom_posting() {
        let text = "Am 25.03.2025 um 16:30 schrieb IT Helpdesk:\n> Bitte testen Sie.\n>\n\nGetestet, geht.\n";
        assert_eq!(new_text(text), Some("Getestet, geht."));
    }

    #[test]
    fn interleaved_answers_keep_the_whole_text() {
        let text = "On Mon, Ann wrote:\n> Which printer?\nThe one on floor 2.\n> Since when?\nYesterday.\n";
        assert_eq!(new_text(text), None);
    }

    #[test]
    fn nothing_quoted_or_nothing_new() {
        assert_eq!(new_text("Just a request.\nOn Monday I wrote: nothing.\n"), None);
        assert_eq!(new_text("> only a quote\n"), None);
        assert_eq!(new_text(""), None);
        // A From: line alone is not a header block.
        assert_eq!(new_text("From: the printer on floor 2\nit prints blank pages\n"), None);
    }

    #[test]
    fn a_trailing_quote_without_attribution() {
        assert_eq!(new_text("Yes, please.\n\n> Shall we replace it?\n> Bob\n"), Some("Yes, please."));
    }

    /// The quick checks before comparing labels and openers (a colon
    /// within the longest label's length, a first word of at most three
    /// letters) let through the longest and the non-ASCII ones.
    #[test]
    fn labels_and_openers_at_the_edges_of_the_quick_checks() {
        let swedish =
            "Tack!\n\nFrån: IT <it@example.se>\nSkickat: den 1 april 2025\nTill: Anna\nÄmne: Skrivare\n\nGammal text\n";
        assert_eq!(new_text(swedish), Some("Tack!"));
        let dutch = "Top.\n\nVan: IT\nVerzonden: maandag 31 maart 2025\nOnderwerp: Printer\n\nOude tekst\n";
        assert_eq!(new_text(dutch), Some("Top."));
        let bold = "Thanks\n\n*From:* IT Helpdesk\n*Sent:* Monday\n*To:* Ann\n\nold text\n";
        assert_eq!(new_text(bold), Some("Thanks"));
        let danish = "Ok.\n\nDen 1. apr. 2025 skrev Anna <anna@example.dk>:\n> gammel tekst\n";
        assert_eq!(new_text(danish), Some("Ok."));
        let polish = "W dniu 1.04.2025 Anna wrote:\n> stary tekst\n\nDziękuję.\n";
        assert_eq!(new_text(polish), Some("Dziękuję."));
        // A colon or a short first word alone is no marker.
        assert_eq!(new_text("Note: the printer\nOn floor 2 it jams:\n> quoted\nanswer\n"), None);
    }

    #[test]
    fn html_markers() {
        let gmail = r#"<div dir="ltr">Thanks, works.</div><br><div class="gmail_quote"><div dir="ltr" class="gmail_attr">On Mon wrote:<br></div><blockquote class="gmail_quote">old</blockquote></div>"#;
        assert_eq!(&gmail[..html_quote_start(gmail).unwrap()], r#"<div dir="ltr">Thanks, works.</div><br>"#);
        let owa = r#"<div>Passt.</div><div id="appendonsend"></div><hr><div id="divRplyFwdMsg" dir="ltr"><b>From:</b> x</div>"#;
        assert_eq!(&owa[..html_quote_start(owa).unwrap()], "<div>Passt.</div>");
        let outlook = r#"<p class=MsoNormal>OK<o:p></o:p></p><div><div style='border:none;border-top:solid #E1E1E1 1.0pt;padding:3.0pt 0cm 0cm 0cm'><p><b>From:</b> x</p></div></div>"#;
        assert_eq!(&outlook[..html_quote_start(outlook).unwrap()], "<p class=MsoNormal>OK<o:p></o:p></p><div>");
        let thunderbird = r#"<p>Yes.</p><div class="moz-cite-prefix">On 1.4. X wrote:<br></div><blockquote type="cite">old</blockquote>"#;
        assert_eq!(&thunderbird[..html_quote_start(thunderbird).unwrap()], "<p>Yes.</p>");
        assert_eq!(html_quote_start(r#"<blockquote type="cite">only old</blockquote>"#), None);
        assert_eq!(html_quote_start("<p>no quote</p>"), None);
    }

    proptest::proptest! {
        #[test]
        fn never_panics_and_new_text_lies_within(text in "(On .{0,20} wrote:\n|> .{0,10}\n|Von: x\n|Gesendet: y\n|An: z\n|-----Original Message-----\n|[a-zä ]{0,12}\n|\r\n|>>> a >>>\n){0,12}") {
            if let Some(new) = new_text(&text) {
                proptest::prop_assert!(text.contains(new));
                proptest::prop_assert!(!new.trim().is_empty());
            }
            let _ = html_quote_start(&text);
        }
    }
}
