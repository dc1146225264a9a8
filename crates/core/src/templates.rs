//! The texts of the mails the robot sends: one template per kind of mail
//! (acknowledgement, notification, reply, rejection), per mailbox and
//! language, editable at run time (`mailrobot templates set …`), rendered
//! with minijinja. A built-in template stands in where none is stored.
//!
//! Variables: `ticket` (number, tag, subject, status), `entry` (subject,
//! text, from), `requester` (email, name), `mailbox` (name, address), and
//! for a rejection `rule` (name).

use minijinja::{AutoEscape, Environment, UndefinedBehavior};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::answer::OutgoingKind;

/// Bounds one rendering: a template is an operator's text, but a loop in it
/// must not stall the robot.
const FUEL: u64 = 100_000;
/// The longest rendered text kept.
const RENDERED_LIMIT: usize = 1024 * 1024;

/// The three parts of a mail template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailTemplate {
    pub subject: String,
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
}

/// A template as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredTemplate {
    pub kind: OutgoingKind,
    /// None: every mailbox.
    pub mailbox_id: Option<i64>,
    /// A language tag (`de`, `en-gb`), or empty for any language.
    pub language: String,
    pub template: MailTemplate,
}

/// A rendered mail text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the {part} template: {reason}")]
pub struct TemplateError {
    pub part: &'static str,
    pub reason: String,
}

/// The template used where none is stored.
pub fn builtin(kind: OutgoingKind) -> MailTemplate {
    let (subject, text) = match kind {
        OutgoingKind::Acknowledgement => (
            "{{ ticket.tag }} {{ ticket.subject }}",
            "Hello,\n\nthank you for your message. It is now ticket {{ ticket.number }}: \"{{ ticket.subject }}\".\n\n\
             To add to it, reply to this mail and keep {{ ticket.tag }} in the subject.\n\n\
             This is an automatic answer from {{ mailbox.name }}.\n",
        ),
        OutgoingKind::Notification => (
            "{{ ticket.tag }} {{ ticket.subject }}",
            "Hello,\n\nyour ticket {{ ticket.number }} (\"{{ ticket.subject }}\") is now {{ ticket.status }}.\n\n\
             {% if entry.text %}{{ entry.text }}\n\n{% endif %}\
             To add to it, reply to this mail and keep {{ ticket.tag }} in the subject.\n\n\
             This is an automatic message from {{ mailbox.name }}.\n",
        ),
        OutgoingKind::Reply => ("Re: {{ ticket.tag }} {{ ticket.subject }}", "{{ entry.text }}"),
        OutgoingKind::Rejection => (
            "Not accepted: {{ entry.subject }}",
            "Hello,\n\nyour message \"{{ entry.subject }}\" to {{ mailbox.address }} was not accepted, \
             and no ticket was made of it.\n\nThis is an automatic answer from {{ mailbox.name }}.\n",
        ),
    };
    MailTemplate { subject: subject.into(), text: text.into(), html: None }
}

fn environment(strict: bool) -> Environment<'static> {
    let mut env = Environment::new();
    env.set_fuel(Some(FUEL));
    env.set_undefined_behavior(if strict { UndefinedBehavior::Strict } else { UndefinedBehavior::Chainable });
    // Only the HTML part escapes what it inserts.
    env.set_auto_escape_callback(|name| if name == "html" { AutoEscape::Html } else { AutoEscape::None });
    env
}

fn render_part(env: &Environment<'_>, part: &'static str, source: &str, vars: &Value) -> Result<String, TemplateError> {
    let error = |e: minijinja::Error| TemplateError { part, reason: e.to_string() };
    let template = env.template_from_named_str(part, source).map_err(error)?;
    // Written into a bounded buffer: a loop over a large text stops at the
    // limit instead of filling memory first.
    let mut buffer = BoundedBuffer(Vec::new());
    template.render_captured_to(vars, &mut buffer).map_err(|e| {
        if buffer.0.len() >= RENDERED_LIMIT {
            TemplateError { part, reason: format!("renders to more than {RENDERED_LIMIT} bytes") }
        } else {
            error(e)
        }
    })?;
    let mut out = String::from_utf8_lossy(&buffer.0).into_owned();
    if part == "subject" {
        // A subject is one line.
        out = out.split_whitespace().collect::<Vec<_>>().join(" ");
    }
    Ok(out)
}

/// A writer that refuses to grow past [`RENDERED_LIMIT`].
struct BoundedBuffer(Vec<u8>);

impl std::io::Write for BoundedBuffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if self.0.len() + bytes.len() > RENDERED_LIMIT {
            self.0.resize(RENDERED_LIMIT, 0);
            return Err(std::io::Error::other("the rendered text is too long"));
        }
        self.0.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn render_with(env: &Environment<'_>, template: &MailTemplate, vars: &Value) -> Result<Rendered, TemplateError> {
    Ok(Rendered {
        subject: render_part(env, "subject", &template.subject, vars)?,
        text: render_part(env, "text", &template.text, vars)?,
        html: template.html.as_deref().map(|h| render_part(env, "html", h, vars)).transpose()?,
    })
}

/// Renders `template`; a variable it does not know renders empty.
pub fn render(template: &MailTemplate, vars: &Value) -> Result<Rendered, TemplateError> {
    render_with(&environment(false), template, vars)
}

/// Renders `template` with sample values, strictly (an unknown variable is
/// an error): what `templates set` checks before it stores a template.
pub fn check(kind: OutgoingKind, template: &MailTemplate) -> Result<Rendered, TemplateError> {
    render_with(&environment(true), template, &sample_vars(kind))
}

/// Sample values for previews and checks.
pub fn sample_vars(kind: OutgoingKind) -> Value {
    let mut vars = json!({
        "ticket": {"number": "#123", "tag": "[#123]", "subject": "Printer on floor 3 smokes", "status": "open"},
        "entry": {
            "subject": "Printer on floor 3 smokes",
            "text": if kind == OutgoingKind::Reply { "We sent a technician." } else { "It smokes since this morning." },
            "from": "ann@example.com",
        },
        "requester": {"email": "ann@example.com", "name": "Ann Example"},
        "mailbox": {"name": "support", "address": "support@example.com"},
    });
    // What each kind has at run time, and no more: a check with the
    // samples then catches a variable the kind never gets.
    if kind == OutgoingKind::Rejection {
        vars.as_object_mut().map(|v| v.remove("ticket"));
        vars["rule"] = json!({"name": "sample rule"});
    }
    vars
}

/// The languages a mail asks for, best first: its `Content-Language` and
/// `Accept-Language` tags (lower case), each followed by its primary subtag.
pub fn mail_languages(header_block: &str) -> Vec<String> {
    let mut languages = Vec::new();
    for (name, value) in crate::fingerprint::header_fields(header_block.as_bytes()) {
        if !(name.eq_ignore_ascii_case(b"content-language") || name.eq_ignore_ascii_case(b"accept-language")) {
            continue;
        }
        for tag in String::from_utf8_lossy(&value).split(',') {
            let tag = tag.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
            if tag.is_empty() || !tag.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                continue;
            }
            let primary = tag.split('-').next().unwrap_or("").to_string();
            for t in [tag, primary] {
                if !languages.contains(&t) {
                    languages.push(t);
                }
            }
        }
    }
    languages
}

/// The stored template for `kind` that fits best: the mailbox's before the
/// global one, for the first of `languages` that has one, then the
/// language-neutral one. None: use [`builtin`].
pub fn choose<'a>(
    stored: &'a [StoredTemplate],
    kind: OutgoingKind,
    mailbox_id: i64,
    languages: &[String],
) -> Option<&'a StoredTemplate> {
    let find = |language: &str, mailbox: Option<i64>| {
        stored.iter().find(|t| t.kind == kind && t.mailbox_id == mailbox && t.language == language)
    };
    for language in languages.iter().map(String::as_str).chain(std::iter::once("")) {
        if let Some(t) = find(language, Some(mailbox_id)).or_else(|| find(language, None)) {
            return Some(t);
        }
    }
    None
}

/// Renders the best stored template for `kind`, else the built-in one; a
/// stored template that fails to render falls back to the built-in one
/// (the mail is still sent), with the reason.
pub fn render_best(
    stored: &[StoredTemplate],
    kind: OutgoingKind,
    mailbox_id: i64,
    languages: &[String],
    vars: &Value,
) -> (Rendered, Option<TemplateError>) {
    if let Some(t) = choose(stored, kind, mailbox_id, languages) {
        match render(&t.template, vars) {
            Ok(rendered) => return (rendered, None),
            Err(e) => {
                let fallback = render(&builtin(kind), vars).expect("the built-in templates render");
                return (fallback, Some(e));
            }
        }
    }
    (render(&builtin(kind), vars).expect("the built-in templates render"), None)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KINDS: [OutgoingKind; 4] =
        [OutgoingKind::Acknowledgement, OutgoingKind::Notification, OutgoingKind::Reply, OutgoingKind::Rejection];

    #[test]
    fn the_built_in_templates_render_strictly_with_the_sample() {
        for kind in KINDS {
            let r = check(kind, &builtin(kind)).unwrap();
            assert!(!r.subject.is_empty() && !r.text.is_empty(), "{kind:?}");
        }
        let ack = check(OutgoingKind::Acknowledgement, &builtin(OutgoingKind::Acknowledgement)).unwrap();
        assert_eq!(ack.subject, "[#123] Printer on floor 3 smokes");
        assert!(ack.text.contains("ticket #123"), "{}", ack.text);
    }

    #[test]
    fn html_is_escaped_text_is_not_and_unknown_variables_are_caught_by_check() {
        let t = MailTemplate {
            subject: "{{ ticket.tag }}\n {{ entry.subject }}".into(),
            text: "{{ entry.text }}".into(),
            html: Some("<p>{{ entry.text }}</p>".into()),
        };
        let vars = json!({"ticket": {"tag": "[#1]"}, "entry": {"subject": "a", "text": "<b>&"}});
        let r = render(&t, &vars).unwrap();
        assert_eq!((r.subject.as_str(), r.text.as_str()), ("[#1] a", "<b>&"));
        assert_eq!(r.html.as_deref(), Some("<p>&lt;b&gt;&amp;</p>"));
        let typo = MailTemplate { subject: "{{ tickte.tag }}".into(), text: "x".into(), html: None };
        let e = check(OutgoingKind::Acknowledgement, &typo).unwrap_err();
        assert_eq!(e.part, "subject");
        assert_eq!(render(&typo, &vars).unwrap().subject, "", "lenient at run time");
    }

    #[test]
    fn a_template_that_repeats_a_large_text_stops_at_the_limit() {
        let t = MailTemplate {
            subject: "x".into(),
            text: "{% for i in range(100) %}{{ entry.text }}{% endfor %}".into(),
            html: None,
        };
        let vars = json!({"entry": {"text": "y".repeat(100 * 1024)}});
        let e = render(&t, &vars).unwrap_err();
        assert!(e.reason.contains("more than"), "{e}");
        let rejection = MailTemplate { subject: "{{ ticket.tag }}".into(), text: "x".into(), html: None };
        assert!(check(OutgoingKind::Rejection, &rejection).is_err(), "a rejection has no ticket");
    }

    #[test]
    fn an_endless_template_runs_out_of_fuel() {
        let t = MailTemplate {
            subject: "x".into(),
            text: "{% for a in range(100000) %}{% for b in range(100000) %}.{% endfor %}{% endfor %}".into(),
            html: None,
        };
        let e = render(&t, &json!({})).unwrap_err();
        assert_eq!(e.part, "text");
    }

    #[test]
    fn the_mailbox_and_the_language_choose_the_template() {
        let t = |mailbox: Option<i64>, language: &str, subject: &str| StoredTemplate {
            kind: OutgoingKind::Acknowledgement,
            mailbox_id: mailbox,
            language: language.into(),
            template: MailTemplate { subject: subject.into(), text: "x".into(), html: None },
        };
        let stored = vec![t(None, "", "global"), t(None, "de", "global-de"), t(Some(1), "", "mailbox")];
        let pick = |mailbox, langs: &[&str]| {
            let langs: Vec<String> = langs.iter().map(|s| s.to_string()).collect();
            choose(&stored, OutgoingKind::Acknowledgement, mailbox, &langs).map(|t| t.template.subject.as_str())
        };
        assert_eq!(pick(1, &["de-at", "de"]), Some("global-de"));
        assert_eq!(pick(1, &["fr"]), Some("mailbox"));
        assert_eq!(pick(2, &["fr"]), Some("global"));
        assert_eq!(choose(&stored, OutgoingKind::Rejection, 1, &[]), None);
        assert_eq!(
            mail_languages("Content-Language: de-AT\r\nAccept-Language: en-US, fr;q=0.5\r\n"),
            ["de-at", "de", "en-us", "en", "fr"]
        );
    }
}
