//! Rotating the master key: `mailrobot secrets status` tells which key
//! sealed each stored secret; `mailrobot secrets reseal` opens every one with
//! the keys loaded (the new one in `MAILROBOT_MASTER_KEY` or the key file,
//! old ones in `MAILROBOT_PREVIOUS_MASTER_KEYS`) and seals it again with the
//! current key, all in one transaction. Afterwards the old keys can go.

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::bail;
use mailrobot_secrets::SecretBox;
use mailrobot_store::{Resealed, SealedRef};
use serde_json::json;

use crate::app::App;
use crate::commands::print_json;
use crate::mailbox_config::secret_context;

/// The context a stored value was sealed for.
fn context_of(at: &SealedRef) -> String {
    match at {
        SealedRef::MailboxPassword { mailbox_name, .. } => secret_context(mailbox_name),
        SealedRef::WebhookSecret { webhook_id } => mailrobot_outbox::secret_context(*webhook_id),
        SealedRef::MailboxReplyPassword { mailbox_name, .. } => {
            crate::mailbox_config::reply_secret_context(mailbox_name)
        }
        SealedRef::PushClientState { mailbox_id } => crate::graph_push::client_state_context(*mailbox_id),
        other => mailrobot_auth::broker::sealing_context(other).expect("the auth side owns every other value"),
    }
}

/// What a value is, for people (never its content).
fn describe(at: &SealedRef) -> String {
    match at {
        SealedRef::MailboxPassword { mailbox_name, .. } => format!("password of mailbox {mailbox_name}"),
        SealedRef::TenantSecret { tenant_id } => format!("client secret of tenant #{tenant_id}"),
        SealedRef::TenantCertificate { tenant_id } => format!("certificate of tenant #{tenant_id}"),
        SealedRef::RefreshToken { connection_id } => format!("refresh token of connection #{connection_id}"),
        SealedRef::AccessToken { connection_id, resource } => {
            format!("cached access token of connection #{connection_id} for {resource}")
        }
        SealedRef::AuthFlowVerifier { .. } => "pending Setup Authentication".to_string(),
        SealedRef::WebhookSecret { webhook_id } => format!("secret of webhook #{webhook_id}"),
        SealedRef::MailboxReplyPassword { mailbox_name, .. } => format!("SMTP password of mailbox {mailbox_name}"),
        SealedRef::PushClientState { mailbox_id } => {
            format!("clientState of the Graph subscription of mailbox #{mailbox_id}")
        }
    }
}

/// `secrets status`: how many stored secrets each key sealed.
pub fn status(app: &App, json_out: bool) -> anyhow::Result<ExitCode> {
    let values = app.sealed_store.sealed_values()?;
    let current = app.secrets.current_key_id();
    let mut by_key: BTreeMap<String, usize> = BTreeMap::new();
    for v in &values {
        *by_key.entry(SecretBox::key_id_of(&v.sealed).unwrap_or_else(|| "damaged".into())).or_default() += 1;
    }
    let others: usize = by_key.iter().filter(|(k, _)| **k != current).map(|(_, n)| n).sum();
    if json_out {
        print_json(
            &json!({ "current_key": current, "secrets": values.len(), "by_key": by_key, "not_current": others }),
        );
    } else {
        crate::say!("{} stored secrets; current key {current}", values.len());
        for (key, n) in &by_key {
            crate::say!("  {key}: {n}{}", if *key == current { " (current)" } else { "" });
        }
        if others > 0 {
            crate::say!(
                "{others} sealed with another key: run `mailrobot secrets reseal` with that key in MAILROBOT_PREVIOUS_MASTER_KEYS"
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `secrets reseal`: everything under the current key, or nothing changed.
pub fn reseal(app: &App, json_out: bool) -> anyhow::Result<ExitCode> {
    let values = app.sealed_store.sealed_values()?;
    let mut resealed = Vec::new();
    let mut unopened = Vec::new();
    for v in values.iter().filter(|v| app.secrets.needs_reseal(&v.sealed)) {
        let context = context_of(&v.at);
        match app.secrets.open(&v.sealed, &context) {
            Ok(plain) => resealed.push(Resealed { old: v.clone(), new: app.secrets.seal(&plain, &context) }),
            Err(e) => unopened.push(format!("{}: {e}", describe(&v.at))),
        }
    }
    if !unopened.is_empty() {
        bail!(
            "nothing was changed: {} stored secret(s) cannot be opened with the keys loaded — put the key that sealed \
             them in MAILROBOT_PREVIOUS_MASTER_KEYS:\n  {}",
            unopened.len(),
            unopened.join("\n  ")
        );
    }
    // A value changed meanwhile (serve rotated a refresh token) is newer,
    // sealed with the current key, and is left as it is.
    let replaced = app.sealed_store.replace_sealed(&resealed)?;
    if replaced < resealed.len() {
        tracing::info!(changed_meanwhile = resealed.len() - replaced, "secrets changed while re-sealing were kept");
    }
    let (count, already) = (resealed.len(), values.len() - resealed.len());
    tracing::info!(resealed = count, already_current = already, "stored secrets re-sealed");
    if json_out {
        print_json(
            &json!({ "resealed": count, "already_current": already, "current_key": app.secrets.current_key_id() }),
        );
    } else {
        crate::say!(
            "{count} stored secret(s) re-sealed with key {}; {already} already were. The previous keys are no longer needed.",
            app.secrets.current_key_id()
        );
    }
    Ok(ExitCode::SUCCESS)
}
