//! ERP code mappings: admin API and the cached resolver.

use std::time::Duration;

use erp_sync::mappings::{MappingService, model::MappingType};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::helpers::spawn_app;

fn mapping(vendor: &str, kind: &str, code: &str) -> Value {
    json!({"vendorId": vendor, "mappingType": kind, "erpCode": code, "restoCode": format!("r-{code}"), "restoLabel": format!("Label {code}")})
}

#[sqlx::test]
async fn crud_over_the_admin_api(db: PgPool) {
    let app = spawn_app(db).await;
    let created = app
        .admin_post("/api/admin/mappings", &mapping("v1", "unit", "PCE"))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let created: Value = created.json().await.unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["isActive"], true);

    let duplicate = app
        .admin_post("/api/admin/mappings", &mapping("v1", "unit", "PCE"))
        .send()
        .await
        .unwrap();
    assert_eq!(duplicate.status(), StatusCode::CONFLICT);
    let other_vendor = app
        .admin_post("/api/admin/mappings", &mapping("v2", "unit", "PCE"))
        .send()
        .await
        .unwrap();
    assert_eq!(other_vendor.status(), StatusCode::CREATED);

    let bad_type = app
        .admin_post("/api/admin/mappings", &mapping("v1", "colour", "RED"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad_type.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let bad_filter = app
        .admin_get("/api/admin/mappings?mappingType=colour")
        .send()
        .await
        .unwrap();
    assert_eq!(bad_filter.status(), StatusCode::UNPROCESSABLE_ENTITY);

    let updated = app
        .admin_put(
            &format!("/api/admin/mappings/{id}"),
            &json!({"restoLabel": "Pièce"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(updated.status(), StatusCode::OK);
    assert_eq!(
        updated.json::<Value>().await.unwrap()["restoLabel"],
        "Pièce"
    );
    let missing = app
        .admin_put(
            &format!("/api/admin/mappings/{}", uuid::Uuid::new_v4()),
            &json!({"restoLabel": "x"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);

    let page: Value = app
        .admin_get("/api/admin/mappings?vendorId=v1&mappingType=unit&page=1&limit=10")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (
            page["total"].as_i64(),
            page["page"].as_i64(),
            page["limit"].as_i64()
        ),
        (Some(1), Some(1), Some(10))
    );
    assert_eq!(page["data"][0]["restoLabel"], "Pièce");
    let too_big = app
        .admin_get("/api/admin/mappings?limit=1000")
        .send()
        .await
        .unwrap();
    assert_eq!(too_big.status(), StatusCode::UNPROCESSABLE_ENTITY);

    let deleted = app
        .admin_delete(&format!("/api/admin/mappings/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::OK);
    assert_eq!(deleted.json::<Value>().await.unwrap()["isActive"], false);
    let page: Value = app
        .admin_get("/api/admin/mappings?vendorId=v1")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        page["total"], 0,
        "deactivated mappings are hidden by default"
    );
    let page: Value = app
        .admin_get("/api/admin/mappings?vendorId=v1&includeInactive=true")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["total"], 1, "but kept");
    assert!(
        app.state
            .mappings
            .resolve("v1", MappingType::Unit, "PCE")
            .await
            .unwrap()
            .is_none(),
        "and no longer resolve"
    );

    let unauthenticated = app
        .client
        .get(app.url("/api/admin/mappings"))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthenticated.status(), StatusCode::UNAUTHORIZED);
}

#[sqlx::test]
async fn seeding_is_idempotent(db: PgPool) {
    let app = spawn_app(db).await;
    let seed = json!({"vendorId": "v1", "mappings": [
        {"mappingType": "unit", "erpCode": "PCE", "restoCode": "piece", "restoLabel": "Pièce"},
        {"mappingType": "vat", "erpCode": "T1", "restoCode": "vat20", "restoLabel": "TVA 20 %"},
        {"mappingType": "family", "erpCode": "FRUITS", "restoCode": "fruits", "restoLabel": "Fruits"}
    ]});
    let first: Value = app
        .admin_post("/api/admin/mappings/seed", &seed)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(first, json!({"inserted": 3, "updated": 0, "unchanged": 0}));
    let stamps: Vec<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("SELECT updated_at FROM erp_code_mappings ORDER BY erp_code")
            .fetch_all(&app.db)
            .await
            .unwrap();
    let second: Value = app
        .admin_post("/api/admin/mappings/seed", &seed)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(second, json!({"inserted": 0, "updated": 0, "unchanged": 3}));
    let after: Vec<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("SELECT updated_at FROM erp_code_mappings ORDER BY erp_code")
            .fetch_all(&app.db)
            .await
            .unwrap();
    assert_eq!(stamps, after, "re-seeding touched nothing");

    let mut changed = seed.clone();
    changed["mappings"][0]["restoLabel"] = json!("Piece");
    let third: Value = app
        .admin_post("/api/admin/mappings/seed", &changed)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(third, json!({"inserted": 0, "updated": 1, "unchanged": 2}));
    let resolved = app
        .state
        .mappings
        .resolve("v1", MappingType::Unit, "PCE")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resolved.resto_label, "Piece");

    let bad = app
        .admin_post(
            "/api/admin/mappings/seed",
            &json!({"vendorId": "v1", "mappings": [{"mappingType": "size"}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::UNPROCESSABLE_ENTITY);
}

#[sqlx::test]
async fn resolve_is_cached_and_every_write_invalidates(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    let service = &app.state.mappings;
    let created: Value = app
        .admin_post("/api/admin/mappings", &mapping("v1", "unit", "KG"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap();

    let before = service.db_lookups();
    assert_eq!(
        service
            .resolve("v1", MappingType::Unit, "KG")
            .await
            .unwrap()
            .unwrap()
            .resto_code,
        "r-KG"
    );
    assert_eq!(service.db_lookups(), before + 1, "miss goes to Postgres");
    for _ in 0..5 {
        service
            .resolve("v1", MappingType::Unit, "KG")
            .await
            .unwrap();
    }
    assert_eq!(service.db_lookups(), before + 1, "hits stay in memory");

    // Misses are cached too.
    assert!(
        service
            .resolve("v1", MappingType::Unit, "LITRE")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        service
            .resolve("v1", MappingType::Unit, "LITRE")
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(service.db_lookups(), before + 2);

    // A write through the service is visible at once.
    app.admin_put(
        &format!("/api/admin/mappings/{id}"),
        &json!({"restoCode": "kilo"}),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(
        service
            .resolve("v1", MappingType::Unit, "KG")
            .await
            .unwrap()
            .unwrap()
            .resto_code,
        "kilo"
    );
    app.admin_post("/api/admin/mappings", &mapping("v1", "unit", "LITRE"))
        .send()
        .await
        .unwrap();
    assert!(
        service
            .resolve("v1", MappingType::Unit, "LITRE")
            .await
            .unwrap()
            .is_some(),
        "cached miss dropped on create"
    );
    app.admin_put(
        &format!("/api/admin/mappings/{id}"),
        &json!({"erpCode": "KGM"}),
    )
    .send()
    .await
    .unwrap();
    assert!(
        service
            .resolve("v1", MappingType::Unit, "KG")
            .await
            .unwrap()
            .is_none(),
        "old code dropped on rename"
    );
    assert!(
        service
            .resolve("v1", MappingType::Unit, "KGM")
            .await
            .unwrap()
            .is_some()
    );

    // Many codes: one query for all the uncached ones.
    let before = service.db_lookups();
    let codes: Vec<String> = ["A", "B", "C", "KGM"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let found = service
        .resolve_many("v1", MappingType::Unit, &codes)
        .await
        .unwrap();
    assert_eq!(found.len(), 4);
    assert_eq!(service.db_lookups(), before + 1);
}

#[sqlx::test]
async fn cached_entries_expire(db: PgPool) {
    let service = MappingService::with_ttls(
        db.clone(),
        Duration::from_millis(200),
        Duration::from_millis(100),
    );
    sqlx::query("INSERT INTO erp_code_mappings (vendor_id, mapping_type, erp_code, resto_code, resto_label) VALUES ('v1', 'vat', 'T1', 'vat20', '20 %')")
        .execute(&db)
        .await
        .unwrap();
    service.resolve("v1", MappingType::Vat, "T1").await.unwrap();
    service.resolve("v1", MappingType::Vat, "T1").await.unwrap();
    assert_eq!(service.db_lookups(), 1);
    // Changed behind the service's back (another replica): seen once the entry expires.
    sqlx::query("UPDATE erp_code_mappings SET resto_code = 'vat-20'")
        .execute(&db)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        service
            .resolve("v1", MappingType::Vat, "T1")
            .await
            .unwrap()
            .unwrap()
            .resto_code,
        "vat-20"
    );
    assert_eq!(
        service.db_lookups(),
        2,
        "expired entry went back to Postgres"
    );
}

#[sqlx::test]
async fn a_change_made_on_another_replica_is_seen_at_once(db: PgPool) {
    let replica_a = spawn_app(db.clone()).await;
    let replica_b = spawn_app(db.clone()).await;
    let created: Value = replica_a
        .admin_post("/api/admin/mappings", &mapping("v1", "vat", "T1"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap();
    // B caches the mapping...
    assert_eq!(
        replica_b
            .state
            .mappings
            .resolve("v1", MappingType::Vat, "T1")
            .await
            .unwrap()
            .unwrap()
            .resto_code,
        "r-T1"
    );
    // ...A changes it...
    replica_a
        .admin_put(
            &format!("/api/admin/mappings/{id}"),
            &json!({"restoCode": "vat-20"}),
        )
        .send()
        .await
        .unwrap();
    // ...and B sees it long before its 5-minute TTL, through Postgres NOTIFY.
    let started = std::time::Instant::now();
    loop {
        let code = replica_b
            .state
            .mappings
            .resolve("v1", MappingType::Vat, "T1")
            .await
            .unwrap()
            .unwrap()
            .resto_code;
        if code == "vat-20" {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "replica B still serves the old mapping"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
