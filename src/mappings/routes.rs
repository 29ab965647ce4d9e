//! `/api/admin/mappings*` (admin key).

use axum::{Json, extract::State, http::StatusCode};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::model::{
    CreateMapping, Mapping, MappingFilter, SeedMappings, SeedOutcome, UpdateMapping,
};
use crate::{
    error::{AppError, ErrorBody},
    http::{
        auth::AdminAuth,
        extract::{Page, Pagination, Path, Query, ValidJson},
        responses::{AdminErrors, JsonBodyErrors, PathErrors, QueryErrors},
    },
    state::AppState,
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_mappings, create_mapping))
        .routes(routes!(update_mapping, delete_mapping))
        .routes(routes!(seed_mappings))
}

/// List mappings
///
/// ERP code mappings (unit, VAT, family, subfamily), filtered by vendor and type, paginated;
/// deactivated ones only with `includeInactive=true`.
#[utoipa::path(
    get, path = "/api/admin/mappings", tag = "mappings",
    params(MappingFilter, Pagination),
    responses(
        AdminErrors, QueryErrors,
        (status = 200, description = "A page of mappings", body = Page<Mapping>),
    ),
    security(("api_key" = []))
)]
async fn list_mappings(
    _: AdminAuth,
    State(state): State<AppState>,
    Query(filter): Query<MappingFilter>,
    Query(pagination): Query<Pagination>,
) -> Result<Json<Page<Mapping>>, AppError> {
    let page = state
        .mappings
        .list(
            filter.vendor_id.as_deref(),
            filter.mapping_type,
            filter.include_inactive.unwrap_or(false),
            pagination.check()?,
        )
        .await?;
    Ok(Json(page))
}

/// Create a mapping
///
/// Create a mapping from a vendor's ERP code to the marketplace's code; 409 when the vendor
/// already maps that code of that type. Ingest uses it for the records that follow.
#[utoipa::path(
    post, path = "/api/admin/mappings", tag = "mappings",
    request_body = CreateMapping,
    responses(
        AdminErrors, JsonBodyErrors,
        (status = 201, description = "Created", body = Mapping),
        (status = 409, description = "The vendor already maps this code for this type", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
async fn create_mapping(
    _: AdminAuth,
    State(state): State<AppState>,
    ValidJson(request): ValidJson<CreateMapping>,
) -> Result<(StatusCode, Json<Mapping>), AppError> {
    Ok((
        StatusCode::CREATED,
        Json(state.mappings.create(&request).await?),
    ))
}

/// Change a mapping
///
/// Change a mapping's codes, label or active flag; ingest uses the new mapping for the
/// records that follow.
#[utoipa::path(
    put, path = "/api/admin/mappings/{id}", tag = "mappings",
    params(("id" = Uuid, Path, description = "Mapping id")),
    request_body = UpdateMapping,
    responses(
        AdminErrors, PathErrors, JsonBodyErrors,
        (status = 200, description = "Updated", body = Mapping),
        (status = 404, description = "No such mapping", body = ErrorBody),
        (status = 409, description = "The new ERP code is already mapped", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
async fn update_mapping(
    _: AdminAuth,
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
    ValidJson(request): ValidJson<UpdateMapping>,
) -> Result<Json<Mapping>, AppError> {
    Ok(Json(state.mappings.update(id, &request).await?))
}

/// Deactivate a mapping
///
/// Deactivate a mapping (soft delete): it stops resolving at once.
#[utoipa::path(
    delete, path = "/api/admin/mappings/{id}", tag = "mappings",
    params(("id" = Uuid, Path, description = "Mapping id")),
    responses(
        AdminErrors, PathErrors,
        (status = 200, description = "Deactivated", body = Mapping),
        (status = 404, description = "No such mapping", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
async fn delete_mapping(
    _: AdminAuth,
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
) -> Result<Json<Mapping>, AppError> {
    Ok(Json(state.mappings.deactivate(id).await?))
}

/// Seed mappings
///
/// Apply a vendor's mapping set in bulk. Idempotent: the same set twice changes nothing.
#[utoipa::path(
    post, path = "/api/admin/mappings/seed", tag = "mappings",
    request_body = SeedMappings,
    responses(
        AdminErrors, JsonBodyErrors,
        (status = 200, description = "What the seed inserted, updated and left unchanged", body = SeedOutcome),
    ),
    security(("api_key" = []))
)]
async fn seed_mappings(
    _: AdminAuth,
    State(state): State<AppState>,
    ValidJson(request): ValidJson<SeedMappings>,
) -> Result<Json<SeedOutcome>, AppError> {
    Ok(Json(state.mappings.seed(&request).await?))
}
