//! Transport limits of the server: slow clients, idle connections, the connection cap.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use sqlx::PgPool;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::helpers::{TestApp, spawn_app_with};

async fn app_with(db: PgPool, extra: &[(&str, &str)]) -> TestApp {
    let extra: Vec<(String, String)> = extra
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    spawn_app_with(db, move |vars| vars.extend(extra)).await
}

async fn connect(app: &TestApp) -> TcpStream {
    TcpStream::connect(app.address.trim_start_matches("http://"))
        .await
        .unwrap()
}

/// Reads until the server closes the connection; how long that took (panics after 10 s).
async fn closed_after(stream: &mut TcpStream) -> Duration {
    let started = Instant::now();
    let mut buffer = [0u8; 1024];
    loop {
        match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return started.elapsed(),
            Ok(Ok(_)) => continue, // whatever the server says before closing
            Err(_) => panic!("the connection is still open after 10 s"),
        }
    }
}

/// Sends `GET /health` and reads the whole answer, leaving the connection open.
async fn get_health(stream: &mut TcpStream) {
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buffer))
            .await
            .expect("an answer")
            .unwrap();
        assert!(n > 0, "closed before answering");
        answer.extend_from_slice(&buffer[..n]);
        let text = String::from_utf8_lossy(&answer);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap();
            if body.len() >= length {
                assert!(head.starts_with("HTTP/1.1 "), "{head}");
                return;
            }
        }
    }
}

#[sqlx::test]
async fn a_request_head_that_never_finishes_is_dropped(db: PgPool) {
    let app = app_with(db, &[("HTTP_HEADER_READ_TIMEOUT_MS", "300")]).await;
    let mut slow = connect(&app).await;
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: test\r\nX-Slow: ")
        .await
        .unwrap();
    let took = closed_after(&mut slow).await;
    assert!(took >= Duration::from_millis(250), "closed after {took:?}");

    // Nothing at all is treated the same.
    let mut silent = connect(&app).await;
    let took = closed_after(&mut silent).await;
    assert!(took >= Duration::from_millis(250), "closed after {took:?}");
}

#[sqlx::test]
async fn an_idle_keep_alive_connection_is_closed(db: PgPool) {
    let app = app_with(
        db,
        &[
            ("HTTP_HEADER_READ_TIMEOUT_MS", "20000"),
            ("HTTP_IDLE_TIMEOUT_MS", "300"),
        ],
    )
    .await;
    let mut stream = connect(&app).await;
    get_health(&mut stream).await;
    get_health(&mut stream).await; // kept alive between requests
    let took = closed_after(&mut stream).await;
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(10),
        "closed after {took:?}, long before the 20 s header timeout"
    );
}

#[sqlx::test]
async fn connections_beyond_the_cap_wait_for_a_free_one(db: PgPool) {
    let app = app_with(
        db,
        &[
            ("HTTP_MAX_CONNECTIONS", "2"),
            ("HTTP_HEADER_READ_TIMEOUT_MS", "30000"),
            ("HTTP_IDLE_TIMEOUT_MS", "30000"),
        ],
    )
    .await;
    // Two connections the server has taken (each answered once), kept open.
    let mut first = connect(&app).await;
    get_health(&mut first).await;
    let mut second = connect(&app).await;
    get_health(&mut second).await;

    let fresh = || {
        reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .unwrap()
    };
    let third = fresh()
        .get(app.url("/health"))
        .timeout(Duration::from_secs(1))
        .send()
        .await;
    assert!(
        third.as_ref().is_err_and(|e| e.is_timeout()),
        "a third connection is not served while two are open: {third:?}"
    );

    drop(first);
    let served = fresh()
        .get(app.url("/health"))
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .unwrap();
    assert_eq!(served.status(), StatusCode::OK);
    drop(second);
}
