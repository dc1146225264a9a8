//! What the pages ask the robot to do. The binary implements this with the
//! code its commands run, so a form and its CLI command check and store
//! alike; the UI only turns forms into these calls and errors into words.

use mailrobot_store::Tenant;

/// A tenant as the form gives it. Empty fields are None.
#[derive(Debug, Clone, Default)]
pub struct TenantForm {
    pub name: String,
    pub client_id: String,
    pub tenant: Option<String>,
    /// Write-only: None keeps the stored one.
    pub client_secret: Option<String>,
    /// `YYYY-MM-DD`.
    pub secret_expires: Option<String>,
    /// An uploaded PEM (certificate and private key); None keeps the stored one.
    pub certificate_pem: Option<String>,
    pub authority_url: Option<String>,
    pub graph_url: Option<String>,
    pub ews_url: Option<String>,
}

/// A refusal or failure, in words for the administrator.
pub type OpResult<T> = Result<T, String>;

#[async_trait::async_trait]
pub trait Operations: Send + Sync {
    async fn add_tenant(&self, form: TenantForm) -> OpResult<Tenant>;
    /// Saves the tenant called `name` (the form's name is not changed).
    async fn update_tenant(&self, name: &str, form: TenantForm) -> OpResult<Tenant>;
}
