//! Mailboxes: list, New mailbox for every type, and a mailbox's page with
//! Test connection, Poll now, Disable/Enable and Delete.

use askama::Template;
use axum::Form;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use mailrobot_store::{Mailbox, MailboxKind};
use serde::Deserialize;

use crate::ops::{MailboxForm, PollNow};
use crate::pages::{Layout, csrf_refused, error_page, not_found, path_segment, render};
use crate::session::SignedIn;
use crate::{WebState, views};

/// The Type options: (stored value, label).
const KINDS: [(&str, &str); 5] = [
    ("graph", "Exchange / Microsoft Graph"),
    ("ews", "Exchange / Office 365 (EWS)"),
    ("imap", "IMAP"),
    ("pop3", "POP3"),
    ("drop-folder", "Drop folder"),
];

/// Removed mailboxes keep their journal but leave the lists.
pub fn is_removed(m: &Mailbox) -> bool {
    m.name.contains(" (removed ")
}

pub struct MailboxRow {
    pub name: String,
    pub kind: &'static str,
    pub state: String,
    pub state_class: &'static str,
    pub poll_seconds: i64,
}

#[derive(Template)]
#[template(path = "mailboxes.html")]
struct MailboxesPage {
    layout: Option<Layout>,
    rows: Vec<MailboxRow>,
}

pub async fn list(State(state): State<WebState>, signed_in: SignedIn) -> Response {
    let mailboxes = match state.blocking(|s| s.store.mailboxes()).await {
        Ok(m) => m,
        Err(err) => return error_page(&err),
    };
    let rows = mailboxes
        .iter()
        .filter(|m| !is_removed(m))
        .map(|m| {
            let (state, state_class) = views::mailbox_state(m);
            MailboxRow {
                name: m.name.clone(),
                kind: views::kind_label(m.kind),
                state,
                state_class,
                poll_seconds: m.poll_seconds,
            }
        })
        .collect();
    render(&MailboxesPage { layout: Some(Layout::new(&signed_in, "Mailboxes")), rows })
}

/// The form as submitted (text, so it can be shown back).
#[derive(Deserialize, Clone)]
pub struct FormValues {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub connection: String,
    #[serde(default)]
    pub address: String,
    #[serde(default)]
    pub host: String,
    #[serde(default)]
    pub port: String,
    #[serde(default)]
    pub security: String,
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    pub ews_url: String,
    #[serde(default)]
    pub path: String,
    #[serde(default)]
    pub folder: String,
    #[serde(default)]
    pub processed_folder: String,
    #[serde(default)]
    pub error_folder: String,
    #[serde(default)]
    pub after_processing: String,
    #[serde(default)]
    pub poll_seconds: String,
    #[serde(default)]
    pub max_message_mb: String,
}

impl Default for FormValues {
    fn default() -> Self {
        Self {
            csrf: String::new(),
            name: String::new(),
            kind: "graph".into(),
            connection: String::new(),
            address: String::new(),
            host: String::new(),
            port: String::new(),
            security: "tls".into(),
            username: String::new(),
            password: String::new(),
            ews_url: String::new(),
            path: String::new(),
            folder: "INBOX".into(),
            processed_folder: "Processed".into(),
            error_folder: "Failed".into(),
            after_processing: "move".into(),
            poll_seconds: "60".into(),
            max_message_mb: "50".into(),
        }
    }
}

#[derive(Template)]
#[template(path = "mailbox_form.html")]
struct MailboxFormPage {
    layout: Option<Layout>,
    csrf: String,
    kinds: [(&'static str, &'static str); 5],
    connections: Vec<String>,
    v: FormValues,
    message: Option<String>,
}

async fn form_page(state: &WebState, signed_in: &SignedIn, v: FormValues, message: Option<String>) -> Response {
    let connections = match state.blocking(|s| s.auth.connections()).await {
        Ok(c) => c.into_iter().map(|c| c.name).collect(),
        Err(err) => return error_page(&err),
    };
    render(&MailboxFormPage {
        layout: Some(Layout::new(signed_in, "Mailboxes")),
        csrf: signed_in.session.csrf_token.clone(),
        kinds: KINDS,
        connections,
        v,
        message,
    })
}

pub async fn new_form(State(state): State<WebState>, signed_in: SignedIn) -> Response {
    form_page(&state, &signed_in, FormValues::default(), None).await
}

fn to_form(v: &FormValues) -> Result<MailboxForm, String> {
    let some = |s: &str| Some(s.trim().to_string()).filter(|s| !s.is_empty());
    let number = |s: &str, what: &str| s.trim().parse::<i64>().map_err(|_| format!("{what} must be a whole number"));
    Ok(MailboxForm {
        name: v.name.trim().to_string(),
        kind: v.kind.parse::<MailboxKind>().ok(),
        connection: some(&v.connection),
        address: some(&v.address),
        host: some(&v.host),
        port: match some(&v.port) {
            Some(p) => Some(p.parse().map_err(|_| "Port must be a number from 1 to 65535".to_string())?),
            None => None,
        },
        security: v.security.clone(),
        username: some(&v.username),
        password: Some(v.password.clone()).filter(|p| !p.is_empty()),
        ews_url: some(&v.ews_url),
        path: some(&v.path),
        folder: v.folder.trim().to_string(),
        processed_folder: v.processed_folder.trim().to_string(),
        error_folder: v.error_folder.trim().to_string(),
        after_processing: v.after_processing.clone(),
        poll_seconds: number(&v.poll_seconds, "Poll every (seconds)")?,
        max_message_mb: number(&v.max_message_mb, "Maximum mail size (MB)")?,
    })
}

pub async fn create(State(state): State<WebState>, signed_in: SignedIn, Form(v): Form<FormValues>) -> Response {
    if !signed_in.csrf_ok(&v.csrf) {
        return csrf_refused();
    }
    let result = match to_form(&v) {
        Ok(form) => state.ops.add_mailbox(form).await,
        Err(message) => Err(message),
    };
    match result {
        Ok(m) => Redirect::to(&format!("/mailboxes/{}", path_segment(&m.name))).into_response(),
        Err(message) => {
            // The password is never put back into the page.
            let v = FormValues { password: String::new(), ..v };
            (StatusCode::UNPROCESSABLE_ENTITY, form_page(&state, &signed_in, v, Some(message)).await).into_response()
        }
    }
}

#[derive(Template)]
#[template(path = "mailbox.html")]
struct MailboxPage {
    layout: Option<Layout>,
    csrf: String,
    name: String,
    kind: &'static str,
    state: String,
    state_class: &'static str,
    last_poll: String,
    poll_seconds: i64,
    max_mb: i64,
    settings: Vec<(String, String)>,
    actions: Vec<(&'static str, &'static str)>,
    edit: EditValues,
    /// The live mailbox's folders, once a test or `Load folders` listed them.
    folders: Vec<String>,
    message: Option<String>,
    notice: Option<String>,
}

/// What the settings form shows: the fields this kind has, as stored.
pub struct EditValues {
    pub folder: Option<String>,
    pub processed_folder: Option<String>,
    pub error_folder: Option<String>,
    pub settle: Option<String>,
    pub has_password: bool,
    /// `create`, `accept` or `reject`.
    pub unknown_senders: String,
    pub language: String,
    /// The reply transport's settings as stored (never a password).
    pub reply: ReplyValues,
}

/// What the Replies part of the form shows.
#[derive(Default)]
pub struct ReplyValues {
    pub via: String,
    pub smtp_server: String,
    pub smtp_tls: String,
    pub smtp_username: String,
    pub smtp_connection: String,
    pub from: String,
    pub reply_to: String,
    /// Which transports this kind of mailbox can use: (value, label).
    pub choices: Vec<(&'static str, &'static str)>,
}

impl EditValues {
    fn of(m: &Mailbox) -> Self {
        let text = |key: &str| m.config.get(key).and_then(|v| v.as_str()).map(str::to_string);
        Self {
            folder: text("folder"),
            processed_folder: text("processed_folder"),
            error_folder: text("error_folder"),
            settle: text("settle"),
            has_password: m.has_secret,
            unknown_senders: text("unknown_senders").unwrap_or_else(|| "create".into()),
            language: text("language").unwrap_or_default(),
            reply: {
                let reply = |key: &str| {
                    m.config.pointer(&format!("/reply/{key}")).and_then(|v| v.as_str()).unwrap_or("").to_string()
                };
                let mut choices = vec![("none", "Nothing (no mail is sent)"), ("smtp", "SMTP")];
                match m.kind {
                    mailrobot_store::MailboxKind::Graph => choices.push(("graph", "Microsoft Graph (sendMail)")),
                    mailrobot_store::MailboxKind::Ews => choices.push(("ews", "EWS (CreateItem)")),
                    _ => {}
                }
                ReplyValues {
                    via: Some(reply("via")).filter(|v| !v.is_empty()).unwrap_or_else(|| "none".into()),
                    smtp_server: reply("server"),
                    smtp_tls: Some(reply("tls")).filter(|v| !v.is_empty()).unwrap_or_else(|| "starttls".into()),
                    smtp_username: reply("username"),
                    smtp_connection: reply("connection"),
                    from: reply("from"),
                    reply_to: reply("reply_to"),
                    choices,
                }
            },
        }
    }
}

async fn find(state: &WebState, name: &str) -> Result<Mailbox, Response> {
    let lookup = name.to_string();
    match state.blocking(move |s| s.store.mailbox_by_name(&lookup)).await {
        Ok(Some(m)) if !is_removed(&m) => Ok(m),
        Ok(_) => Err(not_found("No such mailbox.")),
        Err(err) => Err(error_page(&err)),
    }
}

/// The stored settings worth showing (never a secret: none are stored there).
fn settings_of(m: &Mailbox) -> Vec<(String, String)> {
    let label = |key: &str| match key {
        "host" => "Host",
        "port" => "Port",
        "tls" => "Security",
        "username" => "Username",
        "folder" => "Folder",
        "processed_folder" => "Processed folder",
        "error_folder" => "Error folder",
        "settle" => "After processing",
        "address" => "Mailbox address",
        "connection" => "Service connection",
        "path" => "Drop folder path",
        "url" => "EWS URL",
        _ => "",
    };
    m.config
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(key, value)| {
            let text = match value {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Number(n) => n.to_string(),
                _ => return None,
            };
            let name = label(key);
            (!name.is_empty()).then(|| (name.to_string(), text))
        })
        .collect()
}

async fn show(
    state: &WebState,
    signed_in: &SignedIn,
    name: &str,
    message: Option<String>,
    notice: Option<String>,
) -> Response {
    show_with_folders(state, signed_in, name, message, notice, Vec::new()).await
}

async fn show_with_folders(
    state: &WebState,
    signed_in: &SignedIn,
    name: &str,
    message: Option<String>,
    notice: Option<String>,
    folders: Vec<String>,
) -> Response {
    let m = match find(state, name).await {
        Ok(m) => m,
        Err(response) => return response,
    };
    let (state_text, state_class) = views::mailbox_state(&m);
    let toggle = if m.enabled { ("disable", "Disable") } else { ("enable", "Enable") };
    render(&MailboxPage {
        layout: Some(Layout::new(signed_in, "Mailboxes")),
        csrf: signed_in.session.csrf_token.clone(),
        name: m.name.clone(),
        kind: views::kind_label(m.kind),
        state: state_text,
        state_class,
        last_poll: m.last_poll_at.as_deref().map_or_else(|| "never".to_string(), views::short_time),
        poll_seconds: m.poll_seconds,
        max_mb: m.max_message_bytes >> 20,
        settings: settings_of(&m),
        actions: vec![("test", "Test connection"), ("folders", "Load folders"), ("poll", "Poll now"), toggle],
        edit: EditValues::of(&m),
        folders,
        message,
        notice,
    })
}

pub async fn page(State(state): State<WebState>, signed_in: SignedIn, Path(name): Path<String>) -> Response {
    show(&state, &signed_in, &name, None, None).await
}

/// The mailbox page's buttons.
pub async fn action(
    State(state): State<WebState>,
    signed_in: SignedIn,
    Path((name, action)): Path<(String, String)>,
    Form(form): Form<crate::pages::CsrfForm>,
) -> Response {
    if !signed_in.csrf_ok(&form.csrf) {
        return csrf_refused();
    }
    let m = match find(&state, &name).await {
        Ok(m) => m,
        Err(response) => return response,
    };
    let (message, notice) = match action.as_str() {
        "test" => match state.ops.test_mailbox(&m.name).await {
            Ok(test) => {
                let notice = Some(format!("Test connection succeeded: {}", test.said));
                return show_with_folders(&state, &signed_in, &m.name, None, notice, test.folders).await;
            }
            Err(reason) => (Some(format!("Test connection failed: {reason}")), None),
        },
        "folders" => match state.ops.test_mailbox(&m.name).await {
            Ok(test) => {
                let notice = Some(format!(
                    "{} folders loaded from the mailbox: pick them in the fields below.",
                    test.folders.len()
                ));
                return show_with_folders(&state, &signed_in, &m.name, None, notice, test.folders).await;
            }
            Err(reason) => (Some(format!("Could not load the folders: {reason}")), None),
        },
        "poll" => match state.ops.poll_now(&m.name).await {
            Ok(PollNow::Polled(said)) => (None, Some(format!("Poll done: {said}"))),
            Ok(PollNow::Asked(said)) => (None, Some(format!("Poll requested: {said}"))),
            Err(reason) => (Some(format!("Poll failed: {reason}")), None),
        },
        "enable" | "disable" => {
            let enabled = action == "enable";
            let id = m.id;
            if let Err(err) = state.blocking(move |s| s.store.set_mailbox_enabled(id, enabled)).await {
                return error_page(&err);
            }
            (None, Some(format!("Mailbox {} {}.", m.name, if enabled { "enabled" } else { "disabled" })))
        }
        "delete" => {
            let id = m.id;
            if let Err(err) = state.blocking(move |s| s.store.remove_mailbox(id)).await {
                return error_page(&err);
            }
            return Redirect::to("/mailboxes").into_response();
        }
        _ => return not_found("No such action."),
    };
    show(&state, &signed_in, &m.name, message, notice).await
}

/// The confirmation page's `Delete`.
pub async fn delete(
    state: State<WebState>,
    signed_in: SignedIn,
    Path(name): Path<String>,
    form: Form<crate::pages::CsrfForm>,
) -> Response {
    action(state, signed_in, Path((name, "delete".to_string())), form).await
}

#[derive(Deserialize)]
pub struct SettingsForm {
    #[serde(default)]
    csrf: String,
    folder: Option<String>,
    processed_folder: Option<String>,
    error_folder: Option<String>,
    after_processing: Option<String>,
    #[serde(default)]
    poll_seconds: String,
    #[serde(default)]
    max_message_mb: String,
    password: Option<String>,
    unknown_senders: Option<String>,
    language: Option<String>,
    reply_via: Option<String>,
    smtp_server: Option<String>,
    smtp_tls: Option<String>,
    smtp_username: Option<String>,
    smtp_password: Option<String>,
    smtp_connection: Option<String>,
    reply_from: Option<String>,
    reply_to: Option<String>,
}

pub async fn save_settings(
    State(state): State<WebState>,
    signed_in: SignedIn,
    Path(name): Path<String>,
    Form(form): Form<SettingsForm>,
) -> Response {
    if !signed_in.csrf_ok(&form.csrf) {
        return csrf_refused();
    }
    let number = |s: &str, what: &str| {
        let s = s.trim();
        if s.is_empty() {
            Ok(None)
        } else {
            s.parse::<i64>().map(Some).map_err(|_| format!("{what} must be a whole number"))
        }
    };
    let nonempty = |v: Option<String>| v.map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
    let settings = number(&form.poll_seconds, "Poll every (seconds)").and_then(|poll| {
        Ok(crate::ops::MailboxSettingsForm {
            folder: nonempty(form.folder),
            processed_folder: nonempty(form.processed_folder),
            error_folder: nonempty(form.error_folder),
            after_processing: nonempty(form.after_processing),
            poll_seconds: poll,
            max_message_mb: number(&form.max_message_mb, "Maximum mail size (MB)")?,
            password: form.password.filter(|p| !p.is_empty()),
            unknown_senders: nonempty(form.unknown_senders),
            // Empty clears the language.
            language: form.language.map(|l| l.trim().to_string()),
            reply: form.reply_via.is_some().then(|| crate::ops::ReplyForm {
                via: nonempty(form.reply_via),
                smtp_server: nonempty(form.smtp_server),
                smtp_tls: nonempty(form.smtp_tls),
                smtp_username: nonempty(form.smtp_username),
                smtp_password: form.smtp_password.filter(|p| !p.is_empty()),
                smtp_connection: nonempty(form.smtp_connection),
                from: nonempty(form.reply_from),
                // Empty removes it.
                reply_to: form.reply_to.map(|r| r.trim().to_string()),
            }),
        })
    });
    let result = match settings {
        Ok(settings) => state.ops.update_mailbox(&name, settings).await,
        Err(message) => Err(message),
    };
    match result {
        Ok(m) => show(&state, &signed_in, &m.name, None, Some(format!("Mailbox {} saved.", m.name))).await,
        Err(message) => show(&state, &signed_in, &name, Some(format!("Not saved: {message}")), None).await,
    }
}

#[derive(Template)]
#[template(path = "confirm.html")]
struct ConfirmPage {
    layout: Option<Layout>,
    csrf: String,
    title: String,
    text: String,
    action: String,
    button: &'static str,
    back: String,
}

pub async fn confirm_delete(State(state): State<WebState>, signed_in: SignedIn, Path(name): Path<String>) -> Response {
    let m = match find(&state, &name).await {
        Ok(m) => m,
        Err(response) => return response,
    };
    let path = path_segment(&m.name);
    render(&ConfirmPage {
        layout: Some(Layout::new(&signed_in, "Mailboxes")),
        csrf: signed_in.session.csrf_token.clone(),
        title: format!("Delete mailbox {}?", m.name),
        text: "The robot stops reading it. Its mail journal and tickets stay.".into(),
        action: format!("/mailboxes/{path}/delete"),
        button: "Delete",
        back: format!("/mailboxes/{path}"),
    })
}
