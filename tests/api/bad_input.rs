//! Issue 10's bad inputs, each through the real router with the exact payload: a clear 4xx (or
//! a record-level `invalid: <field>`), never a 500, and nothing written by a refused request.

use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::{
    helpers::{API_KEY, spawn_app_with},
    ingest::{VENDOR, count, item, post, setup, statuses, ts},
};

const NUL: &str = "\u{0}";

/// Every row of the tables ingest and the agent routes write, as one string.
async fn snapshot(db: &PgPool) -> String {
    sqlx::query_scalar(
        "SELECT concat_ws('|',
            (SELECT string_agg(i::text, ',' ORDER BY i.id) FROM items i),
            (SELECT string_agg(w::text, ',' ORDER BY w.id) FROM warehouses w),
            (SELECT string_agg(s::text, ',' ORDER BY s.id) FROM stock s),
            (SELECT string_agg(a::text, ',' ORDER BY a.id) FROM agent_registry a),
            (SELECT string_agg(j::text, ',' ORDER BY j.id) FROM sync_jobs j),
            (SELECT string_agg(m::text, ',' ORDER BY m.id) FROM erp_code_mappings m))",
    )
    .fetch_one(db)
    .await
    .unwrap()
}

async fn error_body(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let text = response.text().await.unwrap();
    let body: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
    assert!(body["error"]["code"].is_string(), "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");
    (status, body)
}

const AGENT_BODY_ROUTES: [&str; 9] = [
    "/api/agents/heartbeat",
    "/api/agents/callback",
    "/api/agents/register",
    "/api/sync/items",
    "/api/sync/items/batch",
    "/api/sync/stock",
    "/api/sync/stock/batch",
    "/api/sync/warehouses",
    "/api/sync/warehouses/batch",
];

#[sqlx::test]
async fn a_nul_byte_in_a_vendor_id_is_a_4xx_in_bodies_paths_and_queries(db: PgPool) {
    let (app, token) = setup(db).await;
    let before = snapshot(&app.db).await;
    for route in AGENT_BODY_ROUTES {
        let response = app
            .agent_post(route, &token, &json!({"vendorId": NUL}))
            .send()
            .await
            .unwrap();
        let (status, _) = error_body(response).await;
        assert!(matches!(status.as_u16(), 401 | 422), "{route}: {status}");
    }
    for path in ["/api/agents/%00", "/api/agents/a%00b"] {
        for response in [
            app.admin_get(path).send().await.unwrap(),
            app.admin_delete(path).send().await.unwrap(),
        ] {
            let (status, body) = error_body(response).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body}");
            assert!(body["error"]["details"]["vendorId"].is_array(), "{body}");
        }
    }
    let reset = app
        .admin_post("/api/admin/circuit-breakers/%00/orders/reset", &json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(error_body(reset).await.0, StatusCode::BAD_REQUEST);
    for (path, parameter) in [
        ("/api/admin/mappings?vendorId=%00", "vendorId"),
        ("/api/admin/sync-jobs?vendorId=%00", "vendorId"),
        ("/api/admin/sync-jobs?status=%00", "status"),
        ("/api/admin/sync-jobs?status=pending%00", "status"),
        ("/api/admin/dlq?vendorId=%00", "vendorId"),
        ("/api/admin/mappings?page=0", "page"),
        ("/api/admin/dlq?limit=abc", "limit"),
    ] {
        let (status, body) = error_body(app.admin_get(path).send().await.unwrap()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{path}: {body}");
        assert!(
            body["error"]["details"][parameter].is_array(),
            "{path}: details name the parameter: {body}"
        );
    }
    let ok = app
        .admin_get("/api/admin/sync-jobs?status=pending&vendorId=vendor-a")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(snapshot(&app.db).await, before, "nothing written");
}

#[sqlx::test]
async fn a_nul_byte_in_free_text_fails_its_record_alone(db: PgPool) {
    let (app, token) = setup(db).await;
    let mut bad_name = item("SKU-N", "hn", 0);
    bad_name["name"] = json!(format!("Pomme{NUL}"));
    let mut bad_description = item("SKU-D", "hd", 0);
    bad_description["description"] = json!(format!("a{NUL}b"));
    let mut escape = item("SKU-E", "he", 0);
    escape["name"] = json!("red \u{1b}[31m");
    let mut multi_line = item("SKU-M", "hm", 0);
    multi_line["description"] = json!("line 1\r\n\tline 2");
    let (status, report) = post(
        &app,
        "/api/sync/items",
        &token,
        &json!({"vendorId": VENDOR, "items": [item("SKU-OK", "ok", 0), bad_name, bad_description, escape, multi_line]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(
        statuses(&report),
        [
            ("processed".into(), "".into()),
            ("failed".into(), "invalid: name".into()),
            ("failed".into(), "invalid: description".into()),
            ("failed".into(), "invalid: name".into()),
            ("processed".into(), "".into()),
        ]
    );
    assert_eq!(count(&app.db, "items").await, 2);

    let warehouse = |id: &str, name: &str, address: &str| json!({"erpWarehouseId": id, "name": name, "address": address, "contentHash": "w", "lastModifiedAt": ts(0)});
    let (status, report) = post(
        &app,
        "/api/sync/warehouses",
        &token,
        &json!({"vendorId": VENDOR, "warehouses": [
            warehouse("W1", "Rungis", "1 rue du Marché\n75001 Paris"),
            warehouse("W2", &format!("Lyon{NUL}"), ""),
            warehouse("W3", "Lille", NUL),
            warehouse("W4\u{202E}", "Bidi", ""),
            warehouse("\u{200B}W5", "Zero width", ""),
        ]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(
        statuses(&report),
        [
            ("processed".into(), "".into()),
            ("failed".into(), "invalid: name".into()),
            ("failed".into(), "invalid: address".into()),
            ("failed".into(), "invalid: erpWarehouseId".into()),
            ("failed".into(), "invalid: erpWarehouseId".into()),
        ]
    );
    assert!(
        report["results"][3].get("erpWarehouseId").is_none(),
        "an invalid key is not echoed: {report}"
    );
    assert_eq!(count(&app.db, "warehouses").await, 1);
}

#[sqlx::test]
async fn callback_text_with_a_nul_byte_is_a_422_keyed_by_json_names(db: PgPool) {
    let (app, token) = setup(db).await;
    let before = snapshot(&app.db).await;
    let job = uuid::Uuid::new_v4();
    for (field, value) in [
        ("erpReference", json!(format!("ERP{NUL}"))),
        ("erpReference", json!("x".repeat(101))),
        ("error", json!(format!("refused{NUL}"))),
    ] {
        let mut body =
            json!({"vendorId": VENDOR, "jobId": job, "status": "failed", "erpReference": "ERP-1"});
        body[field] = value;
        let response = app
            .agent_post("/api/agents/callback", &token, &body)
            .send()
            .await
            .unwrap();
        let (status, body) = error_body(response).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{field}: {body}");
        let details = body["error"]["details"].as_object().unwrap();
        assert!(details.contains_key(field), "{field}: {body}");
        assert!(
            !details.keys().any(|k| k.contains('_')),
            "details use JSON names: {body}"
        );
    }
    assert_eq!(snapshot(&app.db).await, before);
}

#[sqlx::test]
async fn timestamps_outside_postgres_range_fail_their_record_on_every_ingest_route(db: PgPool) {
    let (app, token) = setup(db).await;
    post(
        &app,
        "/api/sync/warehouses",
        &token,
        &json!({"vendorId": VENDOR, "warehouses": [{"erpWarehouseId": "W1", "name": "Rungis", "contentHash": "w", "lastModifiedAt": ts(0)}]}),
    )
    .await;
    post(
        &app,
        "/api/sync/items",
        &token,
        &json!({"vendorId": VENDOR, "items": [item("SKU-1", "h", 0)]}),
    )
    .await;
    let before = snapshot(&app.db).await;
    for at in [
        "-5000-01-01T00:00:00Z",
        "-4713-11-23T23:59:59Z",
        "+275760-09-13T00:00:00Z",
    ] {
        let mut it = item("SKU-1", "h2", 0);
        it["lastModifiedAt"] = json!(at);
        let stock =
            json!({"sku": "SKU-1", "quantity": 1, "contentHash": "s", "lastModifiedAt": at});
        let warehouse = json!({"erpWarehouseId": "W1", "name": "Rungis", "contentHash": "w2", "lastModifiedAt": at});
        for (route, body) in [
            (
                "/api/sync/items",
                json!({"vendorId": VENDOR, "items": [it.clone()]}),
            ),
            (
                "/api/sync/items/batch",
                json!({"vendorId": VENDOR, "items": [it]}),
            ),
            (
                "/api/sync/stock",
                json!({"vendorId": VENDOR, "warehouseId": "W1", "stock": [stock.clone()]}),
            ),
            (
                "/api/sync/stock/batch",
                json!({"vendorId": VENDOR, "warehouseId": "W1", "stock": [stock]}),
            ),
            (
                "/api/sync/warehouses",
                json!({"vendorId": VENDOR, "warehouses": [warehouse.clone()]}),
            ),
            (
                "/api/sync/warehouses/batch",
                json!({"vendorId": VENDOR, "warehouses": [warehouse]}),
            ),
        ] {
            let (status, report) = post(&app, route, &token, &body).await;
            assert_eq!(status, StatusCode::OK, "{route} {at}: {report}");
            assert_eq!(
                statuses(&report),
                [("failed".into(), "invalid: lastModifiedAt".into())],
                "{route} {at}"
            );
        }
    }
    assert_eq!(snapshot(&app.db).await, before);
}

#[sqlx::test]
async fn numbers_that_round_over_their_column_fail_their_record(db: PgPool) {
    let (app, token) = setup(db).await;
    post(
        &app,
        "/api/sync/warehouses",
        &token,
        &json!({"vendorId": VENDOR, "warehouses": [{"erpWarehouseId": "W1", "name": "Rungis", "contentHash": "w", "lastModifiedAt": ts(0)}]}),
    )
    .await;
    let mut over = item("SKU-OVER", "h", 0);
    over["price"] = json!(99999999.99999);
    let mut edge = item("SKU-EDGE", "h", 0);
    edge["price"] = json!(99999999.99994);
    // Numbers must be JSON numbers (a string is `invalid` whatever it holds); this one rounds over.
    let mut rounds_over = item("SKU-STR", "h", 0);
    rounds_over["price"] = json!(99999999.99995);
    let (_, report) = post(
        &app,
        "/api/sync/items",
        &token,
        &json!({"vendorId": VENDOR, "items": [over, edge, rounds_over]}),
    )
    .await;
    assert_eq!(
        statuses(&report),
        [
            ("failed".into(), "invalid: price".into()),
            ("processed".into(), "".into()),
            ("failed".into(), "invalid: price".into()),
        ]
    );
    let price: String = sqlx::query_scalar("SELECT price::text FROM items WHERE sku = 'SKU-EDGE'")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(
        price, "99999999.9999",
        "stored rounded, as the rule assumed"
    );

    let stock = |sku: &str, quantity: Value, reserved: Value| json!({"sku": sku, "quantity": quantity, "reservedQuantity": reserved, "contentHash": "s", "lastModifiedAt": ts(0)});
    let (_, report) = post(
        &app,
        "/api/sync/stock",
        &token,
        &json!({"vendorId": VENDOR, "warehouseId": "W1", "stock": [
            stock("SKU-EDGE", json!(99999999999.9999_f64), json!(0)),
            stock("SKU-EDGE", json!(-99999999999.9995), json!(0)),
            stock("SKU-EDGE", json!(1), json!(-1)),
            stock("SKU-EDGE", json!(1), json!(99999999999.9995)),
            stock("SKU-EDGE", json!(1e300), json!(0)),
        ]}),
    )
    .await;
    let reasons: Vec<String> = statuses(&report).into_iter().map(|(_, r)| r).collect();
    assert_eq!(
        reasons,
        [
            "invalid: quantity",
            "invalid: quantity",
            "invalid: reservedQuantity",
            "invalid: reservedQuantity",
            "invalid: quantity"
        ]
    );
    assert_eq!(count(&app.db, "stock").await, 0);
}

fn batch_item(i: usize) -> Value {
    item(&format!("SKU-{i:05}"), &format!("h{i}"), 0)
}

#[sqlx::test]
async fn a_bad_record_late_in_a_batch_fails_alone(db: PgPool) {
    let (app, token) = setup(db).await;
    let mut items: Vec<Value> = (0..600).map(batch_item).collect();
    items[550]["name"] = json!(format!("bad{NUL}"));
    let (status, report) = post(
        &app,
        "/api/sync/items/batch",
        &token,
        &json!({"vendorId": VENDOR, "items": items}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["processed"], 599);
    assert_eq!(report["results"][550]["reason"], "invalid: name");
    assert_eq!(count(&app.db, "items").await, 599);
}

#[sqlx::test]
async fn a_database_failure_half_way_through_a_batch_writes_nothing(db: PgPool) {
    let (app, token) = setup(db).await;
    // A real Postgres failure in the second chunk: a trigger (as the marketplace could have)
    // refusing one row.
    sqlx::raw_sql(
        "CREATE FUNCTION refuse_sku() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN IF NEW.sku = 'SKU-00550' THEN RAISE EXCEPTION 'refused by the marketplace'; END IF;
               RETURN NEW; END $$;
         CREATE TRIGGER refuse_sku BEFORE INSERT ON items FOR EACH ROW EXECUTE FUNCTION refuse_sku();",
    )
    .execute(&app.db)
    .await
    .unwrap();
    let items: Vec<Value> = (0..600).map(batch_item).collect();
    let response = app
        .agent_post(
            "/api/sync/items/batch",
            &token,
            &json!({"vendorId": VENDOR, "items": items}),
        )
        .send()
        .await
        .unwrap();
    let (status, body) = error_body(response).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    assert!(
        !body.to_string().contains("refused by the marketplace"),
        "nothing internal in the answer: {body}"
    );
    assert_eq!(
        count(&app.db, "items").await,
        0,
        "the first chunk is not left behind"
    );
}

#[sqlx::test]
async fn others_failures_never_lock_the_admin_out_of_registration(db: PgPool) {
    let app = spawn_app_with(db, |vars| {
        vars.push(("REGISTER_RATE_LIMIT_PER_MIN".into(), "3".into()))
    })
    .await;
    let body = |vendor: &str| json!({"vendorId": vendor, "agentUrl": "http://127.0.0.1:9/agent", "erpType": "ebp", "authToken": "some-token-0123456789"});
    let attempt =
        |request: reqwest::RequestBuilder, vendor: &str| request.json(&body(vendor)).send();
    let url = app.url("/api/agents/register");
    for i in 0..3 {
        let unauthenticated = attempt(app.client.post(&url), "v-x").await.unwrap();
        assert_eq!(
            unauthenticated.status(),
            StatusCode::UNAUTHORIZED,
            "attempt {i}"
        );
    }
    let wrong_key = attempt(
        app.client.post(&url).header("x-api-key", "x".repeat(40)),
        "v-x",
    )
    .await
    .unwrap();
    assert_eq!(wrong_key.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(wrong_key.headers().contains_key("retry-after"));
    let wrong_token = attempt(
        app.client.post(&url).bearer_auth("guessed-token-0123456"),
        "v-x",
    )
    .await
    .unwrap();
    assert_eq!(
        wrong_token.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "refused before bcrypt"
    );

    let admin = attempt(
        app.client.post(&url).header("x-api-key", API_KEY),
        "v-admin",
    )
    .await
    .unwrap();
    assert_eq!(
        admin.status(),
        StatusCode::CREATED,
        "a valid admin key is never locked out by others' failures"
    );
    let registered: i64 = sqlx::query_scalar("SELECT count(*) FROM agent_registry")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(registered, 1);
}

#[sqlx::test]
async fn oversized_header_sets_get_the_json_431(db: PgPool) {
    let (app, _) = setup(db).await;
    let mut many = app.client.get(app.url("/health"));
    for i in 0..erp_sync::http::MAX_HEADER_COUNT {
        many = many.header(format!("x-filler-{i}"), "1");
    }
    let (status, body) = error_body(many.send().await.unwrap()).await;
    assert_eq!(status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    assert_eq!(body["error"]["code"], "request_header_fields_too_large");

    let large = app
        .client
        .get(app.url("/health"))
        .header("x-filler", "a".repeat(erp_sync::http::MAX_HEADER_BYTES))
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_body(large).await.0,
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
    );
    let normal = app.client.get(app.url("/health")).send().await.unwrap();
    assert_eq!(normal.status(), StatusCode::OK);
}

#[sqlx::test]
async fn echoed_values_are_bounded(db: PgPool) {
    let (app, token) = setup(db).await;
    let huge = "v".repeat(1024 * 1024);
    for response in [
        app.agent_post("/api/agents/heartbeat", &token, &json!({"vendorId": huge}))
            .send()
            .await
            .unwrap(),
        app.admin_get(&format!("/api/agents/{}", &huge[..60 * 1024]))
            .send()
            .await
            .unwrap(),
        app.admin_post(
            "/api/admin/mappings",
            &json!({"vendorId": "v1", "mappingType": huge, "erpCode": "A", "restoCode": "a", "restoLabel": "A"}),
        )
        .send()
        .await
        .unwrap(),
        app.agent_post(
            "/api/sync/items",
            &token,
            &json!({"vendorId": VENDOR, "items": [{"sku": huge, "price": huge}]}),
        )
        .send()
        .await
        .unwrap(),
    ] {
        let status = response.status();
        let text = response.text().await.unwrap();
        assert!(status.is_client_error() || status == StatusCode::OK, "{status}");
        assert!(text.len() < 2_000, "{status}: {} bytes echoed", text.len());
    }
}

#[sqlx::test]
async fn a_compressed_body_is_a_415(db: PgPool) {
    let (app, token) = setup(db).await;
    // The gzip of `{"vendorId":"vendor-a","items":[]}` would be binary; any bytes will do.
    for request in [
        app.client
            .post(app.url("/api/sync/items"))
            .bearer_auth(&token),
        app.client
            .post(app.url("/api/admin/mappings"))
            .header("x-api-key", API_KEY),
    ] {
        let response = request
            .header("content-type", "application/json")
            .header("content-encoding", "gzip")
            .body(vec![0x1f, 0x8b, 0x08, 0x00, 0x00])
            .send()
            .await
            .unwrap();
        let (status, body) = error_body(response).await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{body}");
        assert_eq!(body["error"]["code"], "unsupported_media_type");
    }
}

#[sqlx::test]
async fn admin_bodies_refuse_control_characters_with_details_by_json_path(db: PgPool) {
    let (app, _) = setup(db).await;
    let before = snapshot(&app.db).await;
    for (body, field) in [
        (
            json!({"vendorId": "v1", "mappingType": "unit", "erpCode": format!("A{NUL}"), "restoCode": "a", "restoLabel": "A"}),
            "erpCode",
        ),
        (
            json!({"vendorId": "v1", "mappingType": "unit", "erpCode": "A", "restoCode": "a", "restoLabel": "A\u{7}"}),
            "restoLabel",
        ),
        (
            json!({"vendorId": "v1", "mappingType": "unit", "erpCode": "A\u{202E}", "restoCode": "a", "restoLabel": "A"}),
            "erpCode",
        ),
        (
            json!({"vendorId": "v1", "mappingType": "weight", "erpCode": "A", "restoCode": "a", "restoLabel": "A"}),
            "mappingType",
        ),
    ] {
        let (status, response) = error_body(
            app.admin_post("/api/admin/mappings", &body)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{response}");
        assert!(
            response["error"]["details"][field].is_array(),
            "{field}: {response}"
        );
    }
    let seed = json!({"vendorId": "v1", "mappings": [
        {"mappingType": "unit", "erpCode": "A", "restoCode": "a", "restoLabel": "A"},
        {"mappingType": "unit", "erpCode": "B", "restoCode": "b", "restoLabel": format!("B{NUL}")}
    ]});
    let (status, response) = error_body(
        app.admin_post("/api/admin/mappings/seed", &seed)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        response["error"]["details"]["mappings.1.restoLabel"].is_array(),
        "{response}"
    );
    let agent = json!({"vendorId": "v1", "agentUrl": "http://agent.example.com/\u{0}", "erpType": "ebp", "authToken": "some-token-0123456789"});
    let (status, response) = error_body(
        app.admin_post("/api/agents/register", &agent)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        response["error"]["details"]["agentUrl"].is_array(),
        "{response}"
    );
    assert_eq!(snapshot(&app.db).await, before, "nothing written");
}

/// Found by the fuzz stage: a 500-character `agentUrl` whose normalised form (the one stored,
/// here with a trailing '/') is 501 characters long overflowed `varchar(500)`.
#[sqlx::test]
async fn an_agent_url_that_grows_past_its_column_when_normalised_is_a_422(db: PgPool) {
    let app = spawn_app_with(db.clone(), |_| {}).await;
    let mut agent_url = String::from("https://0.");
    while agent_url.len() < 500 {
        agent_url.push('a');
    }
    assert_eq!(agent_url.len(), 500);
    let before = snapshot(&db).await;
    let response = app
        .admin_post(
            "/api/agents/register",
            &json!({"vendorId": "vendor-long-url", "agentUrl": agent_url, "erpType": "ebp",
                    "authToken": "a-token-of-sixteen-chars"}),
        )
        .send()
        .await
        .unwrap();
    let (status, body) = error_body(response).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body["error"]["details"]["agentUrl"].is_array(), "{body}");
    assert_eq!(snapshot(&db).await, before, "nothing written");
}
