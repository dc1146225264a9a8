//! [`AuthStore`] on SQLite.

use rusqlite::{OptionalExtension, params};

use crate::auth::*;
use crate::sqlite::{SqliteStore, now};
use crate::{ConnectionState, Result, StoreError};

const TENANT_COLUMNS: &str = "id, name, provider, client_id, directory, authority_url, graph_url, ews_url, \
     authorize_url, token_url, sealed_secret IS NOT NULL, secret_set_at, secret_expires_at, \
     sealed_certificate IS NOT NULL, certificate_info, created_at, allow_plaintext";

fn tenant_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Tenant> {
    Ok(Tenant {
        id: r.get(0)?,
        name: r.get(1)?,
        provider: r.get(2)?,
        client_id: r.get(3)?,
        directory: r.get(4)?,
        authority_url: r.get(5)?,
        graph_url: r.get(6)?,
        ews_url: r.get(7)?,
        authorize_url: r.get(8)?,
        token_url: r.get(9)?,
        has_secret: r.get(10)?,
        secret_set_at: r.get(11)?,
        secret_expires_at: r.get(12)?,
        has_certificate: r.get(13)?,
        certificate_info: r.get(14)?,
        created_at: r.get(15)?,
        allow_plaintext: r.get(16)?,
    })
}

const CONNECTION_COLUMNS: &str = "id, name, tenant_id, capability, mode, scopes, state, last_error, \
     sealed_refresh_token IS NOT NULL, authenticated_name, authenticated_upn, authenticated_oid, granted_scopes, \
     authenticated_at, refreshed_at, created_at, updated_at";

fn connection_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Connection> {
    let scopes: String = r.get(5)?;
    Ok(Connection {
        id: r.get(0)?,
        name: r.get(1)?,
        tenant_id: r.get(2)?,
        capability: r.get(3)?,
        mode: r.get(4)?,
        scopes: split_scopes(&scopes),
        state: r.get(6)?,
        last_error: r.get(7)?,
        has_refresh_token: r.get(8)?,
        authenticated_name: r.get(9)?,
        authenticated_upn: r.get(10)?,
        authenticated_oid: r.get(11)?,
        granted_scopes: r.get(12)?,
        authenticated_at: r.get(13)?,
        refreshed_at: r.get(14)?,
        created_at: r.get(15)?,
        updated_at: r.get(16)?,
    })
}

impl AuthStore for SqliteStore {
    fn add_tenant(&self, new: &NewTenant) -> Result<Tenant> {
        let id = self.write(|tx| {
            let exists: bool =
                tx.query_row("SELECT EXISTS(SELECT 1 FROM tenants WHERE name = ?1)", [&new.name], |r| r.get(0))?;
            if exists {
                return Err(StoreError::Exists { what: "tenant", name: new.name.clone() });
            }
            let at = now();
            tx.execute(
                "INSERT INTO tenants (name, provider, client_id, directory, authority_url, graph_url, ews_url,
                 authorize_url, token_url, sealed_secret, secret_set_at, secret_expires_at, sealed_certificate,
                 certificate_info, created_at, allow_plaintext)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, CASE WHEN ?10 IS NULL THEN NULL ELSE ?14 END, ?11, ?12, ?13, ?14, ?15)",
                params![
                    new.name,
                    new.provider,
                    new.client_id,
                    new.directory,
                    new.authority_url,
                    new.graph_url,
                    new.ews_url,
                    new.authorize_url,
                    new.token_url,
                    new.sealed_secret,
                    new.secret_expires_at,
                    new.sealed_certificate,
                    new.certificate_info,
                    at,
                    new.allow_plaintext
                ],
            )?;
            Ok(tx.last_insert_rowid())
        })?;
        self.tenant(id)?.ok_or_else(|| StoreError::Corrupt("tenant vanished after insert".into()))
    }

    fn tenants(&self) -> Result<Vec<Tenant>> {
        let conn = self.lock();
        let mut stmt = conn.prepare(&format!("SELECT {TENANT_COLUMNS} FROM tenants ORDER BY id"))?;
        Ok(stmt.query_map([], tenant_from_row)?.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    fn tenant(&self, id: i64) -> Result<Option<Tenant>> {
        let conn = self.lock();
        Ok(conn
            .query_row(&format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE id = ?1"), [id], tenant_from_row)
            .optional()?)
    }

    fn tenant_by_name(&self, name: &str) -> Result<Option<Tenant>> {
        let conn = self.lock();
        Ok(conn
            .query_row(&format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE name = ?1"), [name], tenant_from_row)
            .optional()?)
    }

    fn tenant_secret(&self, id: i64) -> Result<Option<Vec<u8>>> {
        let conn = self.lock();
        Ok(conn.query_row("SELECT sealed_secret FROM tenants WHERE id = ?1", [id], |r| r.get(0)).optional()?.flatten())
    }

    fn update_tenant(&self, id: i64, update: &TenantUpdate) -> Result<Tenant> {
        self.write(|tx| {
            let changed = tx.execute(
                "UPDATE tenants SET client_id = ?2, directory = ?3, authority_url = ?4, graph_url = ?5, ews_url = ?6,
                 secret_expires_at = ?7, certificate_info = COALESCE(?8, certificate_info) WHERE id = ?1",
                params![
                    id,
                    update.client_id,
                    update.directory,
                    update.authority_url,
                    update.graph_url,
                    update.ews_url,
                    update.secret_expires_at,
                    update.certificate_info
                ],
            )?;
            if changed == 0 {
                return Err(StoreError::Corrupt(format!("no tenant with id {id}")));
            }
            tx.execute(
                "DELETE FROM access_tokens WHERE connection_id IN (SELECT id FROM connections WHERE tenant_id = ?1)",
                [id],
            )?;
            Ok(())
        })?;
        self.tenant(id)?.ok_or_else(|| StoreError::Corrupt(format!("tenant {id} vanished")))
    }

    fn set_tenant_credentials(
        &self,
        id: i64,
        sealed_secret: Option<&[u8]>,
        sealed_certificate: Option<&[u8]>,
    ) -> Result<()> {
        self.write(|tx| {
            if let Some(sealed) = sealed_secret {
                tx.execute(
                    "UPDATE tenants SET sealed_secret = ?2, secret_set_at = ?3 WHERE id = ?1",
                    params![id, sealed, now()],
                )?;
            }
            if let Some(sealed) = sealed_certificate {
                tx.execute("UPDATE tenants SET sealed_certificate = ?2 WHERE id = ?1", params![id, sealed])?;
            }
            Ok(())
        })
    }

    fn tenant_certificate(&self, id: i64) -> Result<Option<Vec<u8>>> {
        let conn = self.lock();
        Ok(conn
            .query_row("SELECT sealed_certificate FROM tenants WHERE id = ?1", [id], |r| r.get(0))
            .optional()?
            .flatten())
    }

    fn add_connection(&self, new: &NewConnection) -> Result<Connection> {
        let id = self.write(|tx| {
            let exists: bool =
                tx.query_row("SELECT EXISTS(SELECT 1 FROM connections WHERE name = ?1)", [&new.name], |r| r.get(0))?;
            if exists {
                return Err(StoreError::Exists { what: "connection", name: new.name.clone() });
            }
            let at = now();
            tx.execute(
                "INSERT INTO connections (name, tenant_id, capability, mode, scopes, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)",
                params![new.name, new.tenant_id, new.capability, new.mode, join_scopes(&new.scopes), at],
            )?;
            Ok(tx.last_insert_rowid())
        })?;
        self.connection(id)?.ok_or_else(|| StoreError::Corrupt("connection vanished after insert".into()))
    }

    fn connections(&self) -> Result<Vec<Connection>> {
        let conn = self.lock();
        let mut stmt = conn.prepare(&format!("SELECT {CONNECTION_COLUMNS} FROM connections ORDER BY id"))?;
        Ok(stmt.query_map([], connection_from_row)?.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    fn connection(&self, id: i64) -> Result<Option<Connection>> {
        let conn = self.lock();
        Ok(conn
            .query_row(
                &format!("SELECT {CONNECTION_COLUMNS} FROM connections WHERE id = ?1"),
                [id],
                connection_from_row,
            )
            .optional()?)
    }

    fn connection_by_name(&self, name: &str) -> Result<Option<Connection>> {
        let conn = self.lock();
        Ok(conn
            .query_row(
                &format!("SELECT {CONNECTION_COLUMNS} FROM connections WHERE name = ?1"),
                [name],
                connection_from_row,
            )
            .optional()?)
    }

    fn set_connection_state(&self, id: i64, state: ConnectionState, last_error: Option<&str>) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "UPDATE connections SET state = ?2, last_error = ?3, updated_at = ?4 WHERE id = ?1",
                params![id, state, last_error, now()],
            )?;
            if state != ConnectionState::Ready {
                // A connection that cannot refresh must not hand out old tokens either.
                tx.execute("DELETE FROM access_tokens WHERE connection_id = ?1", [id])?;
            }
            Ok(())
        })
    }

    fn refresh_token(&self, connection_id: i64) -> Result<Option<Vec<u8>>> {
        let conn = self.lock();
        Ok(conn
            .query_row("SELECT sealed_refresh_token FROM connections WHERE id = ?1", [connection_id], |r| r.get(0))
            .optional()?
            .flatten())
    }

    fn complete_authorization(&self, connection_id: i64, auth: &Authorization) -> Result<()> {
        self.write(|tx| {
            let at = now();
            tx.execute(
                "UPDATE connections SET state = 'ready', last_error = NULL, sealed_refresh_token = ?2,
                 authenticated_name = ?3, authenticated_upn = ?4, authenticated_oid = ?5, granted_scopes = ?6,
                 authenticated_at = ?7, refreshed_at = ?7, updated_at = ?7 WHERE id = ?1",
                params![
                    connection_id,
                    auth.sealed_refresh_token,
                    auth.name,
                    auth.upn,
                    auth.oid,
                    auth.granted_scopes,
                    at
                ],
            )?;
            tx.execute("DELETE FROM access_tokens WHERE connection_id = ?1", [connection_id])?;
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
            let at = now();
            if let Some(sealed) = sealed_refresh_token {
                tx.execute(
                    "UPDATE connections SET sealed_refresh_token = ?2, refreshed_at = ?3, updated_at = ?3 WHERE id = ?1",
                    params![connection_id, sealed, at],
                )?;
            }
            tx.execute(
                "UPDATE connections SET state = 'ready', last_error = NULL WHERE id = ?1 AND state <> 'ready'",
                [connection_id],
            )?;
            put_token_tx(tx, connection_id, resource, token)
        })
    }

    fn cached_token(&self, connection_id: i64, resource: &str) -> Result<Option<CachedToken>> {
        let conn = self.lock();
        Ok(conn
            .query_row(
                "SELECT sealed_token, expires_at FROM access_tokens WHERE connection_id = ?1 AND resource = ?2",
                params![connection_id, resource],
                |r| Ok(CachedToken { sealed_token: r.get(0)?, expires_at: r.get(1)? }),
            )
            .optional()?)
    }

    fn put_token(&self, connection_id: i64, resource: &str, token: &CachedToken) -> Result<()> {
        self.write(|tx| put_token_tx(tx, connection_id, resource, token))
    }

    fn forget_tokens(&self, connection_id: i64) -> Result<()> {
        self.write(|tx| {
            tx.execute("DELETE FROM access_tokens WHERE connection_id = ?1", [connection_id])?;
            Ok(())
        })
    }

    fn try_lock_refresh(&self, connection_id: i64, owner: &str, until: &str) -> Result<bool> {
        self.write(|tx| {
            let taken = tx.execute(
                "UPDATE connections SET refresh_lock_owner = ?2, refresh_lock_until = ?3
                 WHERE id = ?1 AND (refresh_lock_until IS NULL OR refresh_lock_until < ?4 OR refresh_lock_owner = ?2)",
                params![connection_id, owner, until, now()],
            )?;
            Ok(taken == 1)
        })
    }

    fn unlock_refresh(&self, connection_id: i64, owner: &str) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "UPDATE connections SET refresh_lock_owner = NULL, refresh_lock_until = NULL
                 WHERE id = ?1 AND refresh_lock_owner = ?2",
                params![connection_id, owner],
            )?;
            Ok(())
        })
    }

    fn create_auth_flow(&self, flow: &AuthFlow) -> Result<()> {
        self.write(|tx| {
            // Expired flows are of no use to anyone: sweep them on the way.
            tx.execute("DELETE FROM auth_flows WHERE expires_at < ?1", [now()])?;
            tx.execute(
                "INSERT INTO auth_flows (state, connection_id, sealed_verifier, nonce, redirect_uri, initiator,
                 created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    flow.state,
                    flow.connection_id,
                    flow.sealed_verifier,
                    flow.nonce,
                    flow.redirect_uri,
                    flow.initiator,
                    flow.created_at,
                    flow.expires_at
                ],
            )?;
            Ok(())
        })
    }

    fn take_auth_flow(&self, state: &str) -> Result<Option<AuthFlow>> {
        self.write(|tx| {
            let flow = tx
                .query_row(
                    "SELECT state, connection_id, sealed_verifier, nonce, redirect_uri, initiator, created_at, expires_at
                     FROM auth_flows WHERE state = ?1",
                    [state],
                    |r| {
                        Ok(AuthFlow {
                            state: r.get(0)?,
                            connection_id: r.get(1)?,
                            sealed_verifier: r.get(2)?,
                            nonce: r.get(3)?,
                            redirect_uri: r.get(4)?,
                            initiator: r.get(5)?,
                            created_at: r.get(6)?,
                            expires_at: r.get(7)?,
                        })
                    },
                )
                .optional()?;
            if flow.is_some() {
                tx.execute("DELETE FROM auth_flows WHERE state = ?1", [state])?;
            }
            Ok(flow)
        })
    }

    fn set_mailbox_connection(&self, mailbox_id: i64, connection_id: Option<i64>) -> Result<()> {
        self.write(|tx| {
            tx.execute("UPDATE mailboxes SET connection_id = ?2 WHERE id = ?1", params![mailbox_id, connection_id])?;
            Ok(())
        })
    }

    fn service_scopes(&self) -> Result<Vec<ServiceScopes>> {
        let conn = self.lock();
        let mut stmt = conn.prepare("SELECT capability, mode, scopes FROM service_scopes")?;
        let mut rows = stmt
            .query_map([], |r| {
                let scopes: String = r.get(2)?;
                Ok(ServiceScopes { capability: r.get(0)?, mode: r.get(1)?, scopes: split_scopes(&scopes) })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        sort_service_scopes(&mut rows);
        Ok(rows)
    }

    fn seed_service_scopes(&self, defaults: &[ServiceScopes]) -> Result<()> {
        self.write(|tx| {
            let mut stmt = tx.prepare_cached(
                "INSERT OR IGNORE INTO service_scopes (capability, mode, scopes) VALUES (?1, ?2, ?3)",
            )?;
            for d in defaults {
                stmt.execute(params![d.capability, d.mode, join_scopes(&d.scopes)])?;
            }
            Ok(())
        })
    }

    fn set_service_scopes(&self, scopes: &ServiceScopes) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO service_scopes (capability, mode, scopes) VALUES (?1, ?2, ?3)
                 ON CONFLICT (capability, mode) DO UPDATE SET scopes = excluded.scopes",
                params![scopes.capability, scopes.mode, join_scopes(&scopes.scopes)],
            )?;
            Ok(())
        })
    }
}

fn put_token_tx(tx: &rusqlite::Transaction<'_>, connection_id: i64, resource: &str, token: &CachedToken) -> Result<()> {
    tx.execute(
        "INSERT INTO access_tokens (connection_id, resource, sealed_token, expires_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (connection_id, resource) DO UPDATE SET sealed_token = excluded.sealed_token,
         expires_at = excluded.expires_at",
        params![connection_id, resource, token.sealed_token, token.expires_at],
    )?;
    Ok(())
}
