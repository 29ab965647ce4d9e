//! The HTTP server: hyper-util's connection builder with a timer, in place of `axum::serve`
//! (which has no timer, so a client that never finishes its request head holds a connection
//! for ever). Limits, all configurable:
//!
//! * `HTTP_HEADER_READ_TIMEOUT_MS`: a request head must arrive complete within this time of
//!   the connection opening or of the previous response (hyper starts its HTTP/1 timer when it
//!   starts waiting for a head, so this also bounds an idle keep-alive connection). A
//!   connection that sends nothing at all is closed after the same time.
//! * `HTTP_IDLE_TIMEOUT_MS`: a connection with no request in flight for this long is closed
//!   (HTTP/2 connections, and HTTP/1 ones whose header timeout is longer).
//! * `HTTP_MAX_CONNECTIONS`: connections served at once; further clients wait in the
//!   listener's backlog until one closes.
//!
//! Shutdown: stop accepting, ask every connection to finish what is in flight and close, wait
//! up to [`SHUTDOWN_GRACE`] for them.

use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

use axum::{Router, extract::Request};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{Semaphore, watch},
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tower::{Service, ServiceExt};

use crate::config::Settings;

/// How long a stopping server waits for requests in flight.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

impl ServerLimits {
    pub fn from_settings(settings: &Settings) -> Self {
        Self {
            header_read_timeout: settings.http_header_read_timeout,
            idle_timeout: settings.http_idle_timeout,
            max_connections: settings.http_max_connections,
        }
    }
}

/// Serves `router` on `listener` until `shutdown` is cancelled, then drains.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ServerLimits,
    shutdown: CancellationToken,
) {
    let mut make_service = router.into_make_service_with_connect_info::<SocketAddr>();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder.http2().timer(TokioTimer::new());
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let connections = TaskTracker::new();
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            permit = permits.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
        };
        let (stream, remote) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: back off rather than spin.
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
                    }
                }
            },
        };
        let service = match make_service.call(remote).await {
            Ok(service) => service,
            Err(never) => match never {},
        };
        let (builder, shutdown) = (builder.clone(), shutdown.clone());
        connections.spawn(async move {
            let _permit = permit;
            serve_connection(stream, service, builder, limits, shutdown).await;
        });
    }
    drop(listener);
    connections.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            still_open = connections.len(),
            "connections still busy after the shutdown grace; closing them"
        );
    }
}

async fn serve_connection<S>(
    stream: TcpStream,
    service: S,
    builder: auto::Builder<TokioExecutor>,
    limits: ServerLimits,
    shutdown: CancellationToken,
) where
    S: Service<Request<Incoming>, Response = axum::response::Response, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let _ = stream.set_nodelay(true);
    let (in_flight, mut idle) = watch::channel(0usize);
    let in_flight = Arc::new(in_flight);
    let hyper_service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let guard = InFlight::enter(&in_flight);
        let call = service.clone().oneshot(request);
        async move {
            let response = call.await;
            drop(guard);
            response
        }
    });
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), hyper_service);
    tokio::pin!(connection);
    let mut closing = false;
    let mut first_wait = true;
    loop {
        // Before its first request a connection gets the header timeout; after, the idle one.
        let wait = if first_wait {
            limits.header_read_timeout
        } else {
            limits.idle_timeout
        };
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%error, "connection ended with an error");
                }
                break;
            }
            _ = shutdown.cancelled(), if !closing => {
                connection.as_mut().graceful_shutdown();
                closing = true;
            }
            idled = idle_for(&mut idle, wait), if !closing => {
                if idled {
                    connection.as_mut().graceful_shutdown();
                    closing = true;
                } else {
                    first_wait = false;
                }
            }
        }
    }
}

/// Counts a request in flight on its connection for as long as it lives.
struct InFlight(Arc<watch::Sender<usize>>);

impl InFlight {
    fn enter(count: &Arc<watch::Sender<usize>>) -> Self {
        count.send_modify(|n| *n += 1);
        Self(count.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

/// `true` once no request has been in flight for `timeout`; `false` as soon as the count
/// changes (the caller then waits again, with the idle timeout).
async fn idle_for(count: &mut watch::Receiver<usize>, timeout: Duration) -> bool {
    let busy = *count.borrow_and_update() > 0;
    let changed = async {
        if count.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    if busy {
        changed.await;
        return false;
    }
    tokio::select! {
        _ = tokio::time::sleep(timeout) => true,
        _ = changed => false,
    }
}
