//! Ticket tags in subjects, like `[TKT-000123]`.

/// How ticket numbers are written and recognised in subjects.
///
/// The number is `prefix` + the ticket id zero-padded to `digits`; the tag is
/// the number in square brackets. Recognition is case-insensitive, accepts any
/// number of digits (ids outgrow the padding) and finds the tag anywhere in the
/// subject, so any chain of `Re:`/`AW:`/`Fwd:` prefixes in any language works.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TagFormat {
    pub prefix: String,
    pub digits: usize,
}

impl Default for TagFormat {
    fn default() -> Self {
        Self { prefix: "TKT-".to_string(), digits: 6 }
    }
}

impl TagFormat {
    /// `TKT-000123` for ticket 123.
    pub fn number(&self, id: u64) -> String {
        format!("{}{:0width$}", self.prefix, id, width = self.digits)
    }

    /// `[TKT-000123]` for ticket 123.
    pub fn tag(&self, id: u64) -> String {
        format!("[{}]", self.number(id))
    }

    /// Parses a ticket number as printed (`TKT-000123`, also `[TKT-000123]`
    /// or a bare `123`) back to its id.
    pub fn parse_number(&self, text: &str) -> Option<u64> {
        let text = text.trim().trim_start_matches('[').trim_end_matches(']');
        let digits = strip_prefix_ignore_case(text, &self.prefix).unwrap_or(text);
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse().ok()
    }

    /// The first ticket id tagged in `subject`, if any.
    pub fn find(&self, subject: &str) -> Option<u64> {
        let mut rest = subject;
        while let Some(open) = rest.find('[') {
            let after = &rest[open + 1..];
            if let Some(id) = strip_prefix_ignore_case(after, &self.prefix).and_then(leading_id_then_close) {
                return Some(id);
            }
            rest = after;
        }
        None
    }
}

fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then(|| &text[prefix.len()..])
}

/// `000123]…` → 123; digits must be followed by `]` (optionally after spaces).
fn leading_id_then_close(text: &str) -> Option<u64> {
    let end = text.bytes().position(|b| !b.is_ascii_digit()).unwrap_or(text.len());
    if end == 0 || end > 19 {
        return None;
    }
    text[end..].trim_start().starts_with(']').then(|| text[..end].parse().ok())?
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn formats_numbers_and_tags() {
        let f = TagFormat::default();
        assert_eq!(f.number(123), "TKT-000123");
        assert_eq!(f.tag(7), "[TKT-000007]");
        assert_eq!(f.tag(1234567), "[TKT-1234567]");
    }

    #[test]
    fn finds_tags_through_prefixes_and_case() {
        let f = TagFormat::default();
        assert_eq!(f.find("Re: AW: Fwd: WG: SV: RE : [TKT-000123] Printer"), Some(123));
        assert_eq!(f.find("printer [tkt-000042] still broken"), Some(42));
        assert_eq!(f.find("[TKT-] nothing"), None);
        assert_eq!(f.find("[TKT-12x] nothing"), None);
        assert_eq!(f.find("[ABC-000001] [TKT-000002]"), Some(2));
        assert_eq!(f.find("no tag at all"), None);
        assert_eq!(f.find("[TKT-000009 ]"), Some(9));
    }

    #[test]
    fn custom_prefix() {
        let f = TagFormat { prefix: "HD#".into(), digits: 4 };
        assert_eq!(f.tag(5), "[HD#0005]");
        assert_eq!(f.find("Re: [hd#0005] x"), Some(5));
        assert_eq!(f.find("Re: [TKT-000005] x"), None);
    }

    #[test]
    fn parses_printed_numbers() {
        let f = TagFormat::default();
        assert_eq!(f.parse_number("TKT-000123"), Some(123));
        assert_eq!(f.parse_number("[TKT-000123]"), Some(123));
        assert_eq!(f.parse_number("tkt-9"), Some(9));
        assert_eq!(f.parse_number("42"), Some(42));
        assert_eq!(f.parse_number("TKT-"), None);
        assert_eq!(f.parse_number("abc"), None);
    }

    fn reply_prefix() -> impl Strategy<Value = String> {
        prop::sample::select(vec![
            "Re: ", "RE: ", "AW: ", "Fwd: ", "FW: ", "WG: ", "SV: ", "RE : ", "Antw: ", "Re[2]: ", "Réf. : ",
        ])
        .prop_map(str::to_string)
    }

    proptest! {
        #[test]
        fn tag_survives_any_prefix_chain(
            prefixes in prop::collection::vec(reply_prefix(), 0..8),
            id in 1u64..10_000_000,
            before in "[a-zA-Z0-9 äöü:]{0,20}",
            after in "[a-zA-Z0-9 äöü:\\]]{0,40}",
        ) {
            let f = TagFormat::default();
            let subject = format!("{}{}{} {}", prefixes.concat(), before, f.tag(id), after);
            prop_assert_eq!(f.find(&subject), Some(id));
        }

        #[test]
        fn number_round_trips(id in 0u64..u64::MAX / 10, digits in 1usize..10) {
            let f = TagFormat { prefix: "TKT-".into(), digits };
            prop_assert_eq!(f.parse_number(&f.number(id)), Some(id));
            prop_assert_eq!(f.find(&f.tag(id)), Some(id));
        }

        #[test]
        fn never_panics_on_arbitrary_subjects(subject in any::<String>()) {
            let _ = TagFormat::default().find(&subject);
        }
    }
}
