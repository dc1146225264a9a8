//! Graph change notifications for one mailbox's folder: the subscription
//! that makes Graph POST to the robot when a message arrives — created,
//! renewed and deleted through Graph's `subscription` resource.
//!
//! What a notification carries is not trusted for content: it only says
//! "look now", and the source's delta query finds what changed.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Deserialize;
use serde_json::json;

use crate::graph::{GraphClient, resolve_folder};
use crate::{GraphConfig, SourceError};

/// Longest `clientState` Graph keeps.
pub const MAX_CLIENT_STATE: usize = 128;

/// A subscription as Graph answered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    pub id: String,
    /// When Graph ends it unless renewed.
    pub expires_at: DateTime<Utc>,
}

/// What to subscribe to a mailbox's folder with.
pub struct SubscriptionRequest<'a> {
    /// Where Graph posts change notifications (validated by Graph first).
    pub notification_url: &'a str,
    /// Where Graph posts lifecycle notifications (`reauthorizationRequired`,
    /// `subscriptionRemoved`, `missed`).
    pub lifecycle_url: &'a str,
    /// Echoed in every notification: proves it comes from this subscription.
    pub client_state: &'a str,
    pub expires_at: DateTime<Utc>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SubscriptionAnswer {
    id: String,
    expiration_date_time: String,
}

impl SubscriptionAnswer {
    fn read(answer: serde_json::Value, asked: DateTime<Utc>) -> Result<Subscription, SourceError> {
        let answer: SubscriptionAnswer = serde_json::from_value(answer)
            .map_err(|e| SourceError::transient(format!("Graph answered a subscription without id: {e}")))?;
        // Graph may shorten the lifetime asked for; an unreadable time is
        // taken as the one asked.
        let expires_at =
            DateTime::parse_from_rfc3339(&answer.expiration_date_time).map(|t| t.with_timezone(&Utc)).unwrap_or(asked);
        Ok(Subscription { id: answer.id, expires_at })
    }
}

/// Manages the change-notification subscription of one Graph mailbox.
pub struct GraphSubscriber {
    client: GraphClient,
}

impl GraphSubscriber {
    pub fn new(cfg: GraphConfig) -> Result<Self, SourceError> {
        Ok(Self { client: GraphClient::new(cfg)? })
    }

    fn subscriptions_url(&self, id: Option<&str>) -> String {
        let base = format!("{}/v1.0/subscriptions", self.client.cfg.base_url.trim_end_matches('/'));
        match id {
            Some(id) => format!("{base}/{}", url::form_urlencoded::byte_serialize(id.as_bytes()).collect::<String>()),
            None => base,
        }
    }

    /// Subscribes to messages created in the mailbox's folder. Graph
    /// validates both URLs before it answers, so the robot's web server must
    /// be up and reachable at them.
    pub async fn subscribe(&self, request: &SubscriptionRequest<'_>) -> Result<Subscription, SourceError> {
        let cfg = &self.client.cfg;
        let folder = resolve_folder(&self.client, &cfg.folder, false).await?;
        let body = json!({
            "changeType": "created",
            "notificationUrl": request.notification_url,
            "lifecycleNotificationUrl": request.lifecycle_url,
            "resource": format!("users/{}/mailFolders('{folder}')/messages", cfg.address),
            "expirationDateTime": graph_time(request.expires_at),
            "clientState": request.client_state,
            "latestSupportedTlsVersion": "v1_2",
        });
        let answer = self.client.json(reqwest::Method::POST, &self.subscriptions_url(None), Some(&body)).await?;
        SubscriptionAnswer::read(answer, request.expires_at)
    }

    /// Moves the subscription's end to `expires_at` (which also
    /// reauthorizes it). `None` when Graph no longer knows it.
    pub async fn renew(&self, id: &str, expires_at: DateTime<Utc>) -> Result<Option<Subscription>, SourceError> {
        let body = json!({ "expirationDateTime": graph_time(expires_at) });
        match self.client.json(reqwest::Method::PATCH, &self.subscriptions_url(Some(id)), Some(&body)).await {
            Ok(answer) => SubscriptionAnswer::read(answer, expires_at).map(Some),
            Err(e) if e.http_status() == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Ends the subscription; one Graph no longer knows is ended already.
    pub async fn delete(&self, id: &str) -> Result<(), SourceError> {
        match self.client.json(reqwest::Method::DELETE, &self.subscriptions_url(Some(id)), None).await {
            Err(e) if e.http_status() != Some(404) => Err(e),
            _ => Ok(()),
        }
    }
}

/// Graph's date-time form: UTC with `Z`.
fn graph_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}
