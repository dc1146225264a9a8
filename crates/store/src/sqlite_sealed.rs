//! [`SealedStore`] on SQLite.

use rusqlite::params;

use crate::Result;
use crate::sealed::{Resealed, SealedRef, SealedStore, SealedValue};
use crate::sqlite::SqliteStore;

impl SealedStore for SqliteStore {
    fn sealed_values(&self) -> Result<Vec<SealedValue>> {
        let conn = self.lock();
        let mut out = Vec::new();
        let mut collect = |sql: &str, at: &dyn Fn(&rusqlite::Row<'_>) -> rusqlite::Result<SealedRef>| -> Result<()> {
            let mut stmt = conn.prepare(sql)?;
            let rows = stmt.query_map([], |r| Ok(SealedValue { at: at(r)?, sealed: r.get("sealed")? }))?;
            for row in rows {
                out.push(row?);
            }
            Ok(())
        };
        collect("SELECT id, name, sealed_secret AS sealed FROM mailboxes WHERE sealed_secret IS NOT NULL", &|r| {
            Ok(SealedRef::MailboxPassword { mailbox_id: r.get("id")?, mailbox_name: r.get("name")? })
        })?;
        collect("SELECT id, sealed_secret AS sealed FROM tenants WHERE sealed_secret IS NOT NULL", &|r| {
            Ok(SealedRef::TenantSecret { tenant_id: r.get("id")? })
        })?;
        collect("SELECT id, sealed_certificate AS sealed FROM tenants WHERE sealed_certificate IS NOT NULL", &|r| {
            Ok(SealedRef::TenantCertificate { tenant_id: r.get("id")? })
        })?;
        collect(
            "SELECT id, sealed_refresh_token AS sealed FROM connections WHERE sealed_refresh_token IS NOT NULL",
            &|r| Ok(SealedRef::RefreshToken { connection_id: r.get("id")? }),
        )?;
        collect("SELECT connection_id, resource, sealed_token AS sealed FROM access_tokens", &|r| {
            Ok(SealedRef::AccessToken { connection_id: r.get("connection_id")?, resource: r.get("resource")? })
        })?;
        collect("SELECT state, sealed_verifier AS sealed FROM auth_flows", &|r| {
            Ok(SealedRef::AuthFlowVerifier { state: r.get("state")? })
        })?;
        collect(
            "SELECT id, name, sealed_reply_secret AS sealed FROM mailboxes WHERE sealed_reply_secret IS NOT NULL",
            &|r| Ok(SealedRef::MailboxReplyPassword { mailbox_id: r.get("id")?, mailbox_name: r.get("name")? }),
        )?;
        collect("SELECT id, sealed_secret AS sealed FROM webhooks", &|r| {
            Ok(SealedRef::WebhookSecret { webhook_id: r.get("id")? })
        })?;
        collect("SELECT mailbox_id, sealed_client_state AS sealed FROM push_subscriptions", &|r| {
            Ok(SealedRef::PushClientState { mailbox_id: r.get("mailbox_id")? })
        })?;
        Ok(out)
    }

    fn replace_sealed(&self, values: &[Resealed]) -> Result<usize> {
        self.write(|tx| {
            let mut replaced = 0;
            for v in values {
                let (old, new) = (&v.old.sealed, &v.new);
                // Only where the value is still the one read: a row gone
                // meanwhile took its secret with it, a row changed meanwhile
                // holds a newer secret.
                replaced += match &v.old.at {
                    SealedRef::MailboxPassword { mailbox_id, .. } => tx.execute(
                        "UPDATE mailboxes SET sealed_secret = ?2 WHERE id = ?1 AND sealed_secret = ?3",
                        params![mailbox_id, new, old],
                    )?,
                    SealedRef::TenantSecret { tenant_id } => tx.execute(
                        "UPDATE tenants SET sealed_secret = ?2 WHERE id = ?1 AND sealed_secret = ?3",
                        params![tenant_id, new, old],
                    )?,
                    SealedRef::TenantCertificate { tenant_id } => tx.execute(
                        "UPDATE tenants SET sealed_certificate = ?2 WHERE id = ?1 AND sealed_certificate = ?3",
                        params![tenant_id, new, old],
                    )?,
                    SealedRef::RefreshToken { connection_id } => tx.execute(
                        "UPDATE connections SET sealed_refresh_token = ?2 WHERE id = ?1 AND sealed_refresh_token = ?3",
                        params![connection_id, new, old],
                    )?,
                    SealedRef::AccessToken { connection_id, resource } => tx.execute(
                        "UPDATE access_tokens SET sealed_token = ?3
                         WHERE connection_id = ?1 AND resource = ?2 AND sealed_token = ?4",
                        params![connection_id, resource, new, old],
                    )?,
                    SealedRef::AuthFlowVerifier { state } => tx.execute(
                        "UPDATE auth_flows SET sealed_verifier = ?2 WHERE state = ?1 AND sealed_verifier = ?3",
                        params![state, new, old],
                    )?,
                    SealedRef::MailboxReplyPassword { mailbox_id, .. } => tx.execute(
                        "UPDATE mailboxes SET sealed_reply_secret = ?2 WHERE id = ?1 AND sealed_reply_secret = ?3",
                        params![mailbox_id, new, old],
                    )?,
                    SealedRef::WebhookSecret { webhook_id } => tx.execute(
                        "UPDATE webhooks SET sealed_secret = ?2 WHERE id = ?1 AND sealed_secret = ?3",
                        params![webhook_id, new, old],
                    )?,
                    SealedRef::PushClientState { mailbox_id } => tx.execute(
                        "UPDATE push_subscriptions SET sealed_client_state = ?2
                         WHERE mailbox_id = ?1 AND sealed_client_state = ?3",
                        params![mailbox_id, new, old],
                    )?,
                };
            }
            Ok(replaced)
        })
    }
}
