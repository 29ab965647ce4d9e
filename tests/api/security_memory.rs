//! Memory an unauthenticated caller can make the real binary use: five 30 MiB hostile bodies
//! on a `/batch` route (32 MiB limit), measured as the process's peak resident size.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use sqlx::PgPool;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::{
    binary::Binary,
    helpers::{AGENT_SECRET, API_KEY, RedisPrefix},
};

const MIB: usize = 1024 * 1024;

/// Writes a request head and `body` on a raw connection while reading the answer (the server
/// answers, and closes, long before it would read the whole body); returns the status.
async fn raw_post(port: u16, token: &str, body: Vec<u8>) -> u16 {
    let stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let head = format!(
        "POST /api/sync/items/batch HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let sending = tokio::spawn(async move {
        let _ = writer.write_all(head.as_bytes()).await;
        let _ = writer.write_all(&body).await;
        // Dropping the write half would half-close the connection, which hyper takes for the
        // client going away: keep it open until the answer is read.
        std::future::pending::<()>().await;
        drop(writer);
    });
    let mut answer = Vec::new();
    let mut chunk = [0u8; 1024];
    while !answer.windows(2).any(|w| w == b"\r\n") {
        match tokio::time::timeout(Duration::from_secs(60), reader.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => answer.extend_from_slice(&chunk[..n]),
            other => panic!(
                "no answer: {other:?} after {:?}",
                String::from_utf8_lossy(&answer)
            ),
        }
    }
    sending.abort();
    let line = String::from_utf8_lossy(&answer);
    line.split(' ').nth(1).unwrap().parse().unwrap()
}

fn memory_kib(pid: u32, field: &str) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// The hostile bodies, each `size` bytes or so, with the status each must get.
fn hostile_bodies(size: usize) -> Vec<(&'static str, Vec<u8>, u16)> {
    let mut string = br#"{"vendorId":""#.to_vec();
    string.resize(size, b'A');
    string.extend_from_slice(br#""}"#);
    let mut array = br#"{"vendorId":["#.to_vec();
    while array.len() < size {
        array.extend_from_slice(b"0,0,0,0,0,0,0,0,");
    }
    array.extend_from_slice(b"0]}");
    let records = |prefix: &[u8], suffix: &[u8]| {
        let mut body = prefix.to_vec();
        while body.len() < size {
            body.extend_from_slice(br#"{"sku":"S","quantity":1},"#);
        }
        body.extend_from_slice(br#"{"sku":"S","quantity":1}]"#);
        body.extend_from_slice(suffix);
        body
    };
    vec![
        ("a vendorId string as long as the body", string, 422),
        ("a vendorId array as long as the body", array, 422),
        (
            "a known vendor, a wrong token",
            records(br#"{"vendorId":"v1","items":["#, b"}"),
            401,
        ),
        (
            "an unknown vendor",
            records(br#"{"vendorId":"nobody","items":["#, b"}"),
            404,
        ),
        (
            "vendorId after the records, beyond the unauthenticated budget",
            records(br#"{"items":["#, br#","vendorId":"v1"}"#),
            503,
        ),
    ]
}

#[sqlx::test]
async fn a_30_mib_hostile_body_costs_the_server_almost_no_memory(db: PgPool) {
    let prefix = RedisPrefix::new();
    let binary = Binary::start(
        &db,
        &prefix.0,
        &[
            ("API_SECRET", API_KEY),
            ("AGENT_SECRET", AGENT_SECRET),
            ("AGENT_PREAUTH_BUDGET_BYTES", "1048576"),
            ("ORDER_SYNC_ENABLED", "false"),
        ],
    )
    .await;
    let register = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{}/api/agents/register", binary.port))
        .header("x-api-key", API_KEY)
        .json(&json!({"vendorId": "v1", "agentUrl": "http://127.0.0.1:9/agent", "erpType": "ebp", "authToken": "the-real-token-0123456789"}))
        .send()
        .await
        .unwrap();
    assert_eq!(register.status(), StatusCode::CREATED);
    // Warm up (threads, buffers, the allocator's arenas) with the same requests, small.
    for (what, body, _) in hostile_bodies(MIB) {
        let status = raw_post(binary.port, "wrong-token-0123456789", body).await;
        assert!(status >= 400, "{what}: {status}");
    }

    let pid = binary.child.id();
    // Resets the peak (VmHWM) to the current resident size.
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").unwrap();
    let before = memory_kib(pid, "VmRSS:");
    for (what, body, status) in hostile_bodies(30 * MIB) {
        assert_eq!(
            raw_post(binary.port, "wrong-token-0123456789", body).await,
            status,
            "{what}"
        );
    }
    let peak = memory_kib(pid, "VmHWM:");
    let growth_mib = peak.saturating_sub(before) as f64 / 1024.0;
    eprintln!("peak RSS growth {growth_mib:.1} MiB");
    assert!(
        growth_mib < 10.0,
        "peak resident memory grew by {growth_mib:.1} MiB over five 30 MiB requests"
    );
}
