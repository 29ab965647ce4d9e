//! The clean-up jobs, called directly: rows that must go, rows that must stay.

use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use super::jobs;
use crate::helpers::spawn_app;

async fn job(db: &PgPool, status: &str, expires_in: Option<&str>) -> Uuid {
    sqlx::query_scalar(
        "INSERT INTO sync_jobs (vendor_id, operation, status, payload, expires_at)
         VALUES ('v1', 'create_order', $1, '{}', now() + $2::interval) RETURNING id",
    )
    .bind(status)
    .bind(expires_in)
    .fetch_one(db)
    .await
    .unwrap()
}

async fn exists(db: &PgPool, table: &str, id: Uuid) -> bool {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT EXISTS (SELECT 1 FROM {table} WHERE id = $1)"
    )))
    .bind(id)
    .fetch_one(db)
    .await
    .unwrap()
}

#[sqlx::test]
async fn cleanup_expired_jobs_deletes_finished_jobs_past_expiry_in_chunks(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    // More than one chunk (5 000) of expired, finished jobs.
    sqlx::query(
        "INSERT INTO sync_jobs (vendor_id, operation, status, payload, expires_at)
         SELECT 'v1', 'create_order', 'completed', '{}', now() - interval '1 day'
         FROM generate_series(1, 5003)",
    )
    .execute(&db)
    .await
    .unwrap();
    let failed = job(&db, "failed", Some("-1 minute")).await;
    let cancelled = job(&db, "cancelled", Some("-1 minute")).await;
    let stay = [
        job(&db, "pending", Some("-1 day")).await,
        job(&db, "processing", Some("-1 day")).await,
        job(&db, "completed", Some("1 day")).await,
        job(&db, "completed", None).await,
    ];
    let entry: Uuid = sqlx::query_scalar(
        "INSERT INTO dead_letter_queue (original_job_id, vendor_id, operation, payload, failure_reason)
         VALUES ($1, 'v1', 'create_order', '{}', 'boom') RETURNING id",
    )
    .bind(failed)
    .fetch_one(&db)
    .await
    .unwrap();
    // The service's own history: a run and status changes of 40 days ago, one of each kept.
    sqlx::query(
        "INSERT INTO scheduler_runs (job, trigger, instance, status, started_at) VALUES
             ('check-dlq', 'manual', 'x', 'succeeded', now() - interval '40 days'),
             ('check-dlq', 'manual', 'x', 'succeeded', now() - interval '1 day')",
    )
    .execute(&db)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO agent_status_changes (vendor_id, status, changed_at) VALUES
             ('v1', 'offline', now() - interval '42 days'),
             ('v1', 'online', now() - interval '41 days'),
             ('v1', 'offline', now() - interval '40 days'),
             ('v1', 'online', now() - interval '1 day'),
             ('v2', 'online', now() - interval '50 days')",
    )
    .execute(&db)
    .await
    .unwrap();

    let result = jobs(&app).cleanup_expired_jobs().await.unwrap();
    assert_eq!(
        result,
        json!({"syncJobs": 5005, "schedulerRuns": 1, "agentStatusChanges": 2, "operatorActions": 0})
    );
    assert!(!exists(&db, "sync_jobs", failed).await);
    assert!(!exists(&db, "sync_jobs", cancelled).await);
    for id in stay {
        assert!(
            exists(&db, "sync_jobs", id).await,
            "live or unexpired job kept"
        );
    }
    let original: Option<Uuid> =
        sqlx::query_scalar("SELECT original_job_id FROM dead_letter_queue WHERE id = $1")
            .bind(entry)
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!(original, None, "the DLQ entry stays, without its job");
    let kept: Vec<(String, String)> = sqlx::query_as(
        "SELECT vendor_id, status FROM agent_status_changes ORDER BY vendor_id, changed_at",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    let kept: Vec<(&str, &str)> = kept.iter().map(|(v, s)| (v.as_str(), s.as_str())).collect();
    assert_eq!(
        kept,
        [("v1", "offline"), ("v1", "online"), ("v2", "online")],
        "each agent keeps its status in force before the cutoff"
    );
    assert_eq!(
        jobs(&app).cleanup_expired_jobs().await.unwrap(),
        json!({"syncJobs": 0, "schedulerRuns": 0, "agentStatusChanges": 0, "operatorActions": 0}),
        "nothing left to do"
    );
}

#[sqlx::test]
async fn archive_reconciliation_events_deletes_those_older_than_30_days(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    sqlx::query(
        r#"INSERT INTO reconciliation_events (vendor_id, event_type, summary, "timestamp") VALUES
               ('v1', 'full_checksum', '{}', now() - interval '31 days'),
               ('v2', 'drift_detected', '{}', now() - interval '90 days'),
               ('v1', 'full_checksum', '{}', now() - interval '29 days'),
               ('v1', 'drift_resolved', '{}', now() - interval '1 hour')"#,
    )
    .execute(&db)
    .await
    .unwrap();
    let result = jobs(&app).archive_reconciliation_events().await.unwrap();
    assert_eq!(result, json!({"deleted": 2}));
    let left: Vec<String> =
        sqlx::query_scalar(r#"SELECT event_type FROM reconciliation_events ORDER BY "timestamp""#)
            .fetch_all(&db)
            .await
            .unwrap();
    assert_eq!(left, ["full_checksum", "drift_resolved"]);
}

#[sqlx::test]
async fn cleanup_resolved_dlq_deletes_entries_resolved_over_30_days_ago(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    let insert = |resolved: bool, resolved_ago: Option<&'static str>| {
        let db = db.clone();
        async move {
            sqlx::query_scalar::<_, Uuid>(
                "INSERT INTO dead_letter_queue
                     (vendor_id, operation, payload, failure_reason, resolved, resolved_at, created_at)
                 VALUES ('v1', 'create_order', '{}', 'boom', $1, now() - $2::interval,
                         now() - interval '60 days')
                 RETURNING id",
            )
            .bind(resolved)
            .bind(resolved_ago)
            .fetch_one(&db)
            .await
            .unwrap()
        }
    };
    let old = insert(true, Some("31 days")).await;
    let recent = insert(true, Some("29 days")).await;
    let unresolved = insert(false, None).await;
    let result = jobs(&app).cleanup_resolved_dlq().await.unwrap();
    assert_eq!(result, json!({"deleted": 1}));
    assert!(!exists(&db, "dead_letter_queue", old).await);
    assert!(exists(&db, "dead_letter_queue", recent).await);
    assert!(
        exists(&db, "dead_letter_queue", unresolved).await,
        "an old entry nobody resolved is never deleted"
    );
}
