//! What an unauthenticated caller can cost: hostile `vendorId`s are refused before Postgres,
//! bodies naming their vendor late are read within a budget, failed authentications are
//! limited before bcrypt, the bcrypt queue is bounded, every byte of a long token counts, a
//! rotation cannot resurrect an agent. (Memory: security_memory.rs.)

use std::net::IpAddr;

use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::helpers::{TestApp, spawn_app, spawn_app_with};

const MIB: usize = 1024 * 1024;

fn heartbeat_from(
    app: &TestApp,
    client: &reqwest::Client,
    token: &str,
    body: &Value,
) -> reqwest::RequestBuilder {
    client
        .post(app.url("/api/agents/heartbeat"))
        .bearer_auth(token)
        .json(body)
}

/// A client whose connections come from `ip` (any 127.0.0.0/8 address is this machine).
fn client_from(ip: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(ip.parse::<IpAddr>().unwrap())
        .build()
        .unwrap()
}

#[sqlx::test]
async fn hostile_vendor_ids_are_refused_before_postgres(db: PgPool) {
    let app = spawn_app(db).await;
    let token = "any-token-0123456789";
    // From here on every query fails: a 4xx proves the request never needed Postgres.
    app.db.close().await;
    let raw = |body: String| {
        app.client
            .post(app.url("/api/agents/heartbeat"))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    for (body, status) in [
        (r#"{"vendorId":"a\u0000b"}"#.to_owned(), 422),
        (format!(r#"{{"vendorId":"{}"}}"#, "a".repeat(MIB)), 422),
        (format!(r#"{{"vendorId":"{}"}}"#, "a".repeat(101)), 422),
        (
            format!(r#"{{"vendorId":[{}0]}}"#, "0,".repeat(MIB / 2)),
            422,
        ),
        (r#"{"vendorId":{"nested":"x"}}"#.to_owned(), 422),
        (r#"{"vendorId":5}"#.to_owned(), 422),
        (r#"{"vendorId":""}"#.to_owned(), 422),
        (r#"{"version":"1"}"#.to_owned(), 422),
        (r#"[1,2,3]"#.to_owned(), 422),
        ("{not json".to_owned(), 400),
    ] {
        let response = raw(body.clone()).await.unwrap();
        let shown = &body[..body.len().min(40)];
        assert_eq!(response.status().as_u16(), status, "{shown}");
        let error: Value = response.json().await.unwrap();
        assert!(error["error"]["code"].is_string(), "{shown}: {error}");
        assert!(
            error.to_string().len() < 1_000,
            "{shown}: the hostile value is not echoed back"
        );
    }
    // The control: a well-formed vendor id does reach Postgres (closed: 500).
    let response = raw(r#"{"vendorId":"v1"}"#.to_owned()).await.unwrap();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
}

#[sqlx::test]
async fn failed_authentications_are_limited_before_bcrypt(db: PgPool) {
    let app = spawn_app_with(db, |vars| {
        vars.push(("AUTH_FAILURES_PER_MIN".into(), "3".into()));
    })
    .await;
    let token = app.register_agent("v1").await;
    app.register_agent("v2").await;
    let body = |vendor: &str| json!({"vendorId": vendor});
    let (agent, attacker, elsewhere, crowd) = (
        client_from("127.0.0.1"),
        client_from("127.0.0.2"),
        client_from("127.0.0.3"),
        client_from("127.0.0.4"),
    );
    let send = |request: reqwest::RequestBuilder| async move {
        let response = request.send().await.unwrap();
        let retry_after = response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().parse::<u64>().unwrap());
        (response.status(), retry_after)
    };
    let beat = |client: &reqwest::Client, token: &str, vendor: &str| {
        heartbeat_from(&app, client, token, &body(vendor))
    };
    assert_eq!(send(beat(&agent, &token, "v1")).await.0, StatusCode::OK);

    // Guessing at v1 from one address: a few bcrypts, then 429 with no bcrypt at all.
    let runs = app.state.agents.bcrypt_runs();
    let mut refused = 0;
    let mut limited = None;
    for i in 0..6 {
        match send(beat(&attacker, &format!("guess-{i}-0123456789"), "v1")).await {
            (StatusCode::UNAUTHORIZED, _) => refused += 1,
            (StatusCode::TOO_MANY_REQUESTS, Some(retry_after)) => {
                limited = Some(retry_after);
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(
        (1..=3).contains(&refused),
        "{refused} guesses reached bcrypt"
    );
    assert!(
        limited.is_some_and(|s| (1..=60).contains(&s)),
        "{limited:?}"
    );
    assert_eq!(app.state.agents.bcrypt_runs() - runs, refused);
    let runs = app.state.agents.bcrypt_runs();
    let (code, _) = send(beat(&attacker, "guess-9-0123456789", "v1")).await;
    assert_eq!(code, StatusCode::TOO_MANY_REQUESTS);
    // Another address guessing at the same vendor meets the vendor's spent budget.
    let (code, _) = send(beat(&elsewhere, "guess-a-0123456789", "v1")).await;
    assert_eq!(code, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        app.state.agents.bcrypt_runs(),
        runs,
        "no bcrypt after the limit"
    );

    // The real agent is not locked out: its token is cached, and its address authenticated
    // for v1 before, so even a new (uncached) token of its own is checked.
    assert_eq!(send(beat(&agent, &token, "v1")).await.0, StatusCode::OK);
    let rotated = agent
        .post(app.url("/api/agents/register"))
        .bearer_auth(&token)
        .json(&json!({"vendorId": "v1", "agentUrl": "http://127.0.0.1:9/agent", "erpType": "ebp", "authToken": "rotated-token-0123456789"}))
        .send()
        .await
        .unwrap();
    assert_eq!(rotated.status(), StatusCode::OK);
    assert_eq!(
        send(beat(&agent, "rotated-token-0123456789", "v1")).await.0,
        StatusCode::OK
    );
    // Other vendors are untouched.
    let runs = app.state.agents.bcrypt_runs();
    let (code, _) = send(beat(&elsewhere, "guess-b-0123456789", "v2")).await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    assert_eq!(app.state.agents.bcrypt_runs() - runs, 1);

    // However many arrive at once, no more than the budget reach bcrypt.
    let runs = app.state.agents.bcrypt_runs();
    let burst = (0..30).map(|i| send(beat(&crowd, &format!("burst-{i}-0123456789"), "v2")));
    let codes: Vec<StatusCode> = futures::future::join_all(burst)
        .await
        .into_iter()
        .map(|(code, _)| code)
        .collect();
    let reached = app.state.agents.bcrypt_runs() - runs;
    assert!(
        reached <= 2,
        "{reached} of a burst of 30 reached bcrypt: {codes:?}"
    );
    assert!(
        codes
            .iter()
            .all(|c| [StatusCode::UNAUTHORIZED, StatusCode::TOO_MANY_REQUESTS].contains(c))
    );
    assert!(codes.contains(&StatusCode::TOO_MANY_REQUESTS));
}

#[sqlx::test]
async fn a_full_bcrypt_queue_answers_503_at_once(db: PgPool) {
    let app = spawn_app_with(db, |vars| {
        vars.push(("AUTH_BCRYPT_CONCURRENCY".into(), "1".into()));
        vars.push(("AUTH_BCRYPT_QUEUE".into(), "1".into()));
        vars.push(("AUTH_FAILURES_PER_MIN".into(), "1000000".into()));
    })
    .await;
    app.register_agent("v1").await;
    let requests = (0..40).map(|i| {
        app.agent_post(
            "/api/agents/heartbeat",
            &format!("wrong-token-{i}-0123456789"),
            &json!({"vendorId": "v1"}),
        )
        .send()
    });
    let responses = futures::future::join_all(requests).await;
    let mut busy = 0;
    for response in responses {
        let response = response.unwrap();
        match response.status() {
            StatusCode::UNAUTHORIZED => {}
            StatusCode::SERVICE_UNAVAILABLE => {
                busy += 1;
                assert_eq!(response.headers()["retry-after"], "1");
                let body: Value = response.json().await.unwrap();
                assert_eq!(body["error"]["code"], "service_unavailable");
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert!(
        busy > 0,
        "40 bcrypt verifications at once cannot all queue behind one slot"
    );
}

#[sqlx::test]
async fn every_byte_of_a_long_token_counts_and_old_hashes_still_work(db: PgPool) {
    let app = spawn_app(db).await;
    let token = format!("{}-the-real-end", "t".repeat(90));
    let forged = format!("{}-a-forged-end", "t".repeat(90));
    app.register_agent_at("v1", &token, "http://127.0.0.1:9/agent")
        .await;
    let beat = |token: String| {
        app.agent_post("/api/agents/heartbeat", &token, &json!({"vendorId": "v1"}))
            .send()
    };
    assert_eq!(
        beat(forged).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(beat(token).await.unwrap().status(), StatusCode::OK);

    // A hash made before pre-hashing (plain bcrypt) still verifies.
    sqlx::query("UPDATE agent_registry SET auth_token_hash = $1 WHERE vendor_id = 'v1'")
        .bind(bcrypt::hash("wave-one-token-0123456789", 4).unwrap())
        .execute(&app.db)
        .await
        .unwrap();
    assert_eq!(
        beat("wave-one-token-0123456789".into())
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
}

#[sqlx::test]
async fn a_rotation_cannot_resurrect_or_overtake(db: PgPool) {
    use erp_sync::agents::queries::{NewAgent, deregister, find_by_vendor_id, rotate, upsert};
    let new = |hash: &'static str| NewAgent {
        vendor_id: "v1",
        agent_url: "https://agent.example.com/",
        erp_type: "ebp",
        version: None,
        auth_token_hash: hash,
        signing_secret_sealed: b"sealed",
    };
    upsert(&db, &new("hash-1")).await.unwrap();
    // A rotation proved with a token that is no longer current changes nothing.
    assert!(
        rotate(&db, &new("hash-2"), "hash-0")
            .await
            .unwrap()
            .is_none()
    );
    // Deregistered between the token check and the write: nothing changes either.
    deregister(&db, "v1").await.unwrap();
    assert!(
        rotate(&db, &new("hash-2"), "hash-1")
            .await
            .unwrap()
            .is_none()
    );
    let record = find_by_vendor_id(&db, "v1").await.unwrap().unwrap();
    assert_eq!(record.auth_token_hash, "hash-1");
    assert!(record.deregistered_at.is_some(), "still deregistered");
    // The control: current and registered, it rotates.
    upsert(&db, &new("hash-1")).await.unwrap();
    let rotated = rotate(&db, &new("hash-2"), "hash-1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rotated.auth_token_hash, "hash-2");
}

#[sqlx::test]
async fn a_body_naming_its_vendor_last_is_read_within_the_budget_only(db: PgPool) {
    let app = spawn_app_with(db, |vars| {
        vars.push(("AGENT_PREAUTH_MAX_BYTES".into(), "4096".into()));
        vars.push(("AGENT_PREAUTH_BUDGET_BYTES".into(), "65536".into()));
    })
    .await;
    let token = app.register_agent("v1").await;
    let items = |n: usize| -> Vec<Value> {
        (0..n)
            .map(|i| json!({"sku": format!("SKU-{i:05}"), "name": "Flour", "unitCode": "KG", "vatCode": "N", "price": 1.5, "contentHash": format!("h{i}"), "lastModifiedAt": "2026-01-01T00:00:00Z"}))
            .collect()
    };
    // serde_json sorts keys: "vendorId" comes after "items", beyond the 4 KiB window (as from
    // any encoder that sorts keys).
    let post = |n: usize| {
        app.agent_post(
            "/api/sync/items/batch",
            &token,
            &json!({"vendorId": "v1", "items": items(n)}),
        )
        .send()
    };
    let small = post(100).await.unwrap(); // ~15 KiB: within the budget
    assert_eq!(small.status(), StatusCode::OK);
    let large = post(2000).await.unwrap(); // ~300 KiB: more than the budget
    assert_eq!(large.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(large.headers().contains_key("retry-after"));
}

#[sqlx::test]
async fn an_unauthenticated_body_that_trickles_in_is_cut_short(db: PgPool) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app_with(db, |vars| {
        vars.push(("HTTP_HEADER_READ_TIMEOUT_MS".into(), "300".into()));
    })
    .await;
    let mut stream = tokio::net::TcpStream::connect(app.address.trim_start_matches("http://"))
        .await
        .unwrap();
    stream
        .write_all(
            b"POST /api/agents/heartbeat HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer some-token-0123456789\r\n\
              Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"vend",
        )
        .await
        .unwrap();
    // The rest never comes; the answer must not wait for the 60 s request timeout.
    let mut answer = vec![0u8; 1024];
    let n = tokio::time::timeout(std::time::Duration::from_secs(10), stream.read(&mut answer))
        .await
        .expect("answered long before the request timeout")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("too slowly"), "{answer}");
}
