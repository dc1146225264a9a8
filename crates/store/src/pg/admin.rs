//! [`AdminStore`] on PostgreSQL.
//!
//! SQLite compares administrators' e-mail addresses without case (COLLATE
//! NOCASE); here every comparison is `lower(email) = lower($1)`, which the
//! unique index `admins_email` on `lower(email)` serves.

use tokio_postgres::Row;

use super::{PgStore, now};
use crate::admin::*;
use crate::{Result, StoreError};

const ADMIN_COLUMNS: &str = "a.id, a.email, a.created_at, a.last_sign_in_at";

fn admin_from_row(r: &Row) -> Result<Admin> {
    Ok(Admin { id: r.try_get(0)?, email: r.try_get(1)?, created_at: r.try_get(2)?, last_sign_in_at: r.try_get(3)? })
}

const TOKEN_COLUMNS: &str = "id, name, read_only, created_at";

fn token_from_row(r: &Row) -> Result<ApiToken> {
    Ok(ApiToken { id: r.try_get(0)?, name: r.try_get(1)?, read_only: r.try_get(2)?, created_at: r.try_get(3)? })
}

impl AdminStore for PgStore {
    fn add_admin(&self, email: &str, password_hash: &str) -> Result<Admin> {
        self.write(|tx| {
            if tx.query_opt("SELECT 1 FROM admins WHERE lower(email) = lower($1)", &[&email])?.is_some() {
                return Err(StoreError::Exists { what: "administrator", name: email.to_string() });
            }
            let row = tx.query_one(
                &format!(
                    "INSERT INTO admins AS a (email, password_hash, created_at) VALUES ($1, $2, $3)
                     RETURNING {ADMIN_COLUMNS}"
                ),
                &[&email, &password_hash, &now()],
            )?;
            admin_from_row(&row)
        })
    }

    fn admins(&self) -> Result<Vec<Admin>> {
        self.read(|tx| {
            tx.query(&format!("SELECT {ADMIN_COLUMNS} FROM admins a ORDER BY a.id"), &[])?
                .iter()
                .map(admin_from_row)
                .collect()
        })
    }

    fn admin_for_sign_in(&self, email: &str) -> Result<Option<(Admin, String)>> {
        self.read(|tx| {
            tx.query_opt(
                &format!("SELECT {ADMIN_COLUMNS}, a.password_hash FROM admins a WHERE lower(a.email) = lower($1)"),
                &[&email],
            )?
            .map(|r| Ok((admin_from_row(&r)?, r.try_get(4)?)))
            .transpose()
        })
    }

    fn remove_admin(&self, email: &str) -> Result<bool> {
        // Sessions go with the administrator (ON DELETE CASCADE).
        self.write(|tx| Ok(tx.exec("DELETE FROM admins WHERE lower(email) = lower($1)", &[&email])? > 0))
    }

    fn set_admin_password(&self, email: &str, password_hash: &str) -> Result<bool> {
        self.write(|tx| {
            let changed = tx.exec(
                "UPDATE admins SET password_hash = $2 WHERE lower(email) = lower($1)",
                &[&email, &password_hash],
            )?;
            tx.exec(
                "DELETE FROM sessions WHERE admin_id IN (SELECT id FROM admins WHERE lower(email) = lower($1))",
                &[&email],
            )?;
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
            tx.exec("DELETE FROM sessions WHERE expires_at < $1", &[&at])?;
            tx.exec(
                "INSERT INTO sessions (token_sha256, admin_id, csrf_token, created_at, expires_at)
                 VALUES ($1, $2, $3, $4, $5)",
                &[&token_sha256, &admin_id, &csrf_token, &at, &expires_at],
            )?;
            tx.exec("UPDATE admins SET last_sign_in_at = $2 WHERE id = $1", &[&admin_id, &at])?;
            Ok(())
        })
    }

    fn session(&self, token_sha256: &str) -> Result<Option<Session>> {
        let at = now();
        self.read(|tx| {
            tx.query_opt(
                &format!(
                    "SELECT {ADMIN_COLUMNS}, s.csrf_token, s.expires_at FROM sessions s
                     JOIN admins a ON a.id = s.admin_id WHERE s.token_sha256 = $1 AND s.expires_at > $2"
                ),
                &[&token_sha256, &at],
            )?
            .map(|r| Ok(Session { admin: admin_from_row(&r)?, csrf_token: r.try_get(4)?, expires_at: r.try_get(5)? }))
            .transpose()
        })
    }

    fn delete_session(&self, token_sha256: &str) -> Result<()> {
        self.write(|tx| {
            tx.exec("DELETE FROM sessions WHERE token_sha256 = $1", &[&token_sha256])?;
            Ok(())
        })
    }

    fn add_api_token(&self, name: &str, token_sha256: &str, read_only: bool) -> Result<ApiToken> {
        self.write(|tx| {
            if tx.query_opt("SELECT 1 FROM api_tokens WHERE name = $1", &[&name])?.is_some() {
                return Err(StoreError::Exists { what: "API token", name: name.to_string() });
            }
            let row = tx.query_one(
                &format!(
                    "INSERT INTO api_tokens (name, token_sha256, read_only, created_at) VALUES ($1, $2, $3, $4)
                     RETURNING {TOKEN_COLUMNS}"
                ),
                &[&name, &token_sha256, &read_only, &now()],
            )?;
            token_from_row(&row)
        })
    }

    fn api_tokens(&self) -> Result<Vec<ApiToken>> {
        self.read(|tx| {
            tx.query(&format!("SELECT {TOKEN_COLUMNS} FROM api_tokens ORDER BY id"), &[])?
                .iter()
                .map(token_from_row)
                .collect()
        })
    }

    fn api_token(&self, token_sha256: &str) -> Result<Option<ApiToken>> {
        self.read(|tx| {
            tx.query_opt(&format!("SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE token_sha256 = $1"), &[&token_sha256])?
                .as_ref()
                .map(token_from_row)
                .transpose()
        })
    }

    fn revoke_api_token(&self, name: &str) -> Result<bool> {
        self.write(|tx| Ok(tx.exec("DELETE FROM api_tokens WHERE name = $1", &[&name])? > 0))
    }
}
