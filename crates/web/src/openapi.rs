//! The REST API's OpenAPI 3.1 document, `/api/v1/openapi.json`, made from
//! the handlers' `#[utoipa::path]` attributes and the views' schemas, so it
//! says what the code does. The test suite checks it against the live server
//! with schemathesis.

use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::{api, api_admin, api_directory, api_outbox, api_webhooks};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "mailrobot REST API",
        description = "Tickets, the mail journal, mailboxes, service connections, tenants, webhooks, rules, \
            templates, contacts and API tokens of a mailrobot. Every request needs `Authorization: Bearer <token>` (`mailrobot api-token \
            create`); a read-only token may only read. Errors are `{\"error\": {\"code\", \"message\"}}`.",
        license(name = "Apache-2.0")
    ),
    paths(
        api::tickets,
        api::ticket,
        api::patch_ticket,
        api_outbox::reply,
        api::attachment,
        api::messages,
        api::message_retry,
        api::message_raw,
        api::mailboxes,
        api_admin::create_mailbox,
        api_admin::mailbox,
        api_admin::change_mailbox,
        api_admin::remove_mailbox,
        api::mailbox_test,
        api::mailbox_poll,
        api::tenants,
        api_admin::create_tenant,
        api_admin::tenant,
        api_admin::change_tenant,
        api::connections,
        api_admin::create_connection,
        api_admin::connection,
        api::connection_authorize,
        api::connection_test,
        api_admin::services,
        api_admin::set_service,
        api_outbox::list,
        api_outbox::resend,
        api_webhooks::list,
        api_webhooks::create,
        api_webhooks::one,
        api_webhooks::change,
        api_webhooks::remove,
        api_webhooks::deliveries,
        api_webhooks::resend,
        api_directory::rules,
        api_directory::create_rule,
        api_directory::remove_rule,
        api_directory::test_rules,
        api_directory::templates,
        api_directory::set_template,
        api_directory::remove_template,
        api_directory::preview_template,
        api_directory::contacts,
        api_directory::create_contact,
        api_directory::contact,
        api::api_tokens,
        api_admin::create_token,
        api_admin::revoke_token,
    ),
    modifiers(&BearerToken)
)]
pub struct ApiDoc;

/// Declares the `bearer` scheme every path names.
struct BearerToken;

impl Modify for BearerToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("bearer", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
    }
}

/// The document, as served.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}
