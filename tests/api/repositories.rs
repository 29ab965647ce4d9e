//! The five sync-table repositories against the real Postgres, a database per test.

use chrono::{Duration, Utc};
use erp_sync::{
    agents::queries as agents,
    mappings::{
        model::{MappingType, SeedEntry},
        queries as mappings,
    },
    orders::{
        delivery_queries as delivery, dlq_queries as dlq, job_queries as jobs,
        operator_queries::{DlqSelection, list_dead_letters},
    },
    reconciliation::queries as events,
};
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

async fn order(db: &PgPool, vendor: &str) -> Uuid {
    let id = Uuid::new_v4();
    sqlx::query("INSERT INTO orders (id, vendor_id) VALUES ($1, $2)")
        .bind(id)
        .bind(vendor)
        .execute(db)
        .await
        .unwrap();
    id
}

fn new_job<'a>(
    order_id: Option<Uuid>,
    vendor: &'a str,
    payload: &'a serde_json::Value,
) -> jobs::NewJob<'a> {
    jobs::NewJob {
        order_id,
        vendor_id: vendor,
        operation: "create_order",
        payload,
        max_retries: 5,
        retention: Duration::days(30),
    }
}

#[sqlx::test]
async fn sync_jobs_lifecycle_and_metrics(db: PgPool) {
    let order_id = order(&db, "v1").await;
    // The insert trigger made the order's job; this test makes its own.
    sqlx::query("DELETE FROM sync_jobs")
        .execute(&db)
        .await
        .unwrap();
    let payload = json!({"orderId": order_id});
    let job = jobs::create(&db, &new_job(Some(order_id), "v1", &payload))
        .await
        .unwrap();
    assert_eq!(
        (job.status.as_str(), job.retry_count, job.max_retries),
        ("pending", 0, 5)
    );
    assert!(job.expires_at.unwrap() > Utc::now() + Duration::days(29));

    assert_eq!(jobs::find_by_id(&db, job.id).await.unwrap().unwrap(), job);
    assert_eq!(
        jobs::find_by_order_id(&db, order_id).await.unwrap(),
        vec![job.clone()]
    );
    assert_eq!(jobs::count_waiting(&db, 10).await.unwrap(), 1);

    let done = delivery::complete(&db, job.id, "ERP-1", None, None)
        .await
        .unwrap()
        .unwrap()
        .job;
    assert_eq!(done.erp_reference.as_deref(), Some("ERP-1"));
    assert!(done.completed_at.is_some());
    assert!(
        delivery::complete(&db, Uuid::new_v4(), "ERP-2", None, None)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(jobs::count_waiting(&db, 10).await.unwrap(), 0);

    let other = jobs::create(&db, &new_job(None, "v1", &payload))
        .await
        .unwrap();
    delivery::dead_letter(&db, other.id, None, "agent said no", false, None)
        .await
        .unwrap()
        .unwrap();

    let metrics = jobs::get_metrics(&db, "v1").await.unwrap();
    assert_eq!(
        (
            metrics.total,
            metrics.completed,
            metrics.failed,
            metrics.pending
        ),
        (2, 1, 1, 0)
    );
    assert_eq!(metrics.success_rate, 50.0);
    assert!(metrics.avg_latency_ms.is_some() && metrics.p95_latency_ms.is_some());

    // Expiry: only finished jobs past their retention go.
    sqlx::query("UPDATE sync_jobs SET expires_at = now() - interval '1 minute'")
        .execute(&db)
        .await
        .unwrap();
    let live = jobs::create(&db, &new_job(None, "v1", &payload))
        .await
        .unwrap();
    sqlx::query("UPDATE sync_jobs SET expires_at = now() - interval '1 minute' WHERE id = $1")
        .bind(live.id)
        .execute(&db)
        .await
        .unwrap();
    assert_eq!(jobs::delete_expired(&db, 10).await.unwrap(), 2);
    assert!(
        jobs::find_by_id(&db, live.id).await.unwrap().is_some(),
        "a pending job is never expired"
    );

    let (page, total) = jobs::list(&db, Some("v1"), Some("pending"), None, 10, 0)
        .await
        .unwrap();
    assert_eq!((page.len(), total), (1, 1));
}

#[sqlx::test]
async fn agent_registry_repository(db: PgPool) {
    let new = agents::NewAgent {
        vendor_id: "v1",
        agent_url: "http://agent.local",
        erp_type: "sage",
        version: Some("1.0"),
        auth_token_hash: "$2b$10$hash",
        signing_secret_sealed: b"sealed",
    };
    let (agent, inserted) = agents::upsert(&db, &new).await.unwrap();
    assert!(inserted);
    assert_eq!(agent.status, "offline");
    let (again, inserted) = agents::upsert(
        &db,
        &agents::NewAgent {
            agent_url: "http://agent2.local",
            version: None,
            ..new
        },
    )
    .await
    .unwrap();
    assert!(!inserted);
    assert_eq!(
        (again.id, again.agent_url.as_str(), again.version.as_deref()),
        (agent.id, "http://agent2.local", Some("1.0"))
    );

    assert!(
        agents::find_active(&db).await.unwrap().is_empty(),
        "never heard from: offline"
    );
    let beat = agents::update_heartbeat(&db, "v1", Some("1.1"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (beat.status.as_str(), beat.version.as_deref()),
        ("online", Some("1.1"))
    );
    assert_eq!(agents::find_active(&db).await.unwrap().len(), 1);
    assert_eq!(agents::find_all(&db).await.unwrap().len(), 1);

    let now = Utc::now();
    let (degraded, offline) = (Duration::seconds(60), Duration::seconds(300));
    let counts = |online, degraded, offline| agents::HealthCounts {
        online,
        degraded,
        offline,
    };
    assert_eq!(
        agents::count_by_health(&db, now, degraded, offline)
            .await
            .unwrap(),
        counts(1, 0, 0)
    );
    assert_eq!(
        agents::count_by_health(&db, now + Duration::seconds(61), degraded, offline)
            .await
            .unwrap(),
        counts(0, 1, 0)
    );
    assert_eq!(
        agents::count_by_health(&db, now + Duration::seconds(301), degraded, offline)
            .await
            .unwrap(),
        counts(0, 0, 1)
    );

    assert!(
        agents::update_heartbeat(&db, "nobody", None)
            .await
            .unwrap()
            .is_none()
    );
    let gone = agents::deregister(&db, "v1").await.unwrap().unwrap();
    assert!(gone.deregistered_at.is_some());
    assert_eq!(
        agents::count_by_health(&db, now, degraded, offline)
            .await
            .unwrap(),
        counts(0, 0, 0),
        "a deregistered agent is not counted"
    );
}

#[sqlx::test]
async fn erp_code_mappings_repository(db: PgPool) {
    let new = mappings::NewMapping {
        vendor_id: "v1",
        mapping_type: MappingType::Unit,
        erp_code: "PCE",
        resto_code: "piece",
        resto_label: "Pièce",
        is_active: true,
    };
    let m = mappings::insert(&db, &new).await.unwrap();
    let duplicate = mappings::insert(&db, &new).await.unwrap_err();
    assert_eq!(
        duplicate.as_database_error().and_then(|e| e.constraint()),
        Some("erp_code_mappings_vendor_type_code_key")
    );
    let up = mappings::upsert(
        &db,
        &mappings::NewMapping {
            resto_code: "pc",
            ..new
        },
    )
    .await
    .unwrap();
    assert_eq!((up.id, up.resto_code.as_str()), (m.id, "pc"));

    let found = mappings::find_by_vendor_type_code(&db, "v1", MappingType::Unit, "PCE")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.id, m.id);
    assert!(
        mappings::find_by_vendor_type_code(&db, "v1", MappingType::Vat, "PCE")
            .await
            .unwrap()
            .is_none()
    );

    let entries = vec![
        SeedEntry {
            mapping_type: MappingType::Vat,
            erp_code: "T1".into(),
            resto_code: "vat20".into(),
            resto_label: "20 %".into(),
        },
        SeedEntry {
            mapping_type: MappingType::Vat,
            erp_code: "T2".into(),
            resto_code: "vat55".into(),
            resto_label: "5.5 %".into(),
        },
    ];
    let first = mappings::bulk_upsert(&db, "v1", &entries).await.unwrap();
    assert_eq!((first.inserted, first.updated, first.unchanged), (2, 0, 0));
    let second = mappings::bulk_upsert(&db, "v1", &entries).await.unwrap();
    assert_eq!(
        (second.inserted, second.updated, second.unchanged),
        (0, 0, 2)
    );
    assert_eq!(
        mappings::find_by_vendor_and_type(&db, "v1", MappingType::Vat)
            .await
            .unwrap()
            .len(),
        2
    );
    assert_eq!(mappings::count_by_vendor(&db, "v1").await.unwrap(), 3);

    let off = mappings::deactivate(&db, m.id).await.unwrap().unwrap();
    assert!(!off.is_active);
    assert!(
        mappings::find_by_vendor_type_code(&db, "v1", MappingType::Unit, "PCE")
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(mappings::count_by_vendor(&db, "v1").await.unwrap(), 2);

    let (page, total) = mappings::find_all(&db, Some("v1"), None, true, 2, 0)
        .await
        .unwrap();
    assert_eq!((page.len(), total), (2, 3));
    let (page, total) = mappings::find_all(&db, Some("v1"), Some(MappingType::Vat), false, 10, 0)
        .await
        .unwrap();
    assert_eq!((page.len(), total), (2, 2));
}

#[sqlx::test]
async fn dead_letter_queue_repository(db: PgPool) {
    let payload = json!({"orderId": "o1"});
    let job = jobs::create(&db, &new_job(None, "v1", &payload))
        .await
        .unwrap();
    let entry = dlq::create(
        &db,
        &dlq::NewDlqEntry {
            original_job_id: Some(job.id),
            vendor_id: "v1",
            operation: "create_order",
            payload: &payload,
            failure_reason: "agent answered 500",
            failure_stack: None,
            attempt_count: 5,
        },
    )
    .await
    .unwrap();
    assert_eq!(
        dlq::find_by_id(&db, entry.id).await.unwrap().unwrap(),
        entry
    );
    assert_eq!(dlq::count_unresolved(&db, None).await.unwrap(), 1);
    let unresolved_of = |vendor_id| DlqSelection {
        vendor_id: Some(vendor_id),
        ..DlqSelection::default()
    };
    let (page, total) = list_dead_letters(&db, &unresolved_of("v1"), 10, 0)
        .await
        .unwrap();
    assert_eq!((page.len(), total), (1, 1));
    assert_eq!(
        list_dead_letters(&db, &unresolved_of("v2"), 10, 0)
            .await
            .unwrap()
            .1,
        0
    );

    let resolved = dlq::mark_resolved(&db, entry.id, "alice", None, None)
        .await
        .unwrap()
        .unwrap();
    assert!(resolved.resolved && resolved.resolved_at.is_some());
    let again = dlq::mark_resolved(&db, entry.id, "bob", None, None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        again.resolved_by.as_deref(),
        Some("alice"),
        "first resolution kept"
    );
    assert_eq!(dlq::count_unresolved(&db, None).await.unwrap(), 0);

    assert_eq!(dlq::delete_old_resolved(&db, 30, 10).await.unwrap(), 0);
    sqlx::query("UPDATE dead_letter_queue SET resolved_at = now() - interval '31 days'")
        .execute(&db)
        .await
        .unwrap();
    assert_eq!(dlq::delete_old_resolved(&db, 30, 10).await.unwrap(), 1);
}

#[sqlx::test]
async fn reconciliation_events_repository(db: PgPool) {
    for event_type in [
        events::EventType::FullChecksum,
        events::EventType::DriftDetected,
        events::EventType::FullChecksum,
    ] {
        events::create(
            &db,
            &events::NewEvent {
                vendor_id: "v1",
                event_type,
                summary: &json!({"items": 10}),
                details: None,
                duration_ms: 12,
            },
        )
        .await
        .unwrap();
    }
    let (page, total) = events::find_by_vendor(&db, Some("v1"), 2, 0).await.unwrap();
    assert_eq!((page.len(), total), (2, 3));
    let metrics = events::get_metrics(&db, "v1").await.unwrap();
    assert_eq!(
        (
            metrics.events_by_type["full_checksum"],
            metrics.events_by_type["drift_detected"],
            metrics.events_by_type["drift_resolved"]
        ),
        (2, 1, 0)
    );
    assert_eq!(metrics.drift_rate, 33.3, "1 run of 3 found drift");
    assert!(metrics.last_run_at.is_some());

    assert_eq!(events::delete_older_than(&db, 30, 10).await.unwrap(), 0);
    sqlx::query(r#"UPDATE reconciliation_events SET "timestamp" = now() - interval '31 days'"#)
        .execute(&db)
        .await
        .unwrap();
    assert_eq!(events::delete_older_than(&db, 30, 10).await.unwrap(), 3);
}
