//! [`SealedStore`] on PostgreSQL.

use tokio_postgres::Row;

use super::{PgStore, PgTx};
use crate::Result;
use crate::sealed::{Resealed, SealedRef, SealedStore, SealedValue};

/// Every row of `sql` as a sealed value (its `sealed` column) at the place
/// `at` makes of the row.
fn collect(
    tx: &mut PgTx<'_>,
    out: &mut Vec<SealedValue>,
    sql: &str,
    at: impl Fn(&Row) -> Result<SealedRef>,
) -> Result<()> {
    for row in tx.query(sql, &[])? {
        out.push(SealedValue { at: at(&row)?, sealed: row.try_get("sealed")? });
    }
    Ok(())
}

impl SealedStore for PgStore {
    fn sealed_values(&self) -> Result<Vec<SealedValue>> {
        // One read transaction: every value as of one moment.
        self.read(|tx| {
            let mut out = Vec::new();
            collect(
                tx,
                &mut out,
                "SELECT id, name, sealed_secret AS sealed FROM mailboxes WHERE sealed_secret IS NOT NULL",
                |r| Ok(SealedRef::MailboxPassword { mailbox_id: r.try_get("id")?, mailbox_name: r.try_get("name")? }),
            )?;
            collect(
                tx,
                &mut out,
                "SELECT id, sealed_secret AS sealed FROM tenants WHERE sealed_secret IS NOT NULL",
                |r| Ok(SealedRef::TenantSecret { tenant_id: r.try_get("id")? }),
            )?;
            collect(
                tx,
                &mut out,
                "SELECT id, sealed_certificate AS sealed FROM tenants WHERE sealed_certificate IS NOT NULL",
                |r| Ok(SealedRef::TenantCertificate { tenant_id: r.try_get("id")? }),
            )?;
            collect(
                tx,
                &mut out,
                "SELECT id, sealed_refresh_token AS sealed FROM connections WHERE sealed_refresh_token IS NOT NULL",
                |r| Ok(SealedRef::RefreshToken { connection_id: r.try_get("id")? }),
            )?;
            collect(tx, &mut out, "SELECT connection_id, resource, sealed_token AS sealed FROM access_tokens", |r| {
                Ok(SealedRef::AccessToken {
                    connection_id: r.try_get("connection_id")?,
                    resource: r.try_get("resource")?,
                })
            })?;
            collect(tx, &mut out, "SELECT state, sealed_verifier AS sealed FROM auth_flows", |r| {
                Ok(SealedRef::AuthFlowVerifier { state: r.try_get("state")? })
            })?;
            collect(
                tx,
                &mut out,
                "SELECT id, name, sealed_reply_secret AS sealed FROM mailboxes WHERE sealed_reply_secret IS NOT NULL",
                |r| {
                    Ok(SealedRef::MailboxReplyPassword {
                        mailbox_id: r.try_get("id")?,
                        mailbox_name: r.try_get("name")?,
                    })
                },
            )?;
            collect(tx, &mut out, "SELECT id, sealed_secret AS sealed FROM webhooks", |r| {
                Ok(SealedRef::WebhookSecret { webhook_id: r.try_get("id")? })
            })?;
            collect(tx, &mut out, "SELECT mailbox_id, sealed_client_state AS sealed FROM push_subscriptions", |r| {
                Ok(SealedRef::PushClientState { mailbox_id: r.try_get("mailbox_id")? })
            })?;
            Ok(out)
        })
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
                    SealedRef::MailboxPassword { mailbox_id, .. } => tx.exec(
                        "UPDATE mailboxes SET sealed_secret = $2 WHERE id = $1 AND sealed_secret = $3",
                        &[mailbox_id, new, old],
                    )?,
                    SealedRef::TenantSecret { tenant_id } => tx.exec(
                        "UPDATE tenants SET sealed_secret = $2 WHERE id = $1 AND sealed_secret = $3",
                        &[tenant_id, new, old],
                    )?,
                    SealedRef::TenantCertificate { tenant_id } => tx.exec(
                        "UPDATE tenants SET sealed_certificate = $2 WHERE id = $1 AND sealed_certificate = $3",
                        &[tenant_id, new, old],
                    )?,
                    SealedRef::RefreshToken { connection_id } => tx.exec(
                        "UPDATE connections SET sealed_refresh_token = $2 WHERE id = $1 AND sealed_refresh_token = $3",
                        &[connection_id, new, old],
                    )?,
                    SealedRef::AccessToken { connection_id, resource } => tx.exec(
                        "UPDATE access_tokens SET sealed_token = $3
                         WHERE connection_id = $1 AND resource = $2 AND sealed_token = $4",
                        &[connection_id, resource, new, old],
                    )?,
                    SealedRef::AuthFlowVerifier { state } => tx.exec(
                        "UPDATE auth_flows SET sealed_verifier = $2 WHERE state = $1 AND sealed_verifier = $3",
                        &[state, new, old],
                    )?,
                    SealedRef::MailboxReplyPassword { mailbox_id, .. } => tx.exec(
                        "UPDATE mailboxes SET sealed_reply_secret = $2 WHERE id = $1 AND sealed_reply_secret = $3",
                        &[mailbox_id, new, old],
                    )?,
                    SealedRef::WebhookSecret { webhook_id } => tx.exec(
                        "UPDATE webhooks SET sealed_secret = $2 WHERE id = $1 AND sealed_secret = $3",
                        &[webhook_id, new, old],
                    )?,
                    SealedRef::PushClientState { mailbox_id } => tx.exec(
                        "UPDATE push_subscriptions SET sealed_client_state = $2
                         WHERE mailbox_id = $1 AND sealed_client_state = $3",
                        &[mailbox_id, new, old],
                    )?,
                };
            }
            Ok(replaced as usize)
        })
    }
}
