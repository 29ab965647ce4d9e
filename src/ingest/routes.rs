//! `/api/sync/*`: agents push items, stock and warehouses.

use axum::{
    Json,
    extract::{DefaultBodyLimit, State},
};
use serde_json::json;
use utoipa_axum::{
    router::{OpenApiRouter, UtoipaMethodRouterExt},
    routes,
};

use super::{
    model::{
        BATCH_LIMIT, INCREMENTAL_LIMIT, IngestReport, ItemsEnvelope, ItemsRequest, StockEnvelope,
        StockRequest, WarehousesEnvelope, WarehousesRequest,
    },
    rules,
};
use crate::{
    error::AppError,
    http::{
        auth::AgentRequest,
        extract::parse_json,
        responses::{AgentErrors, JsonBodyErrors, RateLimited},
    },
    state::AppState,
};

/// Body limits: generous for 500 / 5 000 records with long descriptions.
const INCREMENTAL_BODY_LIMIT: usize = 4 * 1024 * 1024;
const BATCH_BODY_LIMIT: usize = 32 * 1024 * 1024;

pub fn router() -> OpenApiRouter<AppState> {
    let incremental = DefaultBodyLimit::max(INCREMENTAL_BODY_LIMIT);
    let batch = DefaultBodyLimit::max(BATCH_BODY_LIMIT);
    OpenApiRouter::new()
        .routes(routes!(ingest_items).layer(incremental))
        .routes(routes!(ingest_items_batch).layer(batch))
        .routes(routes!(ingest_stock).layer(incremental))
        .routes(routes!(ingest_stock_batch).layer(batch))
        .routes(routes!(ingest_warehouses).layer(incremental))
        .routes(routes!(ingest_warehouses_batch).layer(batch))
}

#[derive(Clone, Copy)]
enum Mode {
    Incremental,
    Batch,
}

impl Mode {
    fn limit(self) -> usize {
        match self {
            Self::Incremental => INCREMENTAL_LIMIT,
            Self::Batch => BATCH_LIMIT,
        }
    }

    /// Per-vendor budget; the batch routes have their own, smaller one.
    async fn take_budget(self, state: &AppState, vendor_id: &str) -> Result<(), AppError> {
        let limiter = match self {
            Self::Incremental => &state.rate_limits.ingest,
            Self::Batch => &state.rate_limits.ingest_batch,
        };
        limiter.check(vendor_id).await
    }
}

/// A request over the record limit is refused whole: nothing is written.
fn check_size(mode: Mode, field: &str, count: usize) -> Result<(), AppError> {
    let limit = mode.limit();
    if count > limit {
        let hint = match mode {
            Mode::Incremental => " (use the /batch route for up to 5000)",
            Mode::Batch => "",
        };
        return Err(AppError::validation(
            format!("{field}: {count} records, at most {limit} allowed{hint}"),
            json!({ field: [format!("at most {limit} records")] }),
        ));
    }
    Ok(())
}

async fn items(
    state: AppState,
    request: AgentRequest,
    mode: Mode,
) -> Result<Json<IngestReport>, AppError> {
    let vendor_id = request.agent.vendor_id.as_str();
    mode.take_budget(&state, vendor_id).await?;
    let envelope: ItemsEnvelope = parse_json(&request.body)?;
    check_size(mode, "items", envelope.items.len())?;
    let report = state
        .ingest
        .ingest_items(vendor_id, &envelope.items)
        .await?;
    state.prometheus.count_ingest(&report.counts("items"));
    report.log_summary("items", vendor_id);
    Ok(Json(report))
}

async fn stock(
    state: AppState,
    request: AgentRequest,
    mode: Mode,
) -> Result<Json<IngestReport>, AppError> {
    let vendor_id = request.agent.vendor_id.as_str();
    mode.take_budget(&state, vendor_id).await?;
    let envelope: StockEnvelope = parse_json(&request.body)?;
    let rule = &rules::STOCK_WAREHOUSE_ID;
    if !rule
        .kind
        .accepts(rules::Value::Str(Some(&envelope.warehouse_id)))
    {
        return Err(AppError::validation(
            "warehouseId is not a valid ERP warehouse id",
            json!({ "warehouseId": ["must be 1-100 characters, not blank, without control, bidi or zero-width characters"] }),
        ));
    }
    check_size(mode, "stock", envelope.stock.len())?;
    let report = state
        .ingest
        .ingest_stock(vendor_id, &envelope.warehouse_id, &envelope.stock)
        .await?;
    state.prometheus.count_ingest(&report.counts("stock"));
    report.log_summary("stock", vendor_id);
    Ok(Json(report))
}

async fn warehouses(
    state: AppState,
    request: AgentRequest,
    mode: Mode,
) -> Result<Json<IngestReport>, AppError> {
    let vendor_id = request.agent.vendor_id.as_str();
    mode.take_budget(&state, vendor_id).await?;
    let envelope: WarehousesEnvelope = parse_json(&request.body)?;
    check_size(mode, "warehouses", envelope.warehouses.len())?;
    let report = state
        .ingest
        .ingest_warehouses(vendor_id, &envelope.warehouses)
        .await?;
    state.prometheus.count_ingest(&report.counts("warehouses"));
    report.log_summary("warehouses", vendor_id);
    Ok(Json(report))
}

/// Push item changes (at most 500).
///
/// Each record is judged alone: `processed`; `skipped` with `no_changes` (same contentHash)
/// or `stale` (older than what is stored, or superseded by a later record for the same SKU
/// in this request); `failed` with `unmapped_unit: X`, `unmapped_vat: X` or `invalid: <field>`.
#[utoipa::path(
    post, path = "/api/sync/items", tag = "ingest",
    request_body = ItemsRequest,
    responses(
        AgentErrors, JsonBodyErrors, RateLimited,
        (status = 200, description = "Per-record outcome", body = IngestReport),
    ),
    security(("agent_token" = []))
)]
async fn ingest_items(
    State(state): State<AppState>,
    request: AgentRequest,
) -> Result<Json<IngestReport>, AppError> {
    items(state, request, Mode::Incremental).await
}

/// Push items in bulk
///
/// Push a full catalogue (at most 5 000 items), written in chunks of 500 in one transaction.
/// Each record is judged alone, as on the incremental route.
#[utoipa::path(
    post, path = "/api/sync/items/batch", tag = "ingest",
    request_body = ItemsRequest,
    responses(
        AgentErrors, JsonBodyErrors, RateLimited,
        (status = 200, description = "Per-record outcome", body = IngestReport),
    ),
    security(("agent_token" = []))
)]
async fn ingest_items_batch(
    State(state): State<AppState>,
    request: AgentRequest,
) -> Result<Json<IngestReport>, AppError> {
    items(state, request, Mode::Batch).await
}

/// Push stock levels
///
/// Push stock levels of one warehouse (at most 500). Unknown SKUs fail with `unknown_sku`;
/// an unknown warehouse refuses the whole request.
#[utoipa::path(
    post, path = "/api/sync/stock", tag = "ingest",
    request_body = StockRequest,
    responses(
        AgentErrors, JsonBodyErrors, RateLimited,
        (status = 200, description = "Per-record outcome", body = IngestReport),
    ),
    security(("agent_token" = []))
)]
async fn ingest_stock(
    State(state): State<AppState>,
    request: AgentRequest,
) -> Result<Json<IngestReport>, AppError> {
    stock(state, request, Mode::Incremental).await
}

/// Push stock levels in bulk
///
/// Push stock levels of one warehouse in bulk (at most 5 000), written in chunks of 500.
/// Unknown SKUs fail with `unknown_sku`; an unknown warehouse refuses the whole request.
#[utoipa::path(
    post, path = "/api/sync/stock/batch", tag = "ingest",
    request_body = StockRequest,
    responses(
        AgentErrors, JsonBodyErrors, RateLimited,
        (status = 200, description = "Per-record outcome", body = IngestReport),
    ),
    security(("agent_token" = []))
)]
async fn ingest_stock_batch(
    State(state): State<AppState>,
    request: AgentRequest,
) -> Result<Json<IngestReport>, AppError> {
    stock(state, request, Mode::Batch).await
}

/// Push warehouses
///
/// Push warehouse changes (at most 500). Each record is judged alone: processed, skipped
/// (`no_changes`, `stale`) or failed (`invalid: <field>`).
#[utoipa::path(
    post, path = "/api/sync/warehouses", tag = "ingest",
    request_body = WarehousesRequest,
    responses(
        AgentErrors, JsonBodyErrors, RateLimited,
        (status = 200, description = "Per-record outcome", body = IngestReport),
    ),
    security(("agent_token" = []))
)]
async fn ingest_warehouses(
    State(state): State<AppState>,
    request: AgentRequest,
) -> Result<Json<IngestReport>, AppError> {
    warehouses(state, request, Mode::Incremental).await
}

/// Push warehouses in bulk
///
/// Push warehouses in bulk (at most 5 000), written in chunks of 500. Each record is judged
/// alone, as on the incremental route.
#[utoipa::path(
    post, path = "/api/sync/warehouses/batch", tag = "ingest",
    request_body = WarehousesRequest,
    responses(
        AgentErrors, JsonBodyErrors, RateLimited,
        (status = 200, description = "Per-record outcome", body = IngestReport),
    ),
    security(("agent_token" = []))
)]
async fn ingest_warehouses_batch(
    State(state): State<AppState>,
    request: AgentRequest,
) -> Result<Json<IngestReport>, AppError> {
    warehouses(state, request, Mode::Batch).await
}
