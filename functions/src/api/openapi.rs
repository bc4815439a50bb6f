//! The OpenAPI document, generated from the handlers' annotations and served at `/openapi.json`.

use axum::response::{IntoResponse, Response};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{audit, error, keys, profiles};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "CDP API",
        description = "Profiles by any identifier, management of sources, tags, audiences and destinations, privacy requests and the audit log. Authenticate with `Authorization: Bearer cdp_sk_…` (an API key with the route's scope); sources' write keys only send events and are refused here."
    ),
    paths(
        profiles::get,
        profiles::history,
        profiles::unlink,
        keys::list,
        keys::create,
        keys::revoke,
        audit::list,
    ),
    components(schemas(error::ErrorBody, error::ErrorDetail)),
    modifiers(&BearerKey),
    tags(
        (name = "profiles", description = "Unified profiles, their history, unlinking"),
        (name = "access", description = "API keys and the audit log"),
    )
)]
struct Document;

/// Declares the `apiKey` security scheme the routes name.
struct BearerKey;

impl Modify for BearerKey {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "apiKey",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("cdp_sk_…").build()),
        );
    }
}

/// The API's OpenAPI document as JSON.
pub fn document() -> String {
    Document::openapi().to_pretty_json().unwrap_or_default()
}

pub(crate) async fn serve() -> Response {
    ([(axum::http::header::CONTENT_TYPE, "application/json")], document()).into_response()
}
