//! Direct ingest of items, stock and warehouses (plan scenarios 2–7 and the races).

use chrono::{DateTime, Duration, Utc};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::{PgPool, Row};

use crate::helpers::{TestApp, spawn_app_with};

pub(crate) const VENDOR: &str = "vendor-a";

pub(crate) async fn seed_mappings(app: &TestApp, vendor: &str) {
    let seed = json!({"vendorId": vendor, "mappings": [
        {"mappingType": "unit", "erpCode": "PCE", "restoCode": "piece", "restoLabel": "Pièce"},
        {"mappingType": "unit", "erpCode": "KG", "restoCode": "kg", "restoLabel": "Kilogramme"},
        {"mappingType": "vat", "erpCode": "T1", "restoCode": "vat_20", "restoLabel": "TVA 20 %"},
        {"mappingType": "family", "erpCode": "FRUITS", "restoCode": "fruits", "restoLabel": "Fruits"}
    ]});
    let response = app
        .admin_post("/api/admin/mappings/seed", &seed)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

pub(crate) fn ts(minutes: i64) -> String {
    (DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
        + Duration::minutes(minutes))
    .to_rfc3339()
}

pub(crate) fn item(sku: &str, hash: &str, minutes: i64) -> Value {
    json!({"sku": sku, "name": format!("Item {sku}"), "unitCode": "PCE", "vatCode": "T1", "familyCode": "FRUITS",
           "subfamilyCode": "UNMAPPED-SUB", "price": 12.5, "contentHash": hash, "lastModifiedAt": ts(minutes)})
}

pub(crate) async fn post(
    app: &TestApp,
    path: &str,
    token: &str,
    body: &Value,
) -> (StatusCode, Value) {
    let response = app.agent_post(path, token, body).send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap())
}

async fn push_items(app: &TestApp, token: &str, items: Vec<Value>) -> Value {
    let (status, body) = post(
        app,
        "/api/sync/items",
        token,
        &json!({"vendorId": VENDOR, "items": items}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// An app whose ingest budgets do not get in the way (the limit has its own test).
pub(crate) async fn setup(db: PgPool) -> (TestApp, String) {
    let app = spawn_app_with(db, |vars| {
        vars.push(("INGEST_RATE_LIMIT_PER_MIN".into(), "10000".into()));
        vars.push(("INGEST_BATCH_RATE_LIMIT_PER_MIN".into(), "10000".into()));
    })
    .await;
    let token = app.register_agent(VENDOR).await;
    seed_mappings(&app, VENDOR).await;
    (app, token)
}

pub(crate) async fn count(db: &PgPool, table: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
        .fetch_one(db)
        .await
        .unwrap()
}

pub(crate) fn statuses(report: &Value) -> Vec<(String, String)> {
    report["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["status"].as_str().unwrap().to_owned(),
                r["reason"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

#[sqlx::test]
async fn items_are_stored_with_their_mapped_codes(db: PgPool) {
    let (app, token) = setup(db).await;
    let report = push_items(
        &app,
        &token,
        vec![item("SKU-1", "h1", 0), item("SKU-2", "h2", 0)],
    )
    .await;
    assert_eq!(
        (
            report["processed"].as_u64(),
            report["skipped"].as_u64(),
            report["failed"].as_u64()
        ),
        (Some(2), Some(0), Some(0))
    );
    assert_eq!(report["results"][0]["sku"], "SKU-1");
    assert_eq!(report["results"][0]["status"], "processed");

    let row = sqlx::query(
        "SELECT erp_unit_code, unit_code, erp_vat_code, vat_code, erp_family_code, family_code,
                erp_subfamily_code, subfamily_code, price::text, content_hash, erp_updated_at, last_synced_at
         FROM items WHERE vendor_id = $1 AND sku = 'SKU-1'",
    )
    .bind(VENDOR)
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(
        (row.get::<String, _>(0), row.get::<String, _>(1)),
        ("PCE".into(), "piece".into())
    );
    assert_eq!(
        (row.get::<String, _>(2), row.get::<String, _>(3)),
        ("T1".into(), "vat_20".into())
    );
    assert_eq!(
        (row.get::<String, _>(4), row.get::<Option<String>, _>(5)),
        ("FRUITS".into(), Some("fruits".into()))
    );
    assert_eq!(
        row.get::<Option<String>, _>(7),
        None,
        "an unmapped subfamily becomes null"
    );
    assert_eq!(
        row.get::<Option<String>, _>(6).as_deref(),
        Some("UNMAPPED-SUB"),
        "the ERP code is kept"
    );
    assert_eq!(row.get::<String, _>(8), "12.5000");
    assert_eq!(row.get::<String, _>(9), "h1");
    let synced: DateTime<Utc> = row.get(11);
    assert!(Utc::now() - synced < Duration::minutes(1));
}

#[sqlx::test]
async fn same_hash_is_skipped_and_older_is_stale(db: PgPool) {
    let (app, token) = setup(db).await;
    push_items(
        &app,
        &token,
        vec![item("SKU-1", "h1", 10), item("SKU-2", "h2", 10)],
    )
    .await;
    let before: DateTime<Utc> =
        sqlx::query_scalar("SELECT updated_at FROM items WHERE sku = 'SKU-1'")
            .fetch_one(&app.db)
            .await
            .unwrap();

    let report = push_items(
        &app,
        &token,
        vec![item("SKU-1", "h1", 20), item("SKU-2", "h2", 20)],
    )
    .await;
    assert_eq!(report["skipped"], 2);
    assert_eq!(
        statuses(&report),
        [
            ("skipped".into(), "no_changes".into()),
            ("skipped".into(), "no_changes".into())
        ]
    );
    let after: DateTime<Utc> =
        sqlx::query_scalar("SELECT updated_at FROM items WHERE sku = 'SKU-1'")
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(before, after, "an unchanged record is not rewritten");

    let report = push_items(&app, &token, vec![item("SKU-1", "h1-old", 5)]).await;
    assert_eq!(statuses(&report), [("skipped".into(), "stale".into())]);
    let hash: String = sqlx::query_scalar("SELECT content_hash FROM items WHERE sku = 'SKU-1'")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(hash, "h1", "a stale record never overwrites");

    let report = push_items(&app, &token, vec![item("SKU-1", "h1-new", 30)]).await;
    assert_eq!(report["processed"], 1);
}

#[sqlx::test]
async fn one_bad_record_fails_alone(db: PgPool) {
    let (app, token) = setup(db).await;
    let mut unmapped_unit = item("SKU-U", "hu", 0);
    unmapped_unit["unitCode"] = json!("PIÈCE");
    let mut unmapped_vat = item("SKU-V", "hv", 0);
    unmapped_vat["vatCode"] = json!("T9");
    let mut bad_price = item("SKU-P", "hp", 0);
    bad_price["price"] = json!("twelve");
    let mut negative = item("SKU-N", "hn", 0);
    negative["price"] = json!(-1);
    let mut no_name = item("SKU-M", "hm", 0);
    no_name.as_object_mut().unwrap().remove("name");
    let mut future = item("SKU-F", "hf", 0);
    future["lastModifiedAt"] = json!((Utc::now() + Duration::days(30)).to_rfc3339());
    let report = push_items(
        &app,
        &token,
        vec![
            item("SKU-OK", "ok", 0),
            unmapped_unit,
            unmapped_vat,
            bad_price,
            negative,
            no_name,
            future,
            json!("not an object"),
        ],
    )
    .await;
    assert_eq!(
        (report["processed"].as_u64(), report["failed"].as_u64()),
        (Some(1), Some(7))
    );
    let reasons: Vec<String> = statuses(&report).into_iter().map(|(_, r)| r).collect();
    assert_eq!(
        reasons,
        [
            "",
            "unmapped_unit: PIÈCE",
            "unmapped_vat: T9",
            "invalid: price",
            "invalid: price",
            "invalid: name",
            "invalid: lastModifiedAt",
            "invalid: record"
        ]
    );
    assert_eq!(
        report["results"][3]["sku"], "SKU-P",
        "the key of an invalid record is reported when present"
    );
    assert_eq!(count(&app.db, "items").await, 1);
}

#[sqlx::test]
async fn duplicate_keys_in_one_request_keep_the_latest(db: PgPool) {
    let (app, token) = setup(db).await;
    let report = push_items(
        &app,
        &token,
        vec![
            item("SKU-1", "newest", 30),
            item("SKU-1", "older", 10),
            item("SKU-1", "tie-later", 30),
        ],
    )
    .await;
    assert_eq!(
        statuses(&report),
        [
            ("skipped".into(), "stale".into()),
            ("skipped".into(), "stale".into()),
            ("processed".into(), "".into())
        ]
    );
    let hash: String = sqlx::query_scalar("SELECT content_hash FROM items WHERE sku = 'SKU-1'")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(hash, "tie-later");
}

#[sqlx::test]
async fn whole_request_errors_write_nothing(db: PgPool) {
    let (app, token) = setup(db).await;
    let too_many: Vec<Value> = (0..501)
        .map(|i| item(&format!("SKU-{i}"), "h", 0))
        .collect();
    let (status, body) = post(
        &app,
        "/api/sync/items",
        &token,
        &json!({"vendorId": VENDOR, "items": too_many}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["code"], "validation_failed");

    let too_many: Vec<Value> = (0..5001)
        .map(|i| item(&format!("SKU-{i}"), "h", 0))
        .collect();
    let (status, _) = post(
        &app,
        "/api/sync/items/batch",
        &token,
        &json!({"vendorId": VENDOR, "items": too_many}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

    let malformed = app
        .client
        .post(app.url("/api/sync/items"))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(format!(
            "{{\"vendorId\": \"{VENDOR}\", \"items\": [{{\"sku\": \"A\"}}"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), StatusCode::BAD_REQUEST);

    let (status, _) = post(
        &app,
        "/api/sync/items",
        &token,
        &json!({"items": [item("SKU-1", "h", 0)]}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "no vendorId");
    let (status, _) = post(
        &app,
        "/api/sync/items",
        &token,
        &json!({"vendorId": VENDOR, "items": "nope"}),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "items is not a list"
    );
    let (status, _) = post(
        &app,
        "/api/sync/stock",
        &token,
        &json!({"vendorId": VENDOR, "warehouseId": "W-NOPE", "stock": []}),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "unknown warehouse"
    );

    assert_eq!(count(&app.db, "items").await, 0);
    assert_eq!(count(&app.db, "stock").await, 0);
}

#[sqlx::test]
async fn another_vendors_token_writes_nothing(db: PgPool) {
    let (app, _token_a) = setup(db).await;
    let token_b = app.register_agent("vendor-b").await;
    let (status, _) = post(
        &app,
        "/api/sync/items",
        &token_b,
        &json!({"vendorId": VENDOR, "items": [item("SKU-1", "h", 0)]}),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = post(
        &app,
        "/api/sync/items",
        "no-such-token-0000000",
        &json!({"vendorId": VENDOR, "items": [item("SKU-1", "h", 0)]}),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(count(&app.db, "items").await, 0);

    // Vendor B writing its own catalogue never touches vendor A's rows with the same SKU.
    seed_mappings(&app, "vendor-b").await;
    push_items(
        &app,
        &app.register_agent(VENDOR).await,
        vec![item("SKU-1", "a", 0)],
    )
    .await;
    let (status, _) = post(
        &app,
        "/api/sync/items",
        &token_b,
        &json!({"vendorId": "vendor-b", "items": [item("SKU-1", "b", 5)]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let hash: String =
        sqlx::query_scalar("SELECT content_hash FROM items WHERE vendor_id = $1 AND sku = 'SKU-1'")
            .bind(VENDOR)
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(hash, "a");
}

#[sqlx::test]
async fn warehouses_then_stock(db: PgPool) {
    let (app, token) = setup(db).await;
    let (status, report) = post(
        &app,
        "/api/sync/warehouses",
        &token,
        &json!({"vendorId": VENDOR, "warehouses": [
            {"erpWarehouseId": "W1", "name": "Rungis", "address": "1 rue du Marché", "contentHash": "w1", "lastModifiedAt": ts(0)},
            {"erpWarehouseId": "W2", "name": "Lyon", "isActive": false, "contentHash": "w2", "lastModifiedAt": ts(0)},
            {"erpWarehouseId": "W3", "contentHash": "w3", "lastModifiedAt": ts(0)}
        ]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(report["processed"], 2);
    assert_eq!(report["results"][0]["erpWarehouseId"], "W1");
    assert!(report["results"][0].get("sku").is_none());
    assert_eq!(report["results"][2]["reason"], "invalid: name");
    let active: bool =
        sqlx::query_scalar("SELECT is_active FROM warehouses WHERE erp_warehouse_id = 'W2'")
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert!(!active);

    push_items(
        &app,
        &token,
        vec![item("SKU-1", "h1", 0), item("SKU-2", "h2", 0)],
    )
    .await;
    let stock = |sku: &str, qty: f64, hash: &str, minutes: i64| json!({"sku": sku, "quantity": qty, "reservedQuantity": 2, "contentHash": hash, "lastModifiedAt": ts(minutes)});
    let (status, report) = post(
        &app,
        "/api/sync/stock",
        &token,
        &json!({"vendorId": VENDOR, "warehouseId": "W1", "stock": [stock("SKU-1", 10.5, "s1", 0), stock("SKU-404", 1.0, "s4", 0), stock("SKU-2", -3.0, "s2", 0)]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        statuses(&report),
        [
            ("processed".into(), "".into()),
            ("failed".into(), "unknown_sku".into()),
            ("processed".into(), "".into())
        ]
    );
    let qty: String = sqlx::query_scalar(
        "SELECT s.quantity::text FROM stock s JOIN items i ON i.id = s.item_id JOIN warehouses w ON w.id = s.warehouse_id
         WHERE i.sku = 'SKU-1' AND w.erp_warehouse_id = 'W1'",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(qty, "10.500");

    let (_, report) = post(&app, "/api/sync/stock", &token, &json!({"vendorId": VENDOR, "warehouseId": "W1", "stock": [stock("SKU-1", 99.0, "s1", 5), stock("SKU-2", 1.0, "s2-old", -5)]})).await;
    assert_eq!(
        statuses(&report),
        [
            ("skipped".into(), "no_changes".into()),
            ("skipped".into(), "stale".into())
        ]
    );

    // The same SKU in another warehouse is another row.
    let (_, report) = post(
        &app,
        "/api/sync/stock/batch",
        &token,
        &json!({"vendorId": VENDOR, "warehouseId": "W2", "stock": [stock("SKU-1", 1.0, "s1", 0)]}),
    )
    .await;
    assert_eq!(report["processed"], 1);
    assert_eq!(count(&app.db, "stock").await, 3);
}

#[sqlx::test]
async fn a_batch_of_5000_is_processed_in_chunks(db: PgPool) {
    let (app, token) = setup(db).await;
    let items: Vec<Value> = (0..5000)
        .map(|i| item(&format!("SKU-{i:05}"), &format!("h{i}"), 0))
        .collect();
    let (status, report) = post(
        &app,
        "/api/sync/items/batch",
        &token,
        &json!({"vendorId": VENDOR, "items": items}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(report["processed"], 5000);
    assert_eq!(report["results"].as_array().unwrap().len(), 5000);
    assert_eq!(report["results"][4999]["sku"], "SKU-04999");
    assert_eq!(count(&app.db, "items").await, 5000);
}

#[sqlx::test]
async fn concurrent_old_and_new_versions_end_with_the_new(db: PgPool) {
    let (app, token) = setup(db).await;
    for round in 0..20_i64 {
        let sku = format!("RACE-{round}");
        let old = json!({"vendorId": VENDOR, "items": [item(&sku, "old", 10)]});
        let new = json!({"vendorId": VENDOR, "items": [item(&sku, "new", 20)]});
        // Alternate who is sent first; both are in flight together.
        let (first, second) = if round % 2 == 0 {
            (&old, &new)
        } else {
            (&new, &old)
        };
        let (a, b) = tokio::join!(
            app.agent_post("/api/sync/items", &token, first).send(),
            app.agent_post("/api/sync/items", &token, second).send()
        );
        assert_eq!(a.unwrap().status(), StatusCode::OK);
        assert_eq!(b.unwrap().status(), StatusCode::OK);
        let hash: String = sqlx::query_scalar("SELECT content_hash FROM items WHERE sku = $1")
            .bind(&sku)
            .fetch_one(&app.db)
            .await
            .unwrap();
        assert_eq!(hash, "new", "round {round}");
    }
}

#[sqlx::test]
async fn ingest_is_rate_limited_per_vendor(db: PgPool) {
    let app = spawn_app_with(db, |vars| {
        vars.push(("INGEST_RATE_LIMIT_PER_MIN".into(), "3".into()));
        vars.push(("INGEST_BATCH_RATE_LIMIT_PER_MIN".into(), "1".into()));
    })
    .await;
    let token = app.register_agent(VENDOR).await;
    let other = app.register_agent("vendor-b").await;
    let body = json!({"vendorId": VENDOR, "items": []});
    for _ in 0..3 {
        assert_eq!(
            app.agent_post("/api/sync/items", &token, &body)
                .send()
                .await
                .unwrap()
                .status(),
            StatusCode::OK
        );
    }
    let limited = app
        .agent_post("/api/sync/items", &token, &body)
        .send()
        .await
        .unwrap();
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(limited.headers().contains_key("retry-after"));
    let other_vendor = app
        .agent_post(
            "/api/sync/items",
            &other,
            &json!({"vendorId": "vendor-b", "items": []}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        other_vendor.status(),
        StatusCode::OK,
        "budgets are per vendor"
    );
    assert_eq!(
        app.agent_post("/api/sync/items/batch", &token, &body)
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        app.agent_post("/api/sync/items/batch", &token, &body)
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[sqlx::test]
async fn the_upsert_itself_refuses_older_data(db: PgPool) {
    // The guard in the statement, without the read before it: what protects racing requests.
    use erp_sync::ingest::queries::{ItemRows, upsert_items};
    let rows = |hash: &'static str, minutes: i64| ItemRows {
        sku: vec!["SKU-1"],
        name: vec!["n"],
        description: vec![None],
        erp_unit_code: vec!["PCE"],
        erp_vat_code: vec!["T1"],
        erp_family_code: vec![None],
        erp_subfamily_code: vec![None],
        unit_code: vec!["piece"],
        vat_code: vec!["vat"],
        family_code: vec![None],
        subfamily_code: vec![None],
        price: vec![rust_decimal::Decimal::ONE],
        is_active: vec![true],
        content_hash: vec![hash],
        erp_updated_at: vec![
            DateTime::parse_from_rfc3339(&ts(minutes))
                .unwrap()
                .with_timezone(&Utc),
        ],
    };
    assert_eq!(
        upsert_items(&db, VENDOR, &rows("new", 20)).await.unwrap(),
        ["SKU-1"]
    );
    assert!(
        upsert_items(&db, VENDOR, &rows("old", 10))
            .await
            .unwrap()
            .is_empty(),
        "older refused"
    );
    let hash: String = sqlx::query_scalar("SELECT content_hash FROM items")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(hash, "new");
}

/// The mix a chunk can hold, judged against SKU-1..4 stored at minute 10 with hashes h1..h4:
/// superseded in the request, older than stored, changed, unmapped unit (changed), unmapped
/// unit (unchanged: `no_changes` comes first), and new.
fn mixed_push() -> Vec<Value> {
    let mut unmapped_changed = item("SKU-4", "h4-new", 20);
    unmapped_changed["unitCode"] = json!("BOX");
    let mut unmapped_unchanged = item("SKU-1", "h1", 20);
    unmapped_unchanged["unitCode"] = json!("BOX");
    vec![
        item("SKU-2", "h2", 5),
        item("SKU-3", "h3-old", 5),
        item("SKU-2", "h2-new", 15),
        unmapped_changed,
        unmapped_unchanged,
        item("SKU-5", "h5", 20),
    ]
}

fn mixed_outcome() -> Vec<(String, String)> {
    [
        ("skipped", "stale"),
        ("skipped", "stale"),
        ("processed", ""),
        ("failed", "unmapped_unit: BOX"),
        ("skipped", "no_changes"),
        ("processed", ""),
    ]
    .map(|(s, r)| (s.to_owned(), r.to_owned()))
    .to_vec()
}

#[sqlx::test]
async fn written_first_or_read_first_a_chunk_gets_the_same_outcomes(db: PgPool) {
    // A vendor whose last chunk was mostly written has its next chunk written first (judged
    // after); one whose last chunk was mostly unchanged has it read first. Same report.
    let (app, token) = setup(db).await;
    let stored = || (1..=4).map(|i| item(&format!("SKU-{i}"), &format!("h{i}"), 10));
    push_items(&app, &token, stored().collect()).await;
    let written_first = push_items(&app, &token, mixed_push()).await;
    assert_eq!(statuses(&written_first), mixed_outcome(), "written first");

    // Back to the stored state, then an unchanged push: the next chunk is read first.
    sqlx::query("DELETE FROM items")
        .execute(&app.db)
        .await
        .unwrap();
    push_items(&app, &token, stored().collect()).await;
    let unchanged = push_items(&app, &token, stored().collect()).await;
    assert_eq!(unchanged["skipped"], 4);
    let read_first = push_items(&app, &token, mixed_push()).await;
    assert_eq!(statuses(&read_first), mixed_outcome(), "read first");
    assert_eq!(written_first, read_first);

    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT sku, content_hash FROM items ORDER BY sku")
            .fetch_all(&app.db)
            .await
            .unwrap();
    let expected = [
        ("SKU-1", "h1"),
        ("SKU-2", "h2-new"),
        ("SKU-3", "h3"),
        ("SKU-4", "h4"),
        ("SKU-5", "h5"),
    ];
    assert_eq!(
        rows,
        expected.map(|(s, h)| (s.to_owned(), h.to_owned())).to_vec()
    );
}

#[sqlx::test]
async fn the_written_first_upsert_refuses_older_and_unchanged_data(db: PgPool) {
    use erp_sync::ingest::queries::{ItemRows, upsert_changed_items};
    let rows = |hash: &'static str, minutes: i64| ItemRows {
        sku: vec!["SKU-1"],
        name: vec!["n"],
        description: vec![None],
        erp_unit_code: vec!["PCE"],
        erp_vat_code: vec!["T1"],
        erp_family_code: vec![None],
        erp_subfamily_code: vec![None],
        unit_code: vec!["piece"],
        vat_code: vec!["vat"],
        family_code: vec![None],
        subfamily_code: vec![None],
        price: vec![rust_decimal::Decimal::ONE],
        is_active: vec![true],
        content_hash: vec![hash],
        erp_updated_at: vec![
            DateTime::parse_from_rfc3339(&ts(minutes))
                .unwrap()
                .with_timezone(&Utc),
        ],
    };
    assert_eq!(
        upsert_changed_items(&db, VENDOR, &rows("new", 20))
            .await
            .unwrap(),
        ["SKU-1"]
    );
    let updated = || async {
        sqlx::query_scalar::<_, DateTime<Utc>>("SELECT updated_at FROM items")
            .fetch_one(&db)
            .await
            .unwrap()
    };
    let before = updated().await;
    assert!(
        upsert_changed_items(&db, VENDOR, &rows("new", 30))
            .await
            .unwrap()
            .is_empty(),
        "unchanged refused"
    );
    assert!(
        upsert_changed_items(&db, VENDOR, &rows("old", 10))
            .await
            .unwrap()
            .is_empty(),
        "older refused"
    );
    assert_eq!(updated().await, before, "nothing rewritten");
    assert_eq!(
        upsert_changed_items(&db, VENDOR, &rows("newer", 20))
            .await
            .unwrap(),
        ["SKU-1"],
        "changed at the same time: written"
    );
}
