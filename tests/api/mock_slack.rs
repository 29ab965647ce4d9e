//! A Slack incoming webhook on 127.0.0.1:0 that records what it is sent; it can answer with
//! an error or hang.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{Json, Router, extract::State, http::StatusCode, routing::post};
use serde_json::Value;

/// The secret part of the webhook URL: must never reach a log line.
pub const WEBHOOK_SECRET: &str = "XyZzY-slack-webhook-secret-0042";

#[derive(Clone, Copy, Debug)]
pub enum Behaviour {
    Ok,
    Status(u16),
    Hang(Duration),
}

#[derive(Clone)]
struct Receiver {
    messages: Arc<Mutex<Vec<Value>>>,
    behaviour: Arc<Mutex<Behaviour>>,
}

pub struct MockSlack {
    /// The webhook URL to configure as SLACK_WEBHOOK_URL.
    pub url: String,
    receiver: Receiver,
    _server: tokio::task::JoinHandle<()>,
}

impl MockSlack {
    pub async fn start(behaviour: Behaviour) -> Self {
        let receiver = Receiver {
            messages: Arc::default(),
            behaviour: Arc::new(Mutex::new(behaviour)),
        };
        let app = Router::new()
            .route(
                &format!("/services/T000/B000/{WEBHOOK_SECRET}"),
                post(receive),
            )
            .with_state(receiver.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "http://{}/services/T000/B000/{WEBHOOK_SECRET}",
            listener.local_addr().unwrap()
        );
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            url,
            receiver,
            _server: server,
        }
    }

    pub fn set(&self, behaviour: Behaviour) {
        *self.receiver.behaviour.lock().unwrap() = behaviour;
    }

    /// The `text` of every message received, in order.
    pub fn texts(&self) -> Vec<String> {
        self.receiver
            .messages
            .lock()
            .unwrap()
            .iter()
            .map(|m| m["text"].as_str().unwrap_or_default().to_owned())
            .collect()
    }
}

async fn receive(State(receiver): State<Receiver>, Json(message): Json<Value>) -> StatusCode {
    let behaviour = *receiver.behaviour.lock().unwrap();
    match behaviour {
        Behaviour::Ok => {
            receiver.messages.lock().unwrap().push(message);
            StatusCode::OK
        }
        Behaviour::Status(code) => StatusCode::from_u16(code).unwrap(),
        Behaviour::Hang(duration) => {
            tokio::time::sleep(duration).await;
            receiver.messages.lock().unwrap().push(message);
            StatusCode::OK
        }
    }
}
