//! What an agent author relies on (issue 17), each test named after the claim of
//! docs/agent-protocol.md it pins: the create-order body built at delivery, the attempt count,
//! a refused signature retried, ingest warnings, strict numbers, documented rounding, and the
//! agent's own read-only views of its jobs and dead letters.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use crate::{
    ingest::ts,
    mock_agent::{MockAgent, Reply},
    orders::{VENDOR, eventually, insert_order, job_of, order_app, status_is},
};

/// An order committed without lines, its lines committed later in another transaction.
async fn insert_order_then_lines(db: &PgPool) -> Uuid {
    let id = Uuid::new_v4();
    sqlx::query("INSERT INTO orders (id, vendor_id, total_amount) VALUES ($1, $2, 30)")
        .bind(id)
        .bind(VENDOR)
        .execute(db)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO order_lines (order_id, sku, quantity, unit_price)
         VALUES ($1, 'SKU-A', 2, 10), ($1, 'SKU-B', 1, 10)",
    )
    .bind(id)
    .execute(db)
    .await
    .unwrap();
    id
}

async fn heartbeat(app: &crate::helpers::TestApp, token: &str) {
    let response = app
        .agent_post("/api/agents/heartbeat", token, &json!({"vendorId": VENDOR}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

async fn agent_get(app: &crate::helpers::TestApp, path: &str, token: &str) -> (StatusCode, Value) {
    let response = reqwest::Client::new()
        .get(app.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[sqlx::test]
async fn the_order_is_read_when_delivered_so_lines_committed_later_reach_the_agent(db: PgPool) {
    let app = order_app(db.clone(), &[]).await;
    // The order and its lines commit before the agent exists: nothing is delivered meanwhile.
    let order_id = insert_order_then_lines(&db).await;
    let stored_at_insert: Value =
        sqlx::query_scalar("SELECT payload FROM sync_jobs WHERE postgres_order_id = $1")
            .bind(order_id)
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!(
        stored_at_insert["order"]["lines"],
        json!([]),
        "the job was created when the order alone committed"
    );

    let agent = MockAgent::start(Reply::Done("ERP-LINES".into())).await;
    let token = format!("tok-{}", Uuid::new_v4().simple());
    app.register_agent_at(VENDOR, &token, &agent.url).await;
    heartbeat(&app, &token).await;
    eventually(Duration::from_secs(10), "job completed", || {
        status_is(&db, order_id, "completed")
    })
    .await;

    let calls = agent.calls();
    assert_eq!(calls.len(), 1);
    let lines = &calls[0].body["order"]["lines"];
    assert_eq!(lines.as_array().map(Vec::len), Some(2), "{lines}");
    assert_eq!(lines[0]["sku"], "SKU-A");
    assert_eq!(lines[1]["sku"], "SKU-B");

    // The body actually sent is on the job, and the attempt count is the calls made.
    let (status, page) = agent_get(&app, &format!("/api/agents/{VENDOR}/jobs"), &token).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["total"], 1);
    let job = &page["data"][0];
    assert_eq!(job["sentPayload"], calls[0].body);
    assert_eq!(
        job["retryCount"], 1,
        "one attempt made: a first-try success"
    );
    assert_eq!(job["erpReference"], "ERP-LINES");
}

#[sqlx::test]
async fn a_dead_letter_keeps_the_body_sent_and_counts_the_attempts_made(db: PgPool) {
    let app = order_app(db.clone(), &[("BREAKER_MIN_CALLS", "100")]).await;
    let agent = MockAgent::start(Reply::Status(503)).await;
    let token = format!("tok-{}", Uuid::new_v4().simple());
    app.register_agent_at(VENDOR, &token, &agent.url).await;
    heartbeat(&app, &token).await;

    let order_id = insert_order(&db, VENDOR).await;
    eventually(Duration::from_secs(20), "job failed", || {
        status_is(&db, order_id, "failed")
    })
    .await;
    let calls = agent.calls();
    assert_eq!(calls.len(), 3, "ORDER_SYNC_MAX_ATTEMPTS calls");
    assert_eq!(job_of(&db, order_id).await["attempts"], 3);

    let (status, page) = agent_get(&app, &format!("/api/agents/{VENDOR}/dlq"), &token).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["total"], 1);
    let entry = &page["data"][0];
    assert_eq!(entry["attemptCount"], 3, "attempts made, not one more");
    assert_eq!(entry["orderId"], order_id.to_string());
    assert_eq!(
        entry["sentPayload"], calls[2].body,
        "the body the last attempt sent"
    );
    assert!(entry["failureReason"].as_str().unwrap().contains("503"));

    // The admin view carries the same payload.
    let admin: Value = app
        .admin_get(&format!("/api/admin/dlq?vendorId={VENDOR}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(admin["data"][0]["sentPayload"], calls[2].body);
}

#[sqlx::test]
async fn a_refused_signature_is_retried_not_dead_lettered(db: PgPool) {
    let app = order_app(db.clone(), &[("BREAKER_MIN_CALLS", "100")]).await;
    let agent = MockAgent::start(Reply::Done("ERP-AFTER-401".into())).await;
    agent.then(Reply::Status(401));
    let token = format!("tok-{}", Uuid::new_v4().simple());
    app.register_agent_at(VENDOR, &token, &agent.url).await;
    heartbeat(&app, &token).await;

    let order_id = insert_order(&db, VENDOR).await;
    eventually(Duration::from_secs(10), "job completed", || {
        status_is(&db, order_id, "completed")
    })
    .await;
    assert_eq!(agent.calls().len(), 2, "the 401 was retried");
    assert_eq!(job_of(&db, order_id).await["attempts"], 2);
    let dead: i64 = sqlx::query_scalar("SELECT count(*) FROM dead_letter_queue")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(dead, 0);
}

#[sqlx::test]
async fn an_agent_reads_only_its_own_jobs_and_dead_letters(db: PgPool) {
    let app = order_app(db.clone(), &[]).await;
    let token = app.register_agent(VENDOR).await;
    let other_token = app.register_agent("vendor-b").await;
    // A job of each vendor (no agent is online: they stay pending).
    insert_order(&db, VENDOR).await;
    insert_order(&db, "vendor-b").await;

    let (status, mine) = agent_get(&app, &format!("/api/agents/{VENDOR}/jobs"), &token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(mine["total"], 1);
    assert_eq!(mine["data"][0]["status"], "pending");
    assert_eq!(mine["data"][0]["retryCount"], 0, "no attempt made yet");
    assert!(
        mine["data"][0].get("payload").is_none(),
        "the agent view is its own shape"
    );

    for path in ["jobs", "dlq"] {
        let (status, body) =
            agent_get(&app, &format!("/api/agents/{VENDOR}/{path}"), &other_token).await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "another vendor's token: {body}"
        );
        assert!(body["error"]["code"].is_string());
        let (status, _) = agent_get(&app, &format!("/api/agents/{VENDOR}/{path}"), "").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let (status, theirs) = agent_get(&app, "/api/agents/vendor-b/jobs", &other_token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(theirs["total"], 1);
    assert_ne!(theirs["data"][0]["id"], mine["data"][0]["id"]);

    let (status, _) = agent_get(&app, "/api/agents/nobody/jobs", &token).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "unknown vendor");
    let (status, _) = agent_get(&app, &format!("/api/agents/{VENDOR}/jobs?limit=0"), &token).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, page) = agent_get(
        &app,
        &format!("/api/agents/{VENDOR}/dlq?page=1&limit=5"),
        &token,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["total"], 0);
    assert_eq!(page["limit"], 5);

    let admin = app
        .admin_get(&format!("/api/agents/{VENDOR}/jobs"))
        .send()
        .await
        .unwrap();
    assert_eq!(admin.status(), StatusCode::OK, "the admin key reads it too");
}

async fn ingest_app(db: PgPool) -> (crate::helpers::TestApp, String) {
    crate::ingest::setup(db).await
}

fn item(sku: &str, price: Value) -> Value {
    json!({"sku": sku, "name": "Item", "unitCode": "PCE", "vatCode": "T1",
           "familyCode": "FRUITS", "price": price, "contentHash": format!("h-{sku}"),
           "lastModifiedAt": ts(1)})
}

async fn push(app: &crate::helpers::TestApp, token: &str, path: &str, body: Value) -> Value {
    let response = app.agent_post(path, token, &body).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

#[sqlx::test]
async fn unmapped_family_and_subfamily_are_written_with_warnings(db: PgPool) {
    let (app, token) = ingest_app(db.clone()).await;
    let mut unmapped = item("SKU-1", json!(1.5));
    unmapped["familyCode"] = json!("VEGGIES");
    unmapped["subfamilyCode"] = json!("ROOTS");
    let mut mapped = item("SKU-2", json!(2));
    mapped["subfamilyCode"] = Value::Null;
    let report = push(
        &app,
        &token,
        "/api/sync/items",
        json!({"vendorId": VENDOR, "items": [unmapped, mapped]}),
    )
    .await;
    assert_eq!(report["processed"], 2, "{report}");
    assert_eq!(report["results"][0]["status"], "processed");
    assert_eq!(
        report["results"][0]["warnings"],
        json!(["unmapped_family: VEGGIES", "unmapped_subfamily: ROOTS"])
    );
    assert!(
        report["results"][1].get("warnings").is_none(),
        "nothing dropped, no warnings: {report}"
    );
    let family: Option<String> =
        sqlx::query_scalar("SELECT family_code FROM items WHERE sku = 'SKU-1'")
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!(family, None, "stored as null");
}

#[sqlx::test]
async fn a_number_sent_as_a_string_is_invalid(db: PgPool) {
    let (app, token) = ingest_app(db.clone()).await;
    let report = push(
        &app,
        &token,
        "/api/sync/items",
        json!({"vendorId": VENDOR, "items": [item("SKU-S", json!("1.5")), item("SKU-N", json!(1.5))]}),
    )
    .await;
    assert_eq!(report["results"][0]["status"], "failed", "{report}");
    assert_eq!(report["results"][0]["reason"], "invalid: price");
    assert_eq!(report["results"][1]["status"], "processed");

    push(
        &app,
        &token,
        "/api/sync/warehouses",
        json!({"vendorId": VENDOR, "warehouses": [{"erpWarehouseId": "W1", "name": "Main",
               "contentHash": "w1", "lastModifiedAt": ts(1)}]}),
    )
    .await;
    let stock = |quantity: Value, reserved: Value| {
        json!({"sku": "SKU-N", "quantity": quantity, "reservedQuantity": reserved,
               "contentHash": "s1", "lastModifiedAt": ts(1)})
    };
    for (record, field) in [
        (stock(json!("3"), json!(0)), "invalid: quantity"),
        (stock(json!(3), json!("1")), "invalid: reservedQuantity"),
    ] {
        let report = push(
            &app,
            &token,
            "/api/sync/stock",
            json!({"vendorId": VENDOR, "warehouseId": "W1", "stock": [record]}),
        )
        .await;
        assert_eq!(report["results"][0]["reason"], field, "{report}");
    }
}

#[sqlx::test]
async fn decimals_beyond_the_column_scale_are_stored_rounded_with_a_warning(db: PgPool) {
    let (app, token) = ingest_app(db.clone()).await;
    let report = push(
        &app,
        &token,
        "/api/sync/items",
        json!({"vendorId": VENDOR, "items": [item("SKU-R", json!(1.23456)), item("SKU-E", json!(1.2345))]}),
    )
    .await;
    assert_eq!(
        report["results"][0]["warnings"],
        json!(["rounded: price"]),
        "{report}"
    );
    assert!(report["results"][1].get("warnings").is_none(), "{report}");
    let price: String = sqlx::query_scalar("SELECT price::text FROM items WHERE sku = 'SKU-R'")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(price, "1.2346", "half away from zero, 4 places");

    push(
        &app,
        &token,
        "/api/sync/warehouses",
        json!({"vendorId": VENDOR, "warehouses": [{"erpWarehouseId": "W1", "name": "Main",
               "contentHash": "w1", "lastModifiedAt": ts(1)}]}),
    )
    .await;
    let report = push(
        &app,
        &token,
        "/api/sync/stock",
        json!({"vendorId": VENDOR, "warehouseId": "W1", "stock": [
            {"sku": "SKU-R", "quantity": 2.0005, "reservedQuantity": 0.0004, "contentHash": "s1", "lastModifiedAt": ts(1)}]}),
    )
    .await;
    assert_eq!(
        report["results"][0]["warnings"],
        json!(["rounded: quantity", "rounded: reservedQuantity"]),
        "{report}"
    );
    let (quantity, reserved): (String, String) =
        sqlx::query_as("SELECT quantity::text, reserved_quantity::text FROM stock")
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!((quantity.as_str(), reserved.as_str()), ("2.001", "0.000"));
}

#[test]
fn the_guide_figures_are_the_defaults() {
    let guide = std::fs::read_to_string("docs/agent-protocol.md").unwrap();
    let settings =
        erp_sync::config::Settings::from_vars(crate::helpers::test_vars("unused")).unwrap();
    let table = guide
        .split("## 10. Figures this guide relies on")
        .nth(1)
        .expect("the guide has its figures table");
    let mut rows = 0;
    for line in table
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| setting"))
    {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let (name, documented) = (cells[1].trim_matches('`'), cells[2]);
        let actual = match name {
            "INGEST_RATE_LIMIT_PER_MIN" => settings.ingest_rate_limit_per_min.to_string(),
            "INGEST_BATCH_RATE_LIMIT_PER_MIN" => {
                settings.ingest_batch_rate_limit_per_min.to_string()
            }
            "AUTH_FAILURES_PER_MIN" => settings.auth_failures_per_min.to_string(),
            "AGENT_DEGRADED_AFTER_SECS" => settings.agent_degraded_after.as_secs().to_string(),
            "AGENT_OFFLINE_AFTER_SECS" => settings.agent_offline_after.as_secs().to_string(),
            "AGENT_TIMEOUT_MS" => settings.agent_timeout.as_millis().to_string(),
            "ORDER_SYNC_MAX_ATTEMPTS" => settings.order_sync_max_attempts.to_string(),
            "ORDER_SYNC_BACKOFF_MS" => settings.order_sync_backoff.as_millis().to_string(),
            "ORDER_SYNC_CALLBACK_TIMEOUT_MS" => {
                settings.order_sync_callback_timeout.as_millis().to_string()
            }
            "ORDER_SYNC_MAX_RETRY_AFTER_SECS" => {
                settings.order_sync_max_retry_after.as_secs().to_string()
            }
            "BREAKER_MIN_CALLS" => settings.breaker_min_calls.to_string(),
            "BREAKER_OPEN_MS" => settings.breaker_open_for.as_millis().to_string(),
            "incremental records per request" => {
                erp_sync::ingest::model::INCREMENTAL_LIMIT.to_string()
            }
            "records per `/batch` request" => erp_sync::ingest::model::BATCH_LIMIT.to_string(),
            other => {
                panic!("the guide's figures table names {other:?}, which this test does not know")
            }
        };
        assert_eq!(documented, actual, "docs/agent-protocol.md §10: {name}");
        rows += 1;
    }
    assert_eq!(rows, 14, "every figure checked");
}

#[sqlx::test]
async fn items_stock_and_warehouses_share_one_bucket_and_the_batch_routes_another(db: PgPool) {
    let app = crate::helpers::spawn_app_with(db, |vars| {
        vars.push(("INGEST_RATE_LIMIT_PER_MIN".into(), "2".into()));
        vars.push(("INGEST_BATCH_RATE_LIMIT_PER_MIN".into(), "1".into()));
    })
    .await;
    let token = app.register_agent(VENDOR).await;
    let status = |path: &'static str, body: Value| {
        let request = app.agent_post(path, &token, &body);
        async move { request.send().await.unwrap() }
    };
    let warehouses = json!({"vendorId": VENDOR, "warehouses": []});
    let items = json!({"vendorId": VENDOR, "items": []});
    let stock = json!({"vendorId": VENDOR, "warehouseId": "W1", "stock": []});
    assert_ne!(
        status("/api/sync/items", items.clone()).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_ne!(
        status("/api/sync/warehouses", warehouses.clone())
            .await
            .status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    let limited = status("/api/sync/stock", stock.clone()).await;
    assert_eq!(
        limited.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "the third of the shared bucket"
    );
    let retry_after: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=30).contains(&retry_after), "{retry_after}");

    assert_ne!(
        status("/api/sync/items/batch", items).await.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "another bucket"
    );
    let limited = status("/api/sync/warehouses/batch", warehouses).await;
    assert_eq!(
        limited.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "one bucket for every /batch route"
    );
    let body: Value = limited.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
}

#[sqlx::test]
async fn an_item_leaves_the_catalogue_by_is_active_false_never_by_omission(db: PgPool) {
    let (app, token) = ingest_app(db.clone()).await;
    let active = |sku: &'static str| {
        let db = db.clone();
        async move {
            sqlx::query_scalar::<_, bool>("SELECT is_active FROM items WHERE sku = $1")
                .bind(sku)
                .fetch_one(&db)
                .await
                .unwrap()
        }
    };
    push(
        &app,
        &token,
        "/api/sync/items/batch",
        json!({"vendorId": VENDOR, "items": [item("KEEP", json!(1)), item("GONE", json!(1))]}),
    )
    .await;
    // A full push without GONE: it stays active.
    let mut keep = item("KEEP", json!(2));
    keep["contentHash"] = json!("h-keep-2");
    keep["lastModifiedAt"] = json!(ts(2));
    push(
        &app,
        &token,
        "/api/sync/items/batch",
        json!({"vendorId": VENDOR, "items": [keep]}),
    )
    .await;
    assert!(
        active("GONE").await,
        "missing from a full /batch push: still active"
    );

    let mut gone = item("GONE", json!(1));
    gone["isActive"] = json!(false);
    gone["contentHash"] = json!("h-gone-2");
    gone["lastModifiedAt"] = json!(ts(2));
    let report = push(
        &app,
        &token,
        "/api/sync/items",
        json!({"vendorId": VENDOR, "items": [gone]}),
    )
    .await;
    assert_eq!(report["processed"], 1, "{report}");
    assert!(!active("GONE").await, "isActive: false deactivates");
    assert!(active("KEEP").await);
}
