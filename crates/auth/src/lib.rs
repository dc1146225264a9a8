//! Service connections: how the robot gets OAuth2 access tokens for a
//! mailbox — from the Microsoft identity platform v2.0 (or any OAuth2
//! server) — and keeps them.
//!
//! Layers, bottom up: [`protocol`] (the token endpoint's wire format and its
//! errors), [`client`] (HTTP with bounded retries), [`assertion`] (certificate
//! credentials), [`flow`] (Setup Authentication: authorization code + PKCE),
//! and [`broker`] (cached, single-flight, rotation-safe tokens per
//! connection, shared by every process on a data directory).

pub mod assertion;
pub mod broker;
pub mod client;
pub mod error;
pub mod flow;
pub mod model;
pub mod protocol;

pub use broker::{AccessToken, TokenBroker};
pub use error::AuthError;
pub use model::{Capability, ConnectionState, Mode};
