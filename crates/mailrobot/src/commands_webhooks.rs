//! `mailrobot webhook …`: receivers of ticket events, and their deliveries.
//! The UI and the API add webhooks through [`add_webhook`] too.

use anyhow::{Context, bail};
use mailrobot_outbox::WebhookSecret;
use mailrobot_store::{DeliveryFilter, Webhook, WebhookEvent};
use mailrobot_views::{DeliveryJson, WebhookJson};

use crate::app::App;
use crate::cli::WebhookCommand;
use crate::commands::print_json;

/// Adds a webhook after checking its URL and secret; the secret is sealed
/// for the new row. No events means all of them.
pub fn add_webhook(app: &App, url: &str, events: &[WebhookEvent], secret: &str) -> anyhow::Result<Webhook> {
    let parsed = url::Url::parse(url.trim()).with_context(|| format!("{url:?} is not a URL"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        bail!("a webhook URL is http:// or https:// with a host, not {url:?}");
    }
    WebhookSecret::parse(secret)?;
    let mut events: Vec<WebhookEvent> = if events.is_empty() { WebhookEvent::ALL.to_vec() } else { events.to_vec() };
    events.dedup();
    let secret = mailrobot_secrets::Secret::new(secret.trim());
    let webhook = app.outbox.add_webhook(parsed.as_str(), &events, &mut |id| {
        app.secrets.seal_str(&secret, &mailrobot_outbox::secret_context(id))
    })?;
    tracing::info!(webhook = webhook.id, url = %webhook.url, "webhook added");
    Ok(webhook)
}

pub fn webhook_command(app: &App, command: &WebhookCommand) -> anyhow::Result<()> {
    match command {
        WebhookCommand::Add { url, secret_env, events } => {
            let secret = std::env::var(secret_env).map_err(|_| {
                anyhow::anyhow!("environment variable {secret_env} (named by --secret-env) is not set or not UTF-8")
            })?;
            let w = add_webhook(app, url, events, &secret)?;
            let events: Vec<&str> = w.events.iter().map(|e| e.as_str()).collect();
            crate::say!("Webhook #{} added: {} receives {}.", w.id, w.url, events.join(", "));
            crate::say!("`mailrobot serve` delivers; `mailrobot webhook deliveries` shows how each went.");
        }
        WebhookCommand::List { json } => {
            let views = WebhookJson::all(app.outbox.as_ref())?;
            if *json {
                print_json(&serde_json::to_value(&views)?);
            } else {
                for w in &views {
                    let events: Vec<&str> = w.events.iter().map(|e| e.as_str()).collect();
                    let state = if w.enabled { "enabled" } else { "disabled" };
                    crate::say!("#{:<4} {:<8} {:<50} {} ({} waiting)", w.id, state, w.url, events.join(" "), w.pending);
                }
            }
        }
        WebhookCommand::Disable { id } | WebhookCommand::Enable { id } => {
            let enable = matches!(command, WebhookCommand::Enable { .. });
            if !app.outbox.set_webhook_enabled(*id, enable)? {
                bail!("no webhook #{id}; `mailrobot webhook list` shows them");
            }
            crate::say!(
                "Webhook #{id} {}.",
                if enable { "enabled" } else { "disabled: events queue until it is enabled" }
            );
        }
        WebhookCommand::Remove { id } => {
            if !app.outbox.remove_webhook(*id)? {
                bail!("no webhook #{id}; `mailrobot webhook list` shows them");
            }
            crate::say!("Webhook #{id} removed, with its queued deliveries.");
        }
        WebhookCommand::Deliveries { webhook, state, limit, json } => {
            let tag = app.tag_format()?;
            let filter = DeliveryFilter { webhook_id: *webhook, state: *state, before: None, limit: *limit };
            let views: Vec<DeliveryJson> =
                app.outbox.deliveries(&filter)?.iter().map(|d| DeliveryJson::of(d, &tag)).collect();
            if *json {
                print_json(&serde_json::to_value(&views)?);
            } else {
                for d in &views {
                    crate::say!(
                        "{:<6} #{:<4} {:<22} {:<11} {:<9} attempts {:<3} {}",
                        d.id,
                        d.webhook,
                        d.event,
                        d.ticket.as_deref().unwrap_or("-"),
                        d.state,
                        d.attempts,
                        d.last_answer.as_deref().unwrap_or("")
                    );
                }
            }
        }
        WebhookCommand::Resend { id } => {
            if !app.outbox.resend_delivery(*id)? {
                bail!("no delivery {id}; `mailrobot webhook deliveries` shows them");
            }
            crate::say!("Delivery {id} queued again; `mailrobot serve` sends it now.");
        }
    }
    Ok(())
}
