//! Subject normalisation: the words mail clients put before a subject when
//! replying or forwarding, in the languages service desks meet.

/// Reply and forward markers, compared case-insensitively, each followed by
/// an optional `[n]` or `(n)` counter and a colon.
const MARKERS: &[&str] = &[
    "re", "aw", "antw", "antwort", "sv", "vs", "vl", "ref", "réf", "rif", "odp", "yn", "fwd", "fw", "wg", "tr", "rv",
    "enc", "i", "doorst", "trs", "fs",
];

/// `"Re: AW: Fwd:  Printer"` → `"Printer"`. Only leading markers go; a colon
/// elsewhere in the subject stays.
pub fn strip_reply_prefixes(subject: &str) -> &str {
    let mut rest = subject.trim();
    while let Some(next) = strip_one(rest) {
        rest = next.trim_start();
    }
    rest
}

/// Whether the subject starts with a reply or forward marker.
pub fn has_reply_prefix(subject: &str) -> bool {
    strip_one(subject.trim()).is_some()
}

fn strip_one(text: &str) -> Option<&str> {
    let word_end = text.find(|c: char| !c.is_alphabetic()).unwrap_or(text.len());
    let word = &text[..word_end];
    if word.is_empty() || !MARKERS.iter().any(|m| m.eq_ignore_ascii_case(word) || word.to_lowercase() == *m) {
        return None;
    }
    let mut rest = &text[word_end..];
    // Counters some clients add: "Re[2]:", "AW(3):".
    for (open, close) in [('[', ']'), ('(', ')')] {
        if let Some(inner) = rest.strip_prefix(open) {
            let end = inner.find(close)?;
            if !inner[..end].bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            rest = &inner[end + 1..];
        }
    }
    // "Réf. :" and "RE :" (French typography) put a dot or a space before the colon.
    let rest = rest.strip_prefix('.').unwrap_or(rest).trim_start_matches(' ');
    rest.strip_prefix(':')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn strips_prefix_chains() {
        assert_eq!(strip_reply_prefixes("Re: AW: Fwd: WG: SV: RE : Printer"), "Printer");
        assert_eq!(strip_reply_prefixes("Re[2]: AW(3): x"), "x");
        assert_eq!(strip_reply_prefixes("Réf. : demande"), "demande");
        assert_eq!(strip_reply_prefixes("Meeting: Monday"), "Meeting: Monday");
        assert_eq!(strip_reply_prefixes("Re:"), "");
        assert_eq!(strip_reply_prefixes("Rechnung: offen"), "Rechnung: offen");
        assert!(has_reply_prefix("aw: hallo"));
        assert!(!has_reply_prefix("Hallo"));
    }

    proptest! {
        #[test]
        fn stripping_is_idempotent_and_never_panics(s in any::<String>()) {
            let once = strip_reply_prefixes(&s);
            prop_assert_eq!(strip_reply_prefixes(once), once);
        }
    }
}
