//! The OpenAPI document: info, tags and the two security schemes. Paths and schemas come from
//! the `#[utoipa::path]` of each handler, gathered by `OpenApiRouter`; the error responses any
//! route may give ([`CommonErrors`]) are added to every operation here.

use utoipa::{
    IntoResponses, Modify, OpenApi,
    openapi::security::{ApiKey, ApiKeyValue, Http, HttpAuthScheme, SecurityScheme},
};

use super::responses::CommonErrors;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "erp-sync",
        description = "Keeps the marketplace's PostgreSQL in step with the vendors' ERPs: agents push \
                       items, stock and warehouses; orders are pushed back to the agents."
    ),
    modifiers(&SecuritySchemes),
    components(schemas(crate::error::ErrorBody)),
    tags(
        (name = "ops", description = "Health, metrics, scheduler"),
        (name = "agents", description = "Agent registry and heartbeats"),
        (name = "mappings", description = "ERP code mappings (admin)"),
        (name = "ingest", description = "Items, stock and warehouses pushed by agents"),
        (name = "orders", description = "Order sync: callbacks, jobs, dead-letter queue, circuit breakers"),
        (name = "operators", description = "What happened to an order, bulk dead-letter recovery (admin)"),
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

/// Adds [`CommonErrors`] to every operation (keeping a status an operation documents itself,
/// e.g. `/health`'s own 503). Applied to the finished document, so routes merged by any
/// feature module get them.
pub fn add_common_responses(openapi: &mut utoipa::openapi::OpenApi) {
    let common = CommonErrors::responses();
    for item in openapi.paths.paths.values_mut() {
        for operation in [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.options,
            &mut item.head,
            &mut item.patch,
            &mut item.trace,
        ]
        .into_iter()
        .flatten()
        {
            for (status, response) in &common {
                operation
                    .responses
                    .responses
                    .entry(status.clone())
                    .or_insert_with(|| response.clone());
            }
        }
    }
}
