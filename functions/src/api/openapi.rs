//! The OpenAPI document, generated from the handlers' annotations and served at `/openapi.json`.

use axum::response::{IntoResponse, Response};
use utoipa::openapi::HttpMethod;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{audit, catalog, error, feedback, keys, privacy, profiles, sources, timeline};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "CDP API",
        description = "Profiles by any identifier, management of sources, tags, audiences and destinations, privacy requests and the audit log. Authenticate with `Authorization: Bearer cdp_sk_…` (an API key with the route's scope); sources' write keys only send events and are refused here."
    ),
    paths(
        profiles::get,
        profiles::history,
        timeline::events,
        profiles::unlink,
        keys::list,
        keys::create,
        keys::revoke,
        audit::list,
        catalog::get,
        privacy::create,
        privacy::status,
        privacy::suppressions,
        feedback::feedback,
    ),
    components(schemas(error::ErrorBody, error::ErrorDetail, sources::NewSource, sources::SourcePatch)),
    modifiers(&BearerKey),
    tags(
        (name = "profiles", description = "Unified profiles, their history, unlinking"),
        (name = "access", description = "API keys and the audit log"),
        (name = "config", description = "Tag, audience and destination definitions; deliveries; the data dictionary"),
        (name = "sources", description = "Sources and their write keys"),
        (name = "privacy", description = "Deletion and suppression requests (GDPR, CCPA)"),
        (name = "deliveries", description = "Partners' feedback on deliveries (signed like webhooks)"),
    )
)]
struct Document;

/// The analysis routes, where the crate is built with its analysis engine (`cdp up`).
#[cfg(feature = "analysis")]
#[derive(OpenApi)]
#[openapi(
    paths(
        super::analysis::sql,
        super::analysis::trends,
        super::analysis::funnel,
        super::analysis::retention,
        super::analysis::paths,
        super::analysis::compare,
        super::analysis::value,
        super::insights::list_insights,
        super::insights::put_insight,
        super::insights::delete_insight,
        super::insights::run_insight,
        super::insights::list_dashboards,
        super::insights::put_dashboard,
        super::insights::delete_dashboard,
        super::insights::run_dashboard,
        super::themes::list_themes,
        super::themes::assemble_theme,
    ),
    components(schemas(super::analysis::SqlRequest)),
    tags((name = "analysis", description = "Read-only SQL, trends, funnels, retention, paths, audience comparison, value models; saved insights and dashboards; theme dashboards"))
)]
struct AnalysisDocument;

/// The document's operations: [`Document`]'s, and the analysis routes' where they are served.
fn operations() -> utoipa::openapi::OpenApi {
    #[allow(unused_mut)]
    let mut document = Document::openapi();
    #[cfg(feature = "analysis")]
    document.merge(AnalysisDocument::openapi());
    document
}

/// Declares the `apiKey` security scheme the routes name, and the management routes (their handlers are
/// shared by every kind of definition, so their operations are described from [`MANAGED`]).
struct BearerKey;

impl Modify for BearerKey {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "apiKey",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("cdp_sk_…").build()),
        );
        for route in managed() {
            let operation = route.operation();
            openapi.paths.add_path_operation(&route.path, vec![route.method], operation);
        }
    }
}

/// One management route's description.
struct Route {
    method: HttpMethod,
    path: String,
    tag: &'static str,
    summary: String,
    scope: &'static str,
    /// The request body: a description and its schema's component name.
    body: Option<(&'static str, &'static str)>,
    success: (u16, &'static str),
    errors: &'static [u16],
}

const READ_ERRORS: &[u16] = &[400, 401, 403, 404];
const WRITE_ERRORS: &[u16] = &[400, 401, 403, 404, 409];

/// The definitions' routes, per kind, and the sources' and deliveries' routes.
fn managed() -> Vec<Route> {
    use HttpMethod::{Delete, Get, Patch, Post, Put};
    let route = |method, path: String, tag, summary: String, scope, body, success, errors| Route {
        method,
        path,
        tag,
        summary,
        scope,
        body,
        success,
        errors,
    };
    let mut routes = Vec::new();
    for (plural, noun, schema, component) in [
        ("tags", "tag", "docs/schemas/tag-definition.schema.json", "TagDefinition"),
        ("audiences", "audience", "docs/schemas/audience-definition.schema.json", "AudienceDefinition"),
        ("destinations", "destination", "docs/schemas/destination-definition.schema.json", "DestinationDefinition"),
    ] {
        let list = format!("/v1/{plural}");
        let one = format!("/v1/{plural}/{{id}}");
        routes.push(route(
            Get,
            list,
            "config",
            format!("Lists the {noun} definitions with their latest computation or delivery state"),
            "config:read",
            None,
            (200, "The definitions"),
            &[401, 403],
        ));
        routes.push(route(
            Get,
            one.clone(),
            "config",
            format!("One {noun} definition with its state"),
            "config:read",
            None,
            (200, "The definition"),
            READ_ERRORS,
        ));
        routes.push(route(
            Put,
            one.clone(),
            "config",
            if noun == "destination" {
                format!(
                    "Creates or replaces a {noun} definition ({schema}); checked against the whole configuration. \
                     One with `allowPii` also needs the scope `pii:send`"
                )
            } else {
                format!("Creates or replaces a {noun} definition ({schema}); checked against the whole configuration")
            },
            "config:write",
            Some((schema, component)),
            (200, "Replaced (201 when created)"),
            WRITE_ERRORS,
        ));
        routes.push(route(
            Delete,
            one,
            "config",
            format!("Deletes a {noun} definition (409 while others use it)"),
            "config:write",
            None,
            (204, "Deleted"),
            WRITE_ERRORS,
        ));
    }
    routes.push(route(
        Get,
        "/v1/destinations/{id}/dead-letters".into(),
        "config",
        "A destination's dead letters (without bodies)".into(),
        "config:read",
        None,
        (200, "The dead letters"),
        READ_ERRORS,
    ));
    routes.push(route(
        Post,
        "/v1/destinations/{id}/dead-letters/{webhook_id}/replay".into(),
        "config",
        "Sends a dead letter again, with the same id and bytes".into(),
        "config:write",
        None,
        (202, "Replay requested"),
        READ_ERRORS,
    ));
    routes.push(route(
        Post,
        "/v1/destinations/{id}/enable".into(),
        "config",
        "Re-enables a destination a partner's 410 disabled".into(),
        "config:write",
        None,
        (200, "Enabled"),
        READ_ERRORS,
    ));
    routes.push(route(
        Get,
        "/v1/sources".into(),
        "sources",
        "Lists the sources (never keys)".into(),
        "config:read",
        None,
        (200, "The sources"),
        &[401, 403],
    ));
    routes.push(route(
        Post,
        "/v1/sources".into(),
        "sources",
        "Creates a source; its write key is in the answer, once".into(),
        "config:write",
        Some(("A source: name, optional id, allowed origins and settings", "NewSource")),
        (201, "Created, with `writeKey`"),
        WRITE_ERRORS,
    ));
    routes.push(route(
        Get,
        "/v1/sources/{id}".into(),
        "sources",
        "One source".into(),
        "config:read",
        None,
        (200, "The source"),
        READ_ERRORS,
    ));
    routes.push(route(
        Patch,
        "/v1/sources/{id}".into(),
        "sources",
        "Changes a source's name, origins, settings or enabled flag".into(),
        "config:write",
        Some(("What changes; absent fields stay", "SourcePatch")),
        (200, "The source"),
        WRITE_ERRORS,
    ));
    routes.push(route(
        Delete,
        "/v1/sources/{id}".into(),
        "sources",
        "Deletes a source (its key stops working within seconds)".into(),
        "config:write",
        None,
        (204, "Deleted"),
        WRITE_ERRORS,
    ));
    routes.push(route(
        Post,
        "/v1/sources/{id}/rotate-key".into(),
        "sources",
        "Gives the source a new write key (in the answer, once); the old stops working within seconds".into(),
        "config:write",
        None,
        (200, "The source with `writeKey`"),
        READ_ERRORS,
    ));
    routes
}

impl Route {
    fn operation(&self) -> utoipa::openapi::path::Operation {
        use utoipa::openapi::path::{OperationBuilder, ParameterBuilder, ParameterIn};
        use utoipa::openapi::request_body::RequestBodyBuilder;
        use utoipa::openapi::security::SecurityRequirement;
        use utoipa::openapi::{ContentBuilder, ObjectBuilder, Ref, Required, ResponseBuilder, Type};

        let object = || ObjectBuilder::new().schema_type(Type::Object).build();
        let mut operation = OperationBuilder::new()
            .tag(self.tag)
            .summary(Some(self.summary.clone()))
            .security(SecurityRequirement::new("apiKey", [self.scope]));
        for segment in self.path.split('/') {
            if let Some(name) = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                operation = operation.parameter(
                    ParameterBuilder::new()
                        .name(name)
                        .parameter_in(ParameterIn::Path)
                        .required(Required::True)
                        .schema(Some(ObjectBuilder::new().schema_type(Type::String).build())),
                );
            }
        }
        if let Some((description, schema)) = self.body {
            operation = operation.request_body(Some(
                RequestBodyBuilder::new()
                    .description(Some(description))
                    .required(Some(Required::True))
                    .content(
                        "application/json",
                        ContentBuilder::new().schema(Some(Ref::from_schema_name(schema))).build(),
                    )
                    .build(),
            ));
        }
        let (status, description) = self.success;
        let mut success = ResponseBuilder::new().description(description);
        if status != 204 {
            success = success.content("application/json", ContentBuilder::new().schema(Some(object())).build());
        }
        operation = operation.response(status.to_string(), success.build());
        if self.method == HttpMethod::Put {
            let created = ResponseBuilder::new()
                .description("Created")
                .content("application/json", ContentBuilder::new().schema(Some(object())).build());
            operation = operation.response("201", created.build());
        }
        for code in self.errors {
            let error = ResponseBuilder::new()
                .description(match code {
                    400 => "Bad request",
                    401 => "No valid API key",
                    403 => "The key lacks the scope",
                    404 => "Not found",
                    _ => "Conflicts with the current configuration",
                })
                .content(
                    "application/json",
                    ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build(),
                );
            operation = operation.response(code.to_string(), error.build());
        }
        operation.build()
    }
}

/// The published JSON Schemas of the definitions, as request bodies: `(component name, file, schema)`.
const DEFINITION_SCHEMAS: [(&str, &str, &str); 3] = [
    ("TagDefinition", "tag-definition.schema.json", include_str!("../../../docs/schemas/tag-definition.schema.json")),
    (
        "AudienceDefinition",
        "audience-definition.schema.json",
        include_str!("../../../docs/schemas/audience-definition.schema.json"),
    ),
    (
        "DestinationDefinition",
        "destination-definition.schema.json",
        include_str!("../../../docs/schemas/destination-definition.schema.json"),
    ),
];

/// The API's OpenAPI document as JSON: the handlers' annotations, with the definitions' published JSON
/// Schemas (`docs/schemas/`) as the request bodies of their `PUT` routes (`id` optional there: the path has it).
pub fn document() -> String {
    let mut document = serde_json::to_value(operations()).unwrap_or_default();
    for (name, _, text) in DEFINITION_SCHEMAS {
        let Ok(mut schema) = serde_json::from_str::<serde_json::Value>(text) else { continue };
        if let Some(object) = schema.as_object_mut() {
            object.remove("$schema");
            object.remove("$id");
            if let Some(required) = object.get_mut("required").and_then(|r| r.as_array_mut()) {
                required.retain(|field| field != "id");
            }
        }
        // References within a schema and between them point into the components.
        let mut text = schema.to_string().replace("\"#/$defs/", &format!("\"#/components/schemas/{name}/$defs/"));
        for (other, file, _) in DEFINITION_SCHEMAS {
            text = text.replace(&format!("\"{file}#/$defs/"), &format!("\"#/components/schemas/{other}/$defs/"));
        }
        if let (Ok(schema), Some(schemas)) =
            (serde_json::from_str(&text), document.pointer_mut("/components/schemas").and_then(|s| s.as_object_mut()))
        {
            schemas.insert(name.to_string(), schema);
        }
    }
    serde_json::to_string_pretty(&document).unwrap_or_default()
}

pub(crate) async fn serve() -> Response {
    ([(axum::http::header::CONTENT_TYPE, "application/json")], document()).into_response()
}
