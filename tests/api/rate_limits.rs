//! Rate limits judge the client `TRUSTED_PROXIES` vouch for, and never fail a request when
//! Redis, where they are shared, is unreachable.

use reqwest::StatusCode;
use serde_json::json;
use sqlx::PgPool;

use crate::{
    helpers::{TestApp, spawn_app_with},
    ingest::ts,
};

async fn app_with(db: PgPool, vars: &[(&str, &str)]) -> TestApp {
    let vars: Vec<(String, String)> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    spawn_app_with(db, |all| all.extend(vars)).await
}

/// An unauthenticated registration attempt "from" `forwarded_for`: its status.
async fn attempt_from(app: &TestApp, forwarded_for: &str) -> StatusCode {
    app.client
        .post(app.url("/api/agents/register"))
        .header("x-forwarded-for", forwarded_for)
        .json(&json!({"vendorId": "v1", "agentUrl": "http://127.0.0.1:9/a", "erpType": "ebp", "authToken": "fake-token-0123456789"}))
        .send()
        .await
        .unwrap()
        .status()
}

#[sqlx::test]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_budget(db: PgPool) {
    let app = app_with(
        db,
        &[
            ("REGISTER_RATE_LIMIT_PER_MIN", "2"),
            ("TRUSTED_PROXIES", "127.0.0.0/8"),
        ],
    )
    .await;
    // The client forged the left-most hop; the proxy appended the address it saw.
    for _ in 0..2 {
        assert_eq!(
            attempt_from(&app, "203.0.113.50, 198.51.100.1").await,
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        attempt_from(&app, "203.0.113.51, 198.51.100.1").await,
        StatusCode::TOO_MANY_REQUESTS,
        "the forged hop changes nothing"
    );
    assert_eq!(
        attempt_from(&app, "198.51.100.2").await,
        StatusCode::UNAUTHORIZED,
        "another client behind the same proxy has its own budget"
    );
}

#[sqlx::test]
async fn without_trusted_proxies_forwarded_addresses_are_ignored(db: PgPool) {
    let app = app_with(db, &[("REGISTER_RATE_LIMIT_PER_MIN", "2")]).await;
    assert_eq!(
        attempt_from(&app, "198.51.100.1").await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        attempt_from(&app, "198.51.100.2").await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        attempt_from(&app, "198.51.100.3").await,
        StatusCode::TOO_MANY_REQUESTS,
        "every attempt came from the same peer"
    );
}

#[sqlx::test]
async fn with_redis_unreachable_each_replica_limits_alone_and_nothing_fails(db: PgPool) {
    let app = app_with(
        db,
        &[
            ("REDIS_URL", "redis://127.0.0.1:1"),
            ("INGEST_RATE_LIMIT_PER_MIN", "2"),
        ],
    )
    .await;
    let token = app.register_agent("v1").await;
    let body = json!({"vendorId": "v1", "warehouses": [
        {"erpWarehouseId": "W1", "name": "Rungis", "contentHash": "w1", "lastModifiedAt": ts(0)}
    ]});
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let response = app
            .agent_post("/api/sync/warehouses", &token, &body)
            .send()
            .await
            .unwrap();
        statuses.push(response.status());
    }
    assert_eq!(
        statuses,
        [
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
}
