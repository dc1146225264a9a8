//! A local stand-in for the Microsoft identity platform v2.0 (Entra ID): authorize with sign-in
//! and consent pages, the token endpoint (authorization code + PKCE, refresh token rotation,
//! client credentials with secrets or certificate assertions), OpenID discovery and JWKS, token
//! introspection, an admin API and fault injection; Microsoft Graph mail (with change
//! notifications through webhooks) and EWS on an in-memory mailbox store. It follows Microsoft's
//! documented behaviour (endpoints, AADSTS codes, error JSON) and shares no code with the robot's
//! own client.
//!
//! ```no_run
//! use m365_emulator::{AppSpec, Emulator, EmulatorConfig, SecretSpec, Setup, TenantSpec};
//! let emu = Emulator::start(EmulatorConfig::http(Setup::default())).unwrap();
//! let t = emu.add_tenant(TenantSpec::new("contoso.test")).unwrap();
//! emu.add_app(AppSpec {
//!     tenant: "contoso.test".into(),
//!     client_id: Some("11111111-2222-3333-4444-555555555555".into()),
//!     secrets: vec![SecretSpec::new("s3cret")],
//!     application_permissions: vec!["https://graph.microsoft.com/Mail.ReadWrite".into()],
//!     ..Default::default()
//! })
//! .unwrap();
//! println!("token endpoint: {}", emu.token_url(t.id.as_deref().unwrap()));
//! ```
//!
//! See the crate README for the endpoints, the admin API and how to drive sign-in over HTTP.

mod admin;
mod authorize;
mod config;
mod discovery;
mod error;
mod ews;
mod ewsauth;
mod faults;
mod graph;
mod graphbatch;
mod html;
mod jwt;
mod mail;
mod mailadmin;
mod mailauth;
mod mailproto;
mod notify;
mod ntlm;
mod scopes;
mod server;
mod state;
mod subscriptions;
mod tls;
mod token;

pub use config::{
    AccessPolicySpec, AppSpec, CertificateSpec, ConsentSpec, DeliverSpec, EwsAuthScheme, EwsAuthSpec, EwsBlockBody,
    EwsBlockSpec, FaultSpec, FolderInfo, IdTokenFault, IssueSpec, MailboxAppGrant, MailboxGrant, MailboxSpec,
    MessageInfo, ReadReceipt, SecretSpec, ServicePrincipalSpec, Setup, TenantMode, TenantSpec, UserSpec, UserUpdate,
};
pub use error::EmulatorError;
pub use faults::{ENDPOINTS, EndpointStats, Stats};
pub use jwt::SigningKey;
pub use mailadmin::SlotHold;
pub use server::{Emulator, EmulatorConfig, TlsSetup};
pub use subscriptions::{LifecycleEvent, NotificationFault, NotificationPolicy, NotificationRecord, SubscriptionInfo};
pub use tls::SelfSignedTls;
