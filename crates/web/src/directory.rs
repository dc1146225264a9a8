//! The Rules, Templates and Contacts pages: what the CLI's `rules`,
//! `templates` and `contacts` commands do, as forms.

use askama::Template;
use axum::Form;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use mailrobot_core::rules::RuleForm;
use mailrobot_core::{MailTemplate, OutgoingKind};
use mailrobot_store::{NewContact, NewRule, StoreError, TemplateKey};
use serde::Deserialize;

use crate::json::{ContactDetailJson, ContactJson, RuleJson, TemplateJson, TemplatePreviewJson};
use crate::pages::{CsrfForm, Layout, csrf_refused, error_page, not_found, render};
use crate::session::SignedIn;
use crate::{WebError, WebState};

/// A store refusal in words for the page; None: a failure (an error page).
fn refusal(err: &WebError) -> Option<String> {
    match err {
        WebError::Store(StoreError::Invalid(message) | StoreError::NotFound(message)) => Some(message.clone()),
        _ => None,
    }
}

async fn mailbox_names(state: &WebState) -> Result<Vec<(i64, String)>, Response> {
    match state.blocking(|s| s.store.mailboxes()).await {
        Ok(mailboxes) => {
            Ok(mailboxes.into_iter().filter(|m| !crate::mailboxes::is_removed(m)).map(|m| (m.id, m.name)).collect())
        }
        Err(err) => Err(error_page(&err)),
    }
}

fn comma_list(text: &str) -> Vec<String> {
    text.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect()
}

// --- rules ---

#[derive(Template)]
#[template(path = "rules.html")]
struct RulesPage {
    layout: Option<Layout>,
    csrf: String,
    rules: Vec<RuleJson>,
    mailboxes: Vec<(i64, String)>,
    /// `rules test`'s answer, as JSON text, and the journal id it was for.
    tested: Option<(i64, String)>,
    notice: Option<String>,
    message: Option<String>,
}

impl RulesPage {
    fn compact(value: &serde_json::Value) -> String {
        serde_json::to_string(value).unwrap_or_default()
    }
}

async fn show_rules(
    state: &WebState,
    signed_in: &SignedIn,
    tested: Option<(i64, String)>,
    notice: Option<String>,
    message: Option<String>,
) -> Response {
    let rules = match state.blocking(|s| s.directory.rules()).await {
        Ok(rules) => rules,
        Err(err) => return error_page(&err),
    };
    let mailboxes = match mailbox_names(state).await {
        Ok(m) => m,
        Err(response) => return response,
    };
    render(&RulesPage {
        layout: Some(Layout::new(signed_in, "Rules")),
        csrf: signed_in.session.csrf_token.clone(),
        rules: rules.iter().map(RuleJson::of).collect(),
        mailboxes,
        tested,
        notice,
        message,
    })
}

pub async fn rules(State(state): State<WebState>, signed_in: SignedIn) -> Response {
    show_rules(&state, &signed_in, None, None, None).await
}

/// The `Add rule` form.
#[derive(Deserialize)]
pub struct NewRuleForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    mailbox: String,
    #[serde(default)]
    position: String,
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
    #[serde(default)]
    subject_contains: String,
    #[serde(default)]
    subject_regex: String,
    #[serde(default)]
    body_contains: String,
    #[serde(default)]
    header: String,
    #[serde(default)]
    attachment_type: String,
    #[serde(default)]
    classification: String,
    #[serde(default)]
    contact: String,
    #[serde(default)]
    set_queue: String,
    #[serde(default)]
    set_assignee: String,
    #[serde(default)]
    set_category: String,
    #[serde(default)]
    set_priority: String,
    #[serde(default)]
    add_tags: String,
    #[serde(default)]
    forward: String,
    no_acknowledgement: Option<String>,
    ignore: Option<String>,
    reject: Option<String>,
    stop: Option<String>,
}

impl NewRuleForm {
    fn rule_form(&self) -> RuleForm {
        let text = |s: &str| Some(s.to_string());
        RuleForm {
            from: comma_list(&self.from),
            to: comma_list(&self.to),
            subject_contains: text(&self.subject_contains),
            subject_regex: text(&self.subject_regex),
            body_contains: text(&self.body_contains),
            headers: vec![self.header.clone()],
            attachment_type: text(&self.attachment_type),
            classification: text(&self.classification),
            contact: text(&self.contact),
            set_queue: text(&self.set_queue),
            set_assignee: text(&self.set_assignee),
            set_category: text(&self.set_category),
            set_priority: text(&self.set_priority),
            add_tags: comma_list(&self.add_tags),
            forward: text(&self.forward),
            no_acknowledgement: self.no_acknowledgement.is_some(),
            ignore: self.ignore.is_some(),
            reject: self.reject.is_some(),
            stop: self.stop.is_some(),
            ..RuleForm::default()
        }
    }
}

pub async fn add_rule(State(state): State<WebState>, signed_in: SignedIn, Form(form): Form<NewRuleForm>) -> Response {
    if !signed_in.csrf_ok(&form.csrf) {
        return csrf_refused();
    }
    let definition = match form.rule_form().definition() {
        Ok(d) => d,
        Err(e) => return show_rules(&state, &signed_in, None, None, Some(format!("Not added: {e}"))).await,
    };
    let position = match form.position.trim() {
        "" => None,
        p => match p.parse::<i64>() {
            Ok(p) => Some(p),
            Err(_) => {
                let message = "Not added: Position must be a whole number.".to_string();
                return show_rules(&state, &signed_in, None, None, Some(message)).await;
            }
        },
    };
    let mailbox_id = form.mailbox.trim().parse::<i64>().ok();
    let rule = NewRule { name: form.name.trim().to_string(), mailbox_id, position, definition };
    match state.blocking(move |s| s.directory.add_rule(&rule)).await {
        Ok(r) => show_rules(&state, &signed_in, None, Some(format!("Rule {} ({}) added.", r.id, r.name)), None).await,
        Err(err) => match refusal(&err) {
            Some(message) => show_rules(&state, &signed_in, None, None, Some(format!("Not added: {message}"))).await,
            None => error_page(&err),
        },
    }
}

pub async fn remove_rule(
    State(state): State<WebState>,
    signed_in: SignedIn,
    Path(id): Path<i64>,
    Form(form): Form<CsrfForm>,
) -> Response {
    if !signed_in.csrf_ok(&form.csrf) {
        return csrf_refused();
    }
    match state.blocking(move |s| s.directory.remove_rule(id)).await {
        Ok(true) => Redirect::to("/rules").into_response(),
        Ok(false) => not_found("There is no such rule."),
        Err(err) => error_page(&err),
    }
}

#[derive(Deserialize)]
pub struct TestForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    message: String,
}

/// `Test rules`: what the rules would do to a journaled mail.
pub async fn test_rules(State(state): State<WebState>, signed_in: SignedIn, Form(form): Form<TestForm>) -> Response {
    if !signed_in.csrf_ok(&form.csrf) {
        return csrf_refused();
    }
    let Ok(id) = form.message.trim().parse::<i64>() else {
        return show_rules(&state, &signed_in, None, None, Some("Give a journal id (a number).".into())).await;
    };
    let tag = state.tag.clone();
    match state.blocking(move |s| s.directory.test_rules(id, &tag)).await {
        Ok(test) => {
            let text = serde_json::to_string_pretty(&test).unwrap_or_default();
            show_rules(&state, &signed_in, Some((id, text)), None, None).await
        }
        Err(err) => match refusal(&err) {
            Some(message) => show_rules(&state, &signed_in, None, None, Some(message)).await,
            None => error_page(&err),
        },
    }
}

// --- templates ---

#[derive(Template)]
#[template(path = "mail_templates.html")]
struct TemplatesPage {
    layout: Option<Layout>,
    csrf: String,
    templates: Vec<TemplateJson>,
    mailboxes: Vec<(i64, String)>,
    kinds: [&'static str; 4],
    /// The form's values.
    edit: TemplateEdit,
    preview: Option<TemplatePreviewJson>,
    notice: Option<String>,
    message: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct TemplateEdit {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    kind: String,
    /// A mailbox name; empty: every mailbox.
    #[serde(default)]
    mailbox: String,
    #[serde(default)]
    language: String,
    #[serde(default)]
    subject: String,
    #[serde(default)]
    text: String,
    #[serde(default)]
    html: String,
    /// `preview`, `save` or `reset`.
    #[serde(default)]
    action: String,
}

async fn key_of(state: &WebState, edit: &TemplateEdit) -> Result<TemplateKey, String> {
    let kind: OutgoingKind = edit.kind.parse()?;
    let mailbox_id = match edit.mailbox.trim() {
        "" => None,
        name => {
            let mailboxes = mailbox_names(state).await.map_err(|_| "the mailboxes could not be read".to_string())?;
            Some(mailboxes.iter().find(|(_, n)| n == name).map(|(id, _)| *id).ok_or("no such mailbox")?)
        }
    };
    Ok(TemplateKey { kind, mailbox_id, language: edit.language.trim().to_ascii_lowercase() })
}

async fn show_templates(
    state: &WebState,
    signed_in: &SignedIn,
    edit: TemplateEdit,
    preview: Option<TemplatePreviewJson>,
    notice: Option<String>,
    message: Option<String>,
) -> Response {
    let templates = match state.blocking(|s| s.directory.templates()).await {
        Ok(t) => t,
        Err(err) => return error_page(&err),
    };
    let mailboxes = match mailbox_names(state).await {
        Ok(m) => m,
        Err(response) => return response,
    };
    render(&TemplatesPage {
        layout: Some(Layout::new(signed_in, "Templates")),
        csrf: signed_in.session.csrf_token.clone(),
        templates: templates.iter().map(TemplateJson::of).collect(),
        mailboxes,
        kinds: OutgoingKind::ALL.map(OutgoingKind::as_str),
        edit,
        preview,
        notice,
        message,
    })
}

/// The page, with the form filled with the template that applies at
/// `?kind=…&mailbox=…&language=…` (stored, or the built-in one).
pub async fn templates(
    State(state): State<WebState>,
    signed_in: SignedIn,
    Query(mut edit): Query<TemplateEdit>,
) -> Response {
    if edit.kind.is_empty() {
        edit.kind = OutgoingKind::Acknowledgement.as_str().into();
    }
    let key = match key_of(&state, &edit).await {
        Ok(key) => key,
        Err(message) => return show_templates(&state, &signed_in, edit, None, None, Some(message)).await,
    };
    let stored = match state.blocking(|s| s.directory.templates()).await {
        Ok(t) => t,
        Err(err) => return error_page(&err),
    };
    let mailbox = Some(edit.mailbox.clone()).filter(|m| !m.is_empty());
    match TemplatePreviewJson::of(&stored, &key, mailbox) {
        Ok(current) => {
            edit.subject = current.subject.clone();
            edit.text = current.text.clone();
            edit.html = current.html.clone().unwrap_or_default();
            show_templates(&state, &signed_in, edit, Some(current), None, None).await
        }
        Err(e) => show_templates(&state, &signed_in, edit, None, None, Some(e.to_string())).await,
    }
}

/// `Preview`, `Save template` and `Reset to built-in`.
pub async fn save_template(
    State(state): State<WebState>,
    signed_in: SignedIn,
    Form(edit): Form<TemplateEdit>,
) -> Response {
    if !signed_in.csrf_ok(&edit.csrf) {
        return csrf_refused();
    }
    let key = match key_of(&state, &edit).await {
        Ok(key) => key,
        Err(message) => return show_templates(&state, &signed_in, edit, None, None, Some(message)).await,
    };
    let template = MailTemplate {
        subject: edit.subject.clone(),
        text: edit.text.replace("\r\n", "\n"),
        html: Some(edit.html.replace("\r\n", "\n")).filter(|h| !h.trim().is_empty()),
    };
    match edit.action.as_str() {
        "preview" => {
            let vars = mailrobot_core::templates::sample_vars(key.kind);
            match mailrobot_core::templates::check(key.kind, &template) {
                Ok(_) => {
                    let rendered = mailrobot_core::templates::render(&template, &vars).ok();
                    let preview = rendered.map(|r| TemplatePreviewJson {
                        kind: key.kind.as_str().into(),
                        mailbox: Some(edit.mailbox.clone()).filter(|m| !m.is_empty()),
                        language: key.language.clone(),
                        source: "form".into(),
                        subject: template.subject.clone(),
                        text: template.text.clone(),
                        html: template.html.clone(),
                        preview: crate::json::RenderedJson { subject: r.subject, text: r.text, html: r.html },
                    });
                    show_templates(&state, &signed_in, edit, preview, None, None).await
                }
                Err(e) => show_templates(&state, &signed_in, edit, None, None, Some(format!("Not valid: {e}"))).await,
            }
        }
        "reset" => match state.blocking(move |s| s.directory.remove_template(&key)).await {
            Ok(true) => {
                let notice = Some("The built-in template applies again.".to_string());
                show_templates(&state, &signed_in, TemplateEdit::default(), None, notice, None).await
            }
            Ok(false) => {
                let message = Some("There is no stored template there.".to_string());
                show_templates(&state, &signed_in, edit, None, None, message).await
            }
            Err(err) => error_page(&err),
        },
        _ => match state.blocking(move |s| s.directory.set_template(&key, &template)).await {
            Ok(t) => {
                let notice = Some(format!("The {} template is saved.", t.kind));
                show_templates(&state, &signed_in, edit, None, notice, None).await
            }
            Err(err) => match refusal(&err) {
                Some(message) => {
                    show_templates(&state, &signed_in, edit, None, None, Some(format!("Not saved: {message}"))).await
                }
                None => error_page(&err),
            },
        },
    }
}

// --- contacts ---

#[derive(Template)]
#[template(path = "contacts.html")]
struct ContactsPage {
    layout: Option<Layout>,
    csrf: String,
    contacts: Vec<ContactJson>,
    notice: Option<String>,
    message: Option<String>,
}

#[derive(Template)]
#[template(path = "contact.html")]
struct ContactPage {
    layout: Option<Layout>,
    contact: ContactDetailJson,
}

/// A contact's page.
pub fn href(email: &str) -> String {
    format!("/contacts/{}", crate::pages::path_segment(&mailrobot_core::answer::folded(email)))
}

async fn show_contacts(
    state: &WebState,
    signed_in: &SignedIn,
    notice: Option<String>,
    message: Option<String>,
) -> Response {
    match state.blocking(|s| s.directory.contacts()).await {
        Ok(contacts) => render(&ContactsPage {
            layout: Some(Layout::new(signed_in, "Contacts")),
            csrf: signed_in.session.csrf_token.clone(),
            contacts: contacts.iter().map(ContactJson::of).collect(),
            notice,
            message,
        }),
        Err(err) => error_page(&err),
    }
}

pub async fn contacts(State(state): State<WebState>, signed_in: SignedIn) -> Response {
    show_contacts(&state, &signed_in, None, None).await
}

#[derive(Deserialize)]
pub struct NewContactForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    organisation: String,
}

pub async fn add_contact(
    State(state): State<WebState>,
    signed_in: SignedIn,
    Form(form): Form<NewContactForm>,
) -> Response {
    if !signed_in.csrf_ok(&form.csrf) {
        return csrf_refused();
    }
    let new = NewContact { email: form.email, name: Some(form.name), organisation: Some(form.organisation) };
    match state.blocking(move |s| s.directory.add_contact(&new)).await {
        Ok(c) => show_contacts(&state, &signed_in, Some(format!("Contact {} saved.", c.email)), None).await,
        Err(err) => match refusal(&err) {
            Some(message) => show_contacts(&state, &signed_in, None, Some(format!("Not saved: {message}"))).await,
            None => error_page(&err),
        },
    }
}

pub async fn contact(State(state): State<WebState>, signed_in: SignedIn, Path(email): Path<String>) -> Response {
    match state.blocking(move |s| s.directory.contact(&email)).await {
        Ok(Some((contact, tickets))) => render(&ContactPage {
            layout: Some(Layout::new(&signed_in, "Contacts")),
            contact: ContactDetailJson::of(&contact, &tickets, &state.tag),
        }),
        Ok(None) => not_found("There is no such contact."),
        Err(err) => error_page(&err),
    }
}
