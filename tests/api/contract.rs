//! The contract against its two references: the field rules against the columns they guard
//! (`information_schema`, so rules and migrations cannot drift apart), and every operation of
//! the OpenAPI document against the statuses its parts imply (`src/http/responses.rs`), so a
//! route added later cannot forget them.

use std::collections::BTreeSet;

use erp_sync::ingest::rules::{
    self, FieldRule, ITEM, Kind, STOCK, STOCK_WAREHOUSE_ID, WAREHOUSE, earliest_timestamp,
};
use serde_json::Value;
use sqlx::PgPool;

#[derive(Debug, sqlx::FromRow)]
struct ColumnInfo {
    data_type: String,
    character_maximum_length: Option<i32>,
    numeric_precision: Option<i32>,
    numeric_scale: Option<i32>,
}

async fn column(db: &PgPool, table: &str, name: &str) -> ColumnInfo {
    sqlx::query_as(
        "SELECT data_type, character_maximum_length, numeric_precision, numeric_scale
         FROM information_schema.columns
         WHERE table_schema = 'public' AND table_name = $1 AND column_name = $2",
    )
    .bind(table)
    .bind(name)
    .fetch_optional(db)
    .await
    .unwrap()
    .unwrap_or_else(|| panic!("no column {table}.{name}"))
}

async fn check_rule(db: &PgPool, rule: &FieldRule) {
    let (table, name) = rule.column;
    let column = column(db, table, name).await;
    let what = format!("{} → {table}.{name}: {column:?}", rule.field);
    match rule.kind {
        Kind::Code { max_chars } | Kind::Line { max_chars } | Kind::ContentHash { max_chars } => {
            assert_eq!(column.data_type, "character varying", "{what}");
            assert_eq!(
                column.character_maximum_length,
                Some(max_chars as i32),
                "{what}"
            );
        }
        // The column is unbounded: the rule's bound is erp-sync's own.
        Kind::Text { .. } => assert_eq!(column.data_type, "text", "{what}"),
        Kind::Decimal {
            precision, scale, ..
        } => {
            assert_eq!(column.data_type, "numeric", "{what}");
            assert_eq!(
                (column.numeric_precision, column.numeric_scale),
                (Some(precision as i32), Some(scale as i32)),
                "{what}"
            );
        }
        Kind::Timestamp => assert_eq!(column.data_type, "timestamp with time zone", "{what}"),
        Kind::Bool => assert_eq!(column.data_type, "boolean", "{what}"),
    }
}

#[sqlx::test]
async fn ingest_rules_match_the_columns(db: PgPool) {
    for rule in ITEM
        .fields
        .iter()
        .chain(&STOCK.fields)
        .chain(&WAREHOUSE.fields)
        .chain([&STOCK_WAREHOUSE_ID])
    {
        check_rule(&db, rule).await;
    }
    // Mapped codes land in the items' marketplace-code columns: they must hold any resto code.
    let resto = column(&db, "erp_code_mappings", "resto_code").await;
    for mapped in ["unit_code", "vat_code", "family_code", "subfamily_code"] {
        assert!(
            column(&db, "items", mapped).await.character_maximum_length
                >= resto.character_maximum_length
        );
    }
}

#[sqlx::test]
async fn the_timestamp_bounds_are_postgres_own(db: PgPool) {
    let earliest = earliest_timestamp();
    let stored: chrono::DateTime<chrono::Utc> = sqlx::query_scalar("SELECT $1::timestamptz")
        .bind(earliest)
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(stored, earliest);
    let before = sqlx::query_scalar::<_, chrono::DateTime<chrono::Utc>>("SELECT $1::timestamptz")
        .bind(earliest - chrono::Duration::microseconds(1))
        .fetch_one(&db)
        .await;
    assert!(before.is_err(), "Postgres stores nothing earlier");
    let latest = rules::latest_timestamp(chrono::Utc::now());
    sqlx::query("SELECT $1::timestamptz")
        .bind(latest)
        .execute(&db)
        .await
        .unwrap();
}

/// `(table, column)`.
type Column = (&'static str, &'static str);

/// `(component schema, property)` of request bodies → the columns the value is stored in.
const BODY_COLUMNS: &[(&str, &str, &[Column])] = &[
    (
        "RegisterAgent",
        "agentUrl",
        &[("agent_registry", "agent_url")],
    ),
    ("RegisterAgent", "version", &[("agent_registry", "version")]),
    ("Heartbeat", "version", &[("agent_registry", "version")]),
    (
        "CreateMapping",
        "erpCode",
        &[("erp_code_mappings", "erp_code")],
    ),
    (
        "CreateMapping",
        "restoCode",
        &[("erp_code_mappings", "resto_code")],
    ),
    (
        "CreateMapping",
        "restoLabel",
        &[("erp_code_mappings", "resto_label")],
    ),
    (
        "UpdateMapping",
        "erpCode",
        &[("erp_code_mappings", "erp_code")],
    ),
    (
        "UpdateMapping",
        "restoCode",
        &[("erp_code_mappings", "resto_code")],
    ),
    (
        "UpdateMapping",
        "restoLabel",
        &[("erp_code_mappings", "resto_label")],
    ),
    ("SeedEntry", "erpCode", &[("erp_code_mappings", "erp_code")]),
    (
        "SeedEntry",
        "restoCode",
        &[("erp_code_mappings", "resto_code")],
    ),
    (
        "SeedEntry",
        "restoLabel",
        &[("erp_code_mappings", "resto_label")],
    ),
    (
        "Callback",
        "erpReference",
        &[("sync_jobs", "erp_reference"), ("orders", "erp_reference")],
    ),
    (
        "Resolve",
        "resolvedBy",
        &[("dead_letter_queue", "resolved_by")],
    ),
];

#[sqlx::test]
async fn request_body_lengths_match_the_columns(db: PgPool) {
    let document = serde_json::to_value(erp_sync::http::openapi_document()).unwrap();
    let schemas = &document["components"]["schemas"];
    for (schema, property, columns) in BODY_COLUMNS {
        let max = schemas[schema]["properties"][property]["maxLength"]
            .as_i64()
            .unwrap_or_else(|| panic!("{schema}.{property} declares no maxLength"));
        for (table, name) in *columns {
            let column = column(&db, table, name).await;
            assert_eq!(
                column.character_maximum_length.map(i64::from),
                Some(max),
                "{schema}.{property} → {table}.{name}"
            );
        }
    }
    // Every vendor_id column holds exactly what a VendorId allows.
    let max = schemas["VendorId"]["maxLength"].as_i64().unwrap();
    let lengths: Vec<(String, Option<i32>)> = sqlx::query_as(
        "SELECT table_name::text, character_maximum_length FROM information_schema.columns
         WHERE table_schema = 'public' AND column_name = 'vendor_id'",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    assert!(lengths.len() >= 8, "{lengths:?}");
    for (table, length) in lengths {
        assert_eq!(length.map(i64::from), Some(max), "{table}.vendor_id");
    }
}

fn statuses(operation: &Value) -> BTreeSet<String> {
    operation["responses"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect()
}

fn resolve<'a>(document: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(reference) => {
            let name = reference.rsplit('/').next().unwrap();
            &document["components"]["schemas"][name]
        }
        None => schema,
    }
}

/// Every string a client sends is bounded (length, enum or format), however deep.
fn assert_strings_bounded(document: &Value, schema: &Value, at: &str) {
    let schema = resolve(document, schema);
    for (name, property) in schema["properties"].as_object().into_iter().flatten() {
        let property = resolve(document, property);
        let types: Vec<&str> = match &property["type"] {
            Value::String(t) => vec![t.as_str()],
            Value::Array(list) => list.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        if types.contains(&"string") {
            let bounded = property.get("maxLength").is_some()
                || property.get("enum").is_some()
                || matches!(property["format"].as_str(), Some("uuid" | "date-time"));
            assert!(bounded, "{at}.{name} is an unbounded string: {property}");
        }
        if types.contains(&"array") {
            assert!(
                property.get("maxItems").is_some(),
                "{at}.{name} is an unbounded list"
            );
            assert_strings_bounded(document, &property["items"], &format!("{at}.{name}[]"));
        }
        if types.contains(&"object") {
            assert_strings_bounded(document, property, &format!("{at}.{name}"));
        }
    }
}

#[test]
fn every_operation_documents_the_statuses_its_parts_imply() {
    let document = serde_json::to_value(erp_sync::http::openapi_document()).unwrap();
    let mut operations = 0;
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            operations += 1;
            let at = format!("{method} {path}");
            let statuses = statuses(operation);
            let mut expected: BTreeSet<&str> = ["431", "500", "503"].into();
            let schemes: Vec<&String> = operation["security"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|s| s.as_object().unwrap().keys())
                .collect();
            if !schemes.is_empty() {
                expected.insert("401");
            }
            // Agent-only routes name their vendor in the body: 404 when it has no agent.
            if schemes.iter().all(|s| *s == "agent_token")
                && !schemes.is_empty()
                && operation.get("requestBody").is_some()
            {
                expected.insert("404");
            }
            if let Some(body) = operation.get("requestBody") {
                expected.extend(["400", "413", "415", "422"]);
                let schema = &body["content"]["application/json"]["schema"];
                assert!(schema.is_object(), "{at}: a JSON body");
                assert_strings_bounded(&document, schema, &at);
            }
            let parameters = operation["parameters"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if parameters.iter().any(|p| p["in"] == "path") {
                expected.extend(["400", "404"]);
            }
            if parameters.iter().any(|p| p["in"] == "query") {
                expected.insert("422");
            }
            for parameter in &parameters {
                let schema = resolve(&document, &parameter["schema"]);
                if schema["type"] == "string" {
                    assert!(
                        schema.get("maxLength").is_some()
                            || schema.get("enum").is_some()
                            || schema["format"] == "uuid"
                            || schema["format"] == "date-time",
                        "{at}: parameter {} is an unbounded string",
                        parameter["name"]
                    );
                }
            }
            for status in expected {
                assert!(statuses.contains(status), "{at} does not document {status}");
            }
            for (status, response) in operation["responses"].as_object().unwrap() {
                let content = &response["content"];
                // The Prometheus exposition is text by its own standard; its errors are JSON.
                let prometheus_text = path == "/metrics" && status == "200";
                assert!(
                    content.get("application/json").is_some()
                        || (prometheus_text && content.get("text/plain").is_some()),
                    "{at} {status}: every answer is JSON"
                );
                let is_error = status.starts_with('4') || status.starts_with('5');
                if is_error && path != "/health" {
                    assert_eq!(
                        content["application/json"]["schema"]["$ref"],
                        "#/components/schemas/ErrorBody",
                        "{at} {status}: errors have the error shape"
                    );
                }
            }
        }
    }
    assert!(operations >= 27, "{operations} operations");
}

#[test]
fn operation_ids_are_unique() {
    let document = serde_json::to_value(erp_sync::http::openapi_document()).unwrap();
    let mut seen = BTreeSet::new();
    for item in document["paths"].as_object().unwrap().values() {
        for operation in item.as_object().unwrap().values() {
            let id = operation["operationId"].as_str().unwrap().to_owned();
            assert!(seen.insert(id.clone()), "operationId {id} is used twice");
        }
    }
}

/// An operator reading the OpenAPI document learns what every operation does and what every
/// parameter means.
#[test]
fn every_operation_and_parameter_is_described() {
    let document = serde_json::to_value(erp_sync::http::openapi_document()).unwrap();
    let mut missing = Vec::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let described = |v: &Value| v.as_str().is_some_and(|d| !d.trim().is_empty());
            if !described(&operation["description"]) {
                missing.push(format!("{method} {path}"));
            }
            for parameter in operation["parameters"].as_array().into_iter().flatten() {
                if !described(&parameter["description"]) {
                    missing.push(format!("{method} {path} parameter {}", parameter["name"]));
                }
            }
        }
    }
    assert!(missing.is_empty(), "without a description: {missing:#?}");
}

/// Pagination bounds as the server enforces them: page ≥ 1, limit 1..=100.
#[test]
fn pagination_bounds_match_the_server() {
    let document = serde_json::to_value(erp_sync::http::openapi_document()).unwrap();
    let operation = &document["paths"]["/api/admin/dlq"]["get"];
    for parameter in operation["parameters"].as_array().unwrap() {
        match parameter["name"].as_str().unwrap() {
            "page" => assert_eq!(parameter["schema"]["minimum"], 1),
            "limit" => {
                assert_eq!(parameter["schema"]["minimum"], 1);
                assert_eq!(parameter["schema"]["maximum"], 100);
            }
            _ => {}
        }
    }
}
