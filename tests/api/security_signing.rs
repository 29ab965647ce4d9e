//! Each agent's own signing secret: handed over once, verified by an implementation we did not
//! write (the `standardwebhooks` crate), useless against another agent, kept sealed, rotated
//! with a grace period, surviving a master-secret rotation; legacy agents keep working.

use std::time::Duration;

use base64::Engine;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;
use standardwebhooks::Webhook;
use uuid::Uuid;

use crate::{
    helpers::{AGENT_SECRET, TestApp, captured_logs, eventually, spawn_app_with},
    mock_agent::{Call, MockAgent, Reply},
};

async fn order_app(db: PgPool, extra: &[(&str, &str)]) -> TestApp {
    let extra: Vec<(String, String)> = extra
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    spawn_app_with(db, move |vars| {
        vars.push(("ORDER_SYNC_ENABLED".into(), "true".into()));
        vars.push(("ORDER_SYNC_SWEEP_INTERVAL_MS".into(), "200".into()));
        vars.push(("ORDER_SYNC_BACKOFF_MS".into(), "50".into()));
        vars.extend(extra);
    })
    .await
}

async fn heartbeat(app: &TestApp, vendor: &str, token: &str) {
    let response = app
        .agent_post("/api/agents/heartbeat", token, &json!({"vendorId": vendor}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

/// Inserts an order for `vendor` and returns the agent's call for it, once made.
async fn order_call(app: &TestApp, agent: &MockAgent, vendor: &str) -> Call {
    let calls_before = agent.calls().len();
    sqlx::query("INSERT INTO orders (id, vendor_id, total_amount) VALUES ($1, $2, 10)")
        .bind(Uuid::new_v4())
        .bind(vendor)
        .execute(&app.db)
        .await
        .unwrap();
    eventually(Duration::from_secs(15), "the agent was called", || async {
        agent.calls().len() > calls_before
    })
    .await;
    agent.calls().pop().unwrap()
}

fn verifies(secret: &str, call: &Call) -> bool {
    Webhook::new(secret)
        .unwrap()
        .verify(&call.raw, &call.headers)
        .is_ok()
}

#[sqlx::test]
async fn each_agent_verifies_its_calls_with_its_own_secret_and_no_other(db: PgPool) {
    let app = order_app(db, &[]).await;
    let (agent_a, agent_b) = (
        MockAgent::start(Reply::Done("ERP-A".into())).await,
        MockAgent::start(Reply::Done("ERP-B".into())).await,
    );
    let (token_a, token_b) = ("token-of-agent-a-0123456789", "token-of-agent-b-0123456789");
    let secret_a = app
        .register_agent_with_secret("vendor-a", token_a, &agent_a.url)
        .await;
    let secret_b = app
        .register_agent_with_secret("vendor-b", token_b, &agent_b.url)
        .await;
    for secret in [&secret_a, &secret_b] {
        let key = base64::engine::general_purpose::STANDARD
            .decode(secret.strip_prefix("whsec_").expect("whsec_ form"))
            .unwrap();
        assert!(key.len() >= 24, "at least 24 random bytes");
    }
    assert_ne!(secret_a, secret_b);
    heartbeat(&app, "vendor-a", token_a).await;
    heartbeat(&app, "vendor-b", token_b).await;

    let call_a = order_call(&app, &agent_a, "vendor-a").await;
    let call_b = order_call(&app, &agent_b, "vendor-b").await;
    assert!(verifies(&secret_a, &call_a), "A's secret verifies A's call");
    assert!(verifies(&secret_b, &call_b), "B's secret verifies B's call");
    assert!(
        !verifies(&secret_b, &call_a),
        "B's secret does not verify A's call"
    );
    assert!(
        !verifies(&secret_a, &call_b),
        "A's secret does not verify B's call"
    );
    for call in [&call_a, &call_b] {
        assert!(
            call.headers.get("authorization").is_none(),
            "no shared secret sent"
        );
        let sent = format!("{:?}", call.headers);
        assert!(!sent.contains(AGENT_SECRET));
    }
    // A tampered body no longer verifies.
    let mut tampered = call_a.clone();
    tampered.raw = String::from_utf8(call_a.raw.clone())
        .unwrap()
        .replace("vendor-a", "vendor-x")
        .into_bytes();
    assert!(!verifies(&secret_a, &tampered));
    assert!(
        agent_a
            .calls()
            .iter()
            .all(|c| c.body["vendorId"] == "vendor-a"),
        "vendor-a's agent only ever hears about vendor-a"
    );
}

#[sqlx::test]
async fn the_secret_is_shown_once_and_never_stored_or_logged_in_clear(db: PgPool) {
    let app = order_app(db, &[]).await;
    let secret = app
        .register_agent_with_secret(
            "v1",
            "token-of-agent-0123456789",
            "http://127.0.0.1:9/agent",
        )
        .await;
    let key_b64 = secret.strip_prefix("whsec_").unwrap().to_owned();
    let key = base64::engine::general_purpose::STANDARD
        .decode(&key_b64)
        .unwrap();
    let dump: String =
        sqlx::query_scalar("SELECT string_agg(row_to_json(a)::text, '') FROM agent_registry a")
            .fetch_one(&app.db)
            .await
            .unwrap();
    let sealed: Vec<u8> = sqlx::query_scalar(
        "SELECT signing_secret_sealed FROM agent_registry WHERE vendor_id = 'v1'",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert!(!dump.contains(&key_b64) && !dump.contains(&hex::encode(&key)));
    assert!(!sealed.windows(key.len()).any(|w| w == key.as_slice()));

    for path in ["/api/agents/v1", "/api/agents"] {
        let text = app
            .admin_get(path)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            !text.contains("signingSecret") && !text.contains(&key_b64),
            "{text}"
        );
    }
    assert!(
        !captured_logs().contains(&key_b64),
        "the secret reached the logs"
    );
}

#[sqlx::test]
async fn after_a_rotation_both_secrets_verify_until_the_grace_period_ends(db: PgPool) {
    let app = order_app(db, &[]).await;
    let agent = MockAgent::start(Reply::Done("ERP-1".into())).await;
    let token = "first-token-of-agent-0123456789";
    let first = app
        .register_agent_with_secret("v1", token, &agent.url)
        .await;
    heartbeat(&app, "v1", token).await;

    // The agent rotates itself: new token, new signing secret, same URL.
    let rotated = app
        .agent_post(
            "/api/agents/register",
            token,
            &json!({"vendorId": "v1", "agentUrl": agent.url, "erpType": "ebp", "authToken": "second-token-of-agent-0123456789"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(rotated.status(), StatusCode::OK);
    let second = rotated.json::<Value>().await.unwrap()["signingSecret"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(first, second);

    let call = order_call(&app, &agent, "v1").await;
    let signatures = call.headers["webhook-signature"].to_str().unwrap();
    assert_eq!(signatures.split(' ').count(), 2, "{signatures}");
    assert!(verifies(&second, &call), "the new secret verifies");
    assert!(
        verifies(&first, &call),
        "the old one too, during the grace period"
    );

    sqlx::query(
        "UPDATE agent_registry SET previous_signing_secret_expires_at = now() - interval '1 second'",
    )
    .execute(&app.db)
    .await
    .unwrap();
    let call = order_call(&app, &agent, "v1").await;
    assert!(verifies(&second, &call));
    assert!(!verifies(&first, &call), "the old secret is done");
}

#[sqlx::test]
async fn agents_registered_before_keep_the_shared_secret_until_they_rotate(db: PgPool) {
    let app = order_app(db, &[]).await;
    let agent = MockAgent::start(Reply::Done("ERP-1".into())).await;
    let token = "legacy-agent-token-0123456789";
    // As wave 1 stored it: plain bcrypt, no signing secret of its own.
    sqlx::query(
        "INSERT INTO agent_registry (vendor_id, agent_url, erp_type, auth_token_hash)
         VALUES ('v1', $1, 'sage', $2)",
    )
    .bind(&agent.url)
    .bind(bcrypt::hash(token, 4).unwrap())
    .execute(&app.db)
    .await
    .unwrap();
    heartbeat(&app, "v1", token).await;

    let call = order_call(&app, &agent, "v1").await;
    assert_eq!(
        call.headers["authorization"],
        format!("Bearer {AGENT_SECRET}")
    );
    let shared = Webhook::from_bytes(AGENT_SECRET.as_bytes().to_vec()).unwrap();
    assert!(shared.verify(&call.raw, &call.headers).is_ok());

    let rotated = app
        .agent_post(
            "/api/agents/register",
            token,
            &json!({"vendorId": "v1", "agentUrl": agent.url, "erpType": "sage", "authToken": "modern-agent-token-0123456789"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(rotated.status(), StatusCode::OK);
    let secret = rotated.json::<Value>().await.unwrap()["signingSecret"]
        .as_str()
        .unwrap()
        .to_owned();
    let call = order_call(&app, &agent, "v1").await;
    assert!(call.headers.get("authorization").is_none());
    assert!(verifies(&secret, &call));
    assert!(shared.verify(&call.raw, &call.headers).is_err());
}

#[sqlx::test]
async fn a_master_secret_rotation_keeps_every_agents_secret(db: PgPool) {
    let agent = MockAgent::start(Reply::Done("ERP-1".into())).await;
    let token = "token-of-agent-0123456789";
    let old_master = "old-master-secret-0123456789";
    let new_master = "new-master-secret-0123456789";
    let secret = {
        let app = order_app(
            db.clone(),
            &[
                ("AGENT_SECRET", old_master),
                ("ORDER_SYNC_ENABLED", "false"),
            ],
        )
        .await;
        app.register_agent_with_secret("v1", token, &agent.url)
            .await
    };
    let sealed_before: Vec<u8> =
        sqlx::query_scalar("SELECT signing_secret_sealed FROM agent_registry")
            .fetch_one(&db)
            .await
            .unwrap();

    // Start-up with the new master and the old one as previous re-seals under the new one.
    let app = order_app(
        db.clone(),
        &[
            ("AGENT_SECRET", new_master),
            ("AGENT_SECRET_PREVIOUS", old_master),
            ("ORDER_SYNC_ENABLED", "false"),
        ],
    )
    .await;
    let sealed_after: Vec<u8> =
        sqlx::query_scalar("SELECT signing_secret_sealed FROM agent_registry")
            .fetch_one(&db)
            .await
            .unwrap();
    assert_ne!(sealed_before, sealed_after, "re-sealed");
    drop(app);

    // The old master can now be forgotten: the agent's own secret still signs.
    let app = order_app(db.clone(), &[("AGENT_SECRET", new_master)]).await;
    heartbeat(&app, "v1", token).await;
    let call = order_call(&app, &agent, "v1").await;
    assert!(verifies(&secret, &call));
}

#[sqlx::test]
async fn without_agent_secret_nothing_registers(db: PgPool) {
    let app = spawn_app_with(db, |vars| vars.retain(|(k, _)| k != "AGENT_SECRET")).await;
    let response = app
        .admin_post(
            "/api/agents/register",
            &json!({"vendorId": "v1", "agentUrl": "http://127.0.0.1:9/agent", "erpType": "ebp", "authToken": "some-token-0123456789"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM agent_registry")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(count, 0);
}
