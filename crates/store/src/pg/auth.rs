//! [`AuthStore`] on PostgreSQL.
//!
//! Several nodes refresh tokens against one database: the refresh lock is one
//! compare-and-set `UPDATE` whose changed-row count decides, and a Setup
//! Authentication flow is taken with one `DELETE … RETURNING`, so exactly one
//! node (or request) gets it.

use tokio_postgres::Row;

use super::{PgStore, PgTx, now};
use crate::auth::*;
use crate::{ConnectionState, Result, StoreError};

const TENANT_COLUMNS: &str = "id, name, provider, client_id, directory, authority_url, graph_url, ews_url, \
     authorize_url, token_url, sealed_secret IS NOT NULL, secret_set_at, secret_expires_at, \
     sealed_certificate IS NOT NULL, certificate_info, created_at, allow_plaintext";

fn tenant_from_row(r: &Row) -> Result<Tenant> {
    Ok(Tenant {
        id: r.try_get(0)?,
        name: r.try_get(1)?,
        provider: r.try_get(2)?,
        client_id: r.try_get(3)?,
        directory: r.try_get(4)?,
        authority_url: r.try_get(5)?,
        graph_url: r.try_get(6)?,
        ews_url: r.try_get(7)?,
        authorize_url: r.try_get(8)?,
        token_url: r.try_get(9)?,
        has_secret: r.try_get(10)?,
        secret_set_at: r.try_get(11)?,
        secret_expires_at: r.try_get(12)?,
        has_certificate: r.try_get(13)?,
        certificate_info: r.try_get(14)?,
        created_at: r.try_get(15)?,
        allow_plaintext: r.try_get(16)?,
    })
}

const CONNECTION_COLUMNS: &str = "id, name, tenant_id, capability, mode, scopes, state, last_error, \
     sealed_refresh_token IS NOT NULL, authenticated_name, authenticated_upn, authenticated_oid, granted_scopes, \
     authenticated_at, refreshed_at, created_at, updated_at";

fn connection_from_row(r: &Row) -> Result<Connection> {
    Ok(Connection {
        id: r.try_get(0)?,
        name: r.try_get(1)?,
        tenant_id: r.try_get(2)?,
        capability: r.try_get(3)?,
        mode: r.try_get(4)?,
        scopes: split_scopes(r.try_get(5)?),
        state: r.try_get(6)?,
        last_error: r.try_get(7)?,
        has_refresh_token: r.try_get(8)?,
        authenticated_name: r.try_get(9)?,
        authenticated_upn: r.try_get(10)?,
        authenticated_oid: r.try_get(11)?,
        granted_scopes: r.try_get(12)?,
        authenticated_at: r.try_get(13)?,
        refreshed_at: r.try_get(14)?,
        created_at: r.try_get(15)?,
        updated_at: r.try_get(16)?,
    })
}

const AUTH_FLOW_COLUMNS: &str =
    "state, connection_id, sealed_verifier, nonce, redirect_uri, initiator, created_at, expires_at";

fn auth_flow_from_row(r: &Row) -> Result<AuthFlow> {
    Ok(AuthFlow {
        state: r.try_get(0)?,
        connection_id: r.try_get(1)?,
        sealed_verifier: r.try_get(2)?,
        nonce: r.try_get(3)?,
        redirect_uri: r.try_get(4)?,
        initiator: r.try_get(5)?,
        created_at: r.try_get(6)?,
        expires_at: r.try_get(7)?,
    })
}

/// A sealed value of a column that may be NULL, of a row that may not exist.
fn sealed_column(row: Option<Row>) -> Result<Option<Vec<u8>>> {
    Ok(match row {
        Some(row) => row.try_get(0)?,
        None => None,
    })
}

impl AuthStore for PgStore {
    fn add_tenant(&self, new: &NewTenant) -> Result<Tenant> {
        self.write(|tx| {
            if tx.query_opt("SELECT 1 FROM tenants WHERE name = $1", &[&new.name])?.is_some() {
                return Err(StoreError::Exists { what: "tenant", name: new.name.clone() });
            }
            let row = tx.query_one(
                &format!(
                    "INSERT INTO tenants (name, provider, client_id, directory, authority_url, graph_url, ews_url,
                     authorize_url, token_url, sealed_secret, secret_set_at, secret_expires_at, sealed_certificate,
                     certificate_info, created_at, allow_plaintext)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::bytea,
                     CASE WHEN $10::bytea IS NULL THEN NULL ELSE $14::text END, $11, $12, $13, $14::text, $15)
                     RETURNING {TENANT_COLUMNS}"
                ),
                &[
                    &new.name,
                    &new.provider,
                    &new.client_id,
                    &new.directory,
                    &new.authority_url,
                    &new.graph_url,
                    &new.ews_url,
                    &new.authorize_url,
                    &new.token_url,
                    &new.sealed_secret,
                    &new.secret_expires_at,
                    &new.sealed_certificate,
                    &new.certificate_info,
                    &now(),
                    &new.allow_plaintext,
                ],
            )?;
            tenant_from_row(&row)
        })
    }

    fn tenants(&self) -> Result<Vec<Tenant>> {
        self.read(|tx| {
            tx.query(&format!("SELECT {TENANT_COLUMNS} FROM tenants ORDER BY id"), &[])?
                .iter()
                .map(tenant_from_row)
                .collect()
        })
    }

    fn tenant(&self, id: i64) -> Result<Option<Tenant>> {
        self.read(|tx| {
            tx.query_opt(&format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE id = $1"), &[&id])?
                .as_ref()
                .map(tenant_from_row)
                .transpose()
        })
    }

    fn tenant_by_name(&self, name: &str) -> Result<Option<Tenant>> {
        self.read(|tx| {
            tx.query_opt(&format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE name = $1"), &[&name])?
                .as_ref()
                .map(tenant_from_row)
                .transpose()
        })
    }

    fn tenant_secret(&self, id: i64) -> Result<Option<Vec<u8>>> {
        self.read(|tx| sealed_column(tx.query_opt("SELECT sealed_secret FROM tenants WHERE id = $1", &[&id])?))
    }

    fn update_tenant(&self, id: i64, update: &TenantUpdate) -> Result<Tenant> {
        self.write(|tx| {
            let Some(row) = tx.query_opt(
                &format!(
                    "UPDATE tenants SET client_id = $2, directory = $3, authority_url = $4, graph_url = $5,
                     ews_url = $6, secret_expires_at = $7, certificate_info = COALESCE($8, certificate_info)
                     WHERE id = $1 RETURNING {TENANT_COLUMNS}"
                ),
                &[
                    &id,
                    &update.client_id,
                    &update.directory,
                    &update.authority_url,
                    &update.graph_url,
                    &update.ews_url,
                    &update.secret_expires_at,
                    &update.certificate_info,
                ],
            )?
            else {
                return Err(StoreError::Corrupt(format!("no tenant with id {id}")));
            };
            tx.exec(
                "DELETE FROM access_tokens WHERE connection_id IN (SELECT id FROM connections WHERE tenant_id = $1)",
                &[&id],
            )?;
            tenant_from_row(&row)
        })
    }

    fn set_tenant_credentials(
        &self,
        id: i64,
        sealed_secret: Option<&[u8]>,
        sealed_certificate: Option<&[u8]>,
    ) -> Result<()> {
        self.write(|tx| {
            if let Some(sealed) = sealed_secret {
                tx.exec(
                    "UPDATE tenants SET sealed_secret = $2, secret_set_at = $3 WHERE id = $1",
                    &[&id, &sealed, &now()],
                )?;
            }
            if let Some(sealed) = sealed_certificate {
                tx.exec("UPDATE tenants SET sealed_certificate = $2 WHERE id = $1", &[&id, &sealed])?;
            }
            Ok(())
        })
    }

    fn tenant_certificate(&self, id: i64) -> Result<Option<Vec<u8>>> {
        self.read(|tx| sealed_column(tx.query_opt("SELECT sealed_certificate FROM tenants WHERE id = $1", &[&id])?))
    }

    fn add_connection(&self, new: &NewConnection) -> Result<Connection> {
        self.write(|tx| {
            if tx.query_opt("SELECT 1 FROM connections WHERE name = $1", &[&new.name])?.is_some() {
                return Err(StoreError::Exists { what: "connection", name: new.name.clone() });
            }
            let row = tx.query_one(
                &format!(
                    "INSERT INTO connections (name, tenant_id, capability, mode, scopes, created_at, updated_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $6) RETURNING {CONNECTION_COLUMNS}"
                ),
                &[&new.name, &new.tenant_id, &new.capability, &new.mode, &join_scopes(&new.scopes), &now()],
            )?;
            connection_from_row(&row)
        })
    }

    fn connections(&self) -> Result<Vec<Connection>> {
        self.read(|tx| {
            tx.query(&format!("SELECT {CONNECTION_COLUMNS} FROM connections ORDER BY id"), &[])?
                .iter()
                .map(connection_from_row)
                .collect()
        })
    }

    fn connection(&self, id: i64) -> Result<Option<Connection>> {
        self.read(|tx| {
            tx.query_opt(&format!("SELECT {CONNECTION_COLUMNS} FROM connections WHERE id = $1"), &[&id])?
                .as_ref()
                .map(connection_from_row)
                .transpose()
        })
    }

    fn connection_by_name(&self, name: &str) -> Result<Option<Connection>> {
        self.read(|tx| {
            tx.query_opt(&format!("SELECT {CONNECTION_COLUMNS} FROM connections WHERE name = $1"), &[&name])?
                .as_ref()
                .map(connection_from_row)
                .transpose()
        })
    }

    fn set_connection_state(&self, id: i64, state: ConnectionState, last_error: Option<&str>) -> Result<()> {
        self.write(|tx| {
            tx.exec(
                "UPDATE connections SET state = $2, last_error = $3, updated_at = $4 WHERE id = $1",
                &[&id, &state, &last_error, &now()],
            )?;
            if state != ConnectionState::Ready {
                // A connection that cannot refresh must not hand out old tokens either.
                tx.exec("DELETE FROM access_tokens WHERE connection_id = $1", &[&id])?;
            }
            Ok(())
        })
    }

    fn refresh_token(&self, connection_id: i64) -> Result<Option<Vec<u8>>> {
        self.read(|tx| {
            sealed_column(
                tx.query_opt("SELECT sealed_refresh_token FROM connections WHERE id = $1", &[&connection_id])?,
            )
        })
    }

    fn complete_authorization(&self, connection_id: i64, auth: &Authorization) -> Result<()> {
        self.write(|tx| {
            tx.exec(
                "UPDATE connections SET state = 'ready', last_error = NULL, sealed_refresh_token = $2,
                 authenticated_name = $3, authenticated_upn = $4, authenticated_oid = $5, granted_scopes = $6,
                 authenticated_at = $7, refreshed_at = $7, updated_at = $7 WHERE id = $1",
                &[
                    &connection_id,
                    &auth.sealed_refresh_token,
                    &auth.name,
                    &auth.upn,
                    &auth.oid,
                    &auth.granted_scopes,
                    &now(),
                ],
            )?;
            tx.exec("DELETE FROM access_tokens WHERE connection_id = $1", &[&connection_id])?;
            Ok(())
        })
    }

    fn store_refresh(
        &self,
        connection_id: i64,
        sealed_refresh_token: Option<&[u8]>,
        resource: &str,
        token: &CachedToken,
    ) -> Result<()> {
        self.write(|tx| {
            if let Some(sealed) = sealed_refresh_token {
                tx.exec(
                    "UPDATE connections SET sealed_refresh_token = $2, refreshed_at = $3, updated_at = $3 WHERE id = $1",
                    &[&connection_id, &sealed, &now()],
                )?;
            }
            tx.exec(
                "UPDATE connections SET state = 'ready', last_error = NULL WHERE id = $1 AND state <> 'ready'",
                &[&connection_id],
            )?;
            put_token_tx(tx, connection_id, resource, token)
        })
    }

    fn cached_token(&self, connection_id: i64, resource: &str) -> Result<Option<CachedToken>> {
        self.read(|tx| {
            tx.query_opt(
                "SELECT sealed_token, expires_at FROM access_tokens WHERE connection_id = $1 AND resource = $2",
                &[&connection_id, &resource],
            )?
            .map(|r| Ok(CachedToken { sealed_token: r.try_get(0)?, expires_at: r.try_get(1)? }))
            .transpose()
        })
    }

    fn put_token(&self, connection_id: i64, resource: &str, token: &CachedToken) -> Result<()> {
        self.write(|tx| put_token_tx(tx, connection_id, resource, token))
    }

    fn forget_tokens(&self, connection_id: i64) -> Result<()> {
        self.write(|tx| {
            tx.exec("DELETE FROM access_tokens WHERE connection_id = $1", &[&connection_id])?;
            Ok(())
        })
    }

    fn try_lock_refresh(&self, connection_id: i64, owner: &str, until: &str) -> Result<bool> {
        self.write(|tx| {
            // One compare-and-set: the row changes only if the lock is free,
            // expired or already ours, and the changed-row count says which.
            // (Writers serialize on the write lock; the row lock PostgreSQL
            // takes, with its re-check of the WHERE after a wait, would keep
            // this a compare-and-set without it.)
            let taken = tx.exec(
                "UPDATE connections SET refresh_lock_owner = $2, refresh_lock_until = $3
                 WHERE id = $1 AND (refresh_lock_until IS NULL OR refresh_lock_until < $4 OR refresh_lock_owner = $2)",
                &[&connection_id, &owner, &until, &now()],
            )?;
            Ok(taken == 1)
        })
    }

    fn unlock_refresh(&self, connection_id: i64, owner: &str) -> Result<()> {
        self.write(|tx| {
            tx.exec(
                "UPDATE connections SET refresh_lock_owner = NULL, refresh_lock_until = NULL
                 WHERE id = $1 AND refresh_lock_owner = $2",
                &[&connection_id, &owner],
            )?;
            Ok(())
        })
    }

    fn create_auth_flow(&self, flow: &AuthFlow) -> Result<()> {
        self.write(|tx| {
            // Expired flows are of no use to anyone: sweep them on the way.
            tx.exec("DELETE FROM auth_flows WHERE expires_at < $1", &[&now()])?;
            tx.exec(
                &format!("INSERT INTO auth_flows ({AUTH_FLOW_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"),
                &[
                    &flow.state,
                    &flow.connection_id,
                    &flow.sealed_verifier,
                    &flow.nonce,
                    &flow.redirect_uri,
                    &flow.initiator,
                    &flow.created_at,
                    &flow.expires_at,
                ],
            )?;
            Ok(())
        })
    }

    fn take_auth_flow(&self, state: &str) -> Result<Option<AuthFlow>> {
        // Single use across nodes: the one DELETE that removes the row is the
        // one that gets it back.
        self.write(|tx| {
            tx.query_opt(&format!("DELETE FROM auth_flows WHERE state = $1 RETURNING {AUTH_FLOW_COLUMNS}"), &[&state])?
                .as_ref()
                .map(auth_flow_from_row)
                .transpose()
        })
    }

    fn set_mailbox_connection(&self, mailbox_id: i64, connection_id: Option<i64>) -> Result<()> {
        self.write(|tx| {
            tx.exec("UPDATE mailboxes SET connection_id = $2 WHERE id = $1", &[&mailbox_id, &connection_id])?;
            Ok(())
        })
    }

    fn service_scopes(&self) -> Result<Vec<ServiceScopes>> {
        let mut rows = self.read(|tx| {
            tx.query("SELECT capability, mode, scopes FROM service_scopes", &[])?
                .iter()
                .map(|r| {
                    Ok(ServiceScopes {
                        capability: r.try_get(0)?,
                        mode: r.try_get(1)?,
                        scopes: split_scopes(r.try_get(2)?),
                    })
                })
                .collect::<Result<Vec<_>>>()
        })?;
        sort_service_scopes(&mut rows);
        Ok(rows)
    }

    fn seed_service_scopes(&self, defaults: &[ServiceScopes]) -> Result<()> {
        self.write(|tx| {
            for d in defaults {
                tx.exec(
                    "INSERT INTO service_scopes (capability, mode, scopes) VALUES ($1, $2, $3)
                     ON CONFLICT (capability, mode) DO NOTHING",
                    &[&d.capability, &d.mode, &join_scopes(&d.scopes)],
                )?;
            }
            Ok(())
        })
    }

    fn set_service_scopes(&self, scopes: &ServiceScopes) -> Result<()> {
        self.write(|tx| {
            tx.exec(
                "INSERT INTO service_scopes (capability, mode, scopes) VALUES ($1, $2, $3)
                 ON CONFLICT (capability, mode) DO UPDATE SET scopes = excluded.scopes",
                &[&scopes.capability, &scopes.mode, &join_scopes(&scopes.scopes)],
            )?;
            Ok(())
        })
    }
}

fn put_token_tx(tx: &mut PgTx<'_>, connection_id: i64, resource: &str, token: &CachedToken) -> Result<()> {
    tx.exec(
        "INSERT INTO access_tokens (connection_id, resource, sealed_token, expires_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (connection_id, resource) DO UPDATE SET sealed_token = excluded.sealed_token,
         expires_at = excluded.expires_at",
        &[&connection_id, &resource, &token.sealed_token, &token.expires_at],
    )?;
    Ok(())
}
