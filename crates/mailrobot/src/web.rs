//! The admin UI as `serve` runs it, and the `admin` commands that give it
//! its administrators.

use std::io::Read;
use std::sync::Arc;

use anyhow::{Context, bail};
use mailrobot_web::{SignInThrottle, WebState, password};
use serde_json::json;

use crate::app::App;
use crate::cli::AdminCommand;
use crate::commands::print_json;

pub fn state(app: &App, public_url: &str) -> WebState {
    WebState {
        store: app.store.clone(),
        admins: app.admin_store.clone(),
        auth: app.auth_store.clone(),
        secure_cookies: public_url.starts_with("https://"),
        throttle: Arc::new(SignInThrottle::default()),
    }
}

/// The password from standard input: the first line, without its line end.
fn password_from_stdin() -> anyhow::Result<String> {
    let mut input = String::new();
    std::io::stdin().take(4096).read_to_string(&mut input).context("reading the password from standard input")?;
    let password = input.lines().next().unwrap_or("").to_string();
    if password.is_empty() {
        bail!("no password on standard input: pipe it in, e.g. `printf '%s\\n' \"$PW\" | mailrobot admin create …`");
    }
    Ok(password)
}

pub fn admin_command(app: &App, command: &AdminCommand) -> anyhow::Result<()> {
    match command {
        AdminCommand::Create { email, password_stdin } | AdminCommand::Add { email, password_stdin } => {
            if !password_stdin {
                bail!("give the password on standard input with --password-stdin (never on the command line)");
            }
            let creating_first = matches!(command, AdminCommand::Create { .. });
            if creating_first && !app.admin_store.admins()?.is_empty() {
                bail!("an administrator exists already; add more with `mailrobot admin add`");
            }
            if !email.contains('@') || email.trim() != email {
                bail!("{email:?} is not an email address");
            }
            let hash = password::hash(&password_from_stdin()?)?;
            let admin = app.admin_store.add_admin(email, &hash)?;
            crate::say!("Administrator {} added; sign in at the URL `mailrobot serve` prints.", admin.email);
        }
        AdminCommand::List { json } => {
            let admins = app.admin_store.admins()?;
            if *json {
                print_json(&json!(admins));
            } else {
                for a in &admins {
                    crate::say!(
                        "{:<32} added {}  last sign-in {}",
                        a.email,
                        a.created_at,
                        a.last_sign_in_at.as_deref().unwrap_or("never")
                    );
                }
            }
        }
        AdminCommand::Remove { email } => {
            if !app.admin_store.remove_admin(email)? {
                bail!("no administrator {email:?}; `mailrobot admin list` shows them");
            }
            crate::say!("Administrator {email} removed; their sessions ended.");
        }
    }
    Ok(())
}
