//! [`AdminStore`] on SQLite.

use rusqlite::{OptionalExtension, params};

use crate::admin::*;
use crate::sqlite::{SqliteStore, now};
use crate::{Result, StoreError};

const ADMIN_COLUMNS: &str = "a.id, a.email, a.created_at, a.last_sign_in_at";

fn admin_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Admin> {
    Ok(Admin { id: r.get(0)?, email: r.get(1)?, created_at: r.get(2)?, last_sign_in_at: r.get(3)? })
}

const TOKEN_COLUMNS: &str = "id, name, read_only, created_at";

fn token_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ApiToken> {
    Ok(ApiToken { id: r.get(0)?, name: r.get(1)?, read_only: r.get(2)?, created_at: r.get(3)? })
}

impl AdminStore for SqliteStore {
    fn add_admin(&self, email: &str, password_hash: &str) -> Result<Admin> {
        self.write(|tx| {
            let exists: bool =
                tx.query_row("SELECT EXISTS(SELECT 1 FROM admins WHERE email = ?1)", [email], |r| r.get(0))?;
            if exists {
                return Err(StoreError::Exists { what: "administrator", name: email.to_string() });
            }
            tx.execute(
                "INSERT INTO admins (email, password_hash, created_at) VALUES (?1, ?2, ?3)",
                params![email, password_hash, now()],
            )?;
            Ok(tx.query_row(
                &format!("SELECT {ADMIN_COLUMNS} FROM admins a WHERE a.id = ?1"),
                [tx.last_insert_rowid()],
                admin_from_row,
            )?)
        })
    }

    fn admins(&self) -> Result<Vec<Admin>> {
        let conn = self.lock();
        let mut stmt = conn.prepare(&format!("SELECT {ADMIN_COLUMNS} FROM admins a ORDER BY a.id"))?;
        Ok(stmt.query_map([], admin_from_row)?.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    fn admin_for_sign_in(&self, email: &str) -> Result<Option<(Admin, String)>> {
        let conn = self.lock();
        Ok(conn
            .query_row(
                &format!("SELECT {ADMIN_COLUMNS}, a.password_hash FROM admins a WHERE a.email = ?1"),
                [email],
                |r| Ok((admin_from_row(r)?, r.get(4)?)),
            )
            .optional()?)
    }

    fn remove_admin(&self, email: &str) -> Result<bool> {
        self.write(|tx| Ok(tx.execute("DELETE FROM admins WHERE email = ?1", [email])? > 0))
    }

    fn set_admin_password(&self, email: &str, password_hash: &str) -> Result<bool> {
        self.write(|tx| {
            let changed =
                tx.execute("UPDATE admins SET password_hash = ?2 WHERE email = ?1", params![email, password_hash])?;
            tx.execute("DELETE FROM sessions WHERE admin_id IN (SELECT id FROM admins WHERE email = ?1)", [email])?;
            Ok(changed > 0)
        })
    }

    fn create_session(
        &self,
        token_sha256: &str,
        admin_id: i64,
        csrf_token: &str,
        lifetime: std::time::Duration,
    ) -> Result<()> {
        let expires_at = session_expires_at(lifetime);
        self.write(|tx| {
            let at = now();
            // Expired sessions go as new ones come: the table stays small.
            tx.execute("DELETE FROM sessions WHERE expires_at < ?1", [&at])?;
            tx.execute(
                "INSERT INTO sessions (token_sha256, admin_id, csrf_token, created_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![token_sha256, admin_id, csrf_token, at, expires_at],
            )?;
            tx.execute("UPDATE admins SET last_sign_in_at = ?2 WHERE id = ?1", params![admin_id, at])?;
            Ok(())
        })
    }

    fn session(&self, token_sha256: &str) -> Result<Option<Session>> {
        let at = now();
        let conn = self.read();
        Ok(conn
            .query_row(
                &format!(
                    "SELECT {ADMIN_COLUMNS}, s.csrf_token, s.expires_at FROM sessions s
                     JOIN admins a ON a.id = s.admin_id WHERE s.token_sha256 = ?1 AND s.expires_at > ?2"
                ),
                params![token_sha256, at],
                |r| Ok(Session { admin: admin_from_row(r)?, csrf_token: r.get(4)?, expires_at: r.get(5)? }),
            )
            .optional()?)
    }

    fn add_api_token(&self, name: &str, token_sha256: &str, read_only: bool) -> Result<ApiToken> {
        self.write(|tx| {
            let exists: bool =
                tx.query_row("SELECT EXISTS(SELECT 1 FROM api_tokens WHERE name = ?1)", [name], |r| r.get(0))?;
            if exists {
                return Err(StoreError::Exists { what: "API token", name: name.to_string() });
            }
            tx.execute(
                "INSERT INTO api_tokens (name, token_sha256, read_only, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![name, token_sha256, read_only, now()],
            )?;
            Ok(tx.query_row(
                &format!("SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE id = ?1"),
                [tx.last_insert_rowid()],
                token_from_row,
            )?)
        })
    }

    fn api_tokens(&self) -> Result<Vec<ApiToken>> {
        let conn = self.lock();
        let mut stmt = conn.prepare(&format!("SELECT {TOKEN_COLUMNS} FROM api_tokens ORDER BY id"))?;
        Ok(stmt.query_map([], token_from_row)?.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    fn api_token(&self, token_sha256: &str) -> Result<Option<ApiToken>> {
        let conn = self.read();
        Ok(conn
            .prepare_cached(&format!("SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE token_sha256 = ?1"))?
            .query_row([token_sha256], token_from_row)
            .optional()?)
    }

    fn revoke_api_token(&self, name: &str) -> Result<bool> {
        self.write(|tx| Ok(tx.execute("DELETE FROM api_tokens WHERE name = ?1", [name])? > 0))
    }

    fn delete_session(&self, token_sha256: &str) -> Result<()> {
        self.write(|tx| {
            tx.execute("DELETE FROM sessions WHERE token_sha256 = ?1", [token_sha256])?;
            Ok(())
        })
    }
}
