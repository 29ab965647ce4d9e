//! The OpenAPI document: info, tags and the two security schemes. Paths and schemas come from
//! the `#[utoipa::path]` of each handler, gathered by `OpenApiRouter`.

use utoipa::{
    Modify, OpenApi,
    openapi::security::{ApiKey, ApiKeyValue, Http, HttpAuthScheme, SecurityScheme},
};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "erp-sync",
        description = "Keeps the marketplace's PostgreSQL in step with the vendors' ERPs: agents push \
                       items, stock and warehouses; orders are pushed back to the agents."
    ),
    modifiers(&SecuritySchemes),
    tags(
        (name = "ops", description = "Health, metrics, scheduler"),
        (name = "agents", description = "Agent registry and heartbeats"),
        (name = "mappings", description = "ERP code mappings (admin)"),
        (name = "ingest", description = "Items, stock and warehouses pushed by agents"),
        (name = "orders", description = "Order sync: callbacks, jobs, dead-letter queue, circuit breakers"),
        (name = "reconciliation", description = "Drift between the ERPs and Postgres: runs and events (admin)"),
    )
)]
pub struct ApiDoc;

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))),
        );
        components.add_security_scheme(
            "agent_token",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}
