//! Prometheus metrics: one registry per application (tests run many in one process, so
//! nothing is global). Every label value comes from a closed set (route templates, status
//! codes, fixed kinds and outcomes): nothing a client sends becomes a label, and no label
//! names a vendor.

use std::{sync::Arc, time::Instant};

use axum::{
    extract::{MatchedPath, Request, State},
    http::Method,
    middleware::Next,
    response::Response,
};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

/// The route label of a request that matched no route (never its raw path).
const UNMATCHED_ROUTE: &str = "unmatched";
/// Seconds, from 5 ms (health, cached auth) to a minute (the request timeout).
const DURATION_BUCKETS: [f64; 13] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    method: &'static str,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: &'static str,
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IngestLabels {
    kind: &'static str,
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobRunLabels {
    job: &'static str,
    status: &'static str,
}

/// What became of one order-sync attempt or callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobOutcome {
    /// The agent answered 200 with its reference, or called back `completed`.
    Completed,
    /// The agent answered 202: it will call back.
    Accepted,
    /// The call failed; tried again later (an attempt spent).
    Retried,
    /// The agent was not called (offline, breaker open, address refused); the job waits
    /// without spending an attempt.
    Deferred,
    /// Failed for good: in the dead-letter queue.
    DeadLettered,
}

impl JobOutcome {
    const ALL: [Self; 5] = [
        Self::Completed,
        Self::Accepted,
        Self::Retried,
        Self::Deferred,
        Self::DeadLettered,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::Accepted => "accepted",
            Self::Retried => "retried",
            Self::Deferred => "deferred",
            Self::DeadLettered => "dead_lettered",
        }
    }
}

/// Ingested record counts of one request, by kind (`items`, `stock`, `warehouses`).
pub struct IngestCounts {
    pub kind: &'static str,
    pub processed: usize,
    pub skipped: usize,
    pub failed: usize,
}

/// The gauges that need SQL, read on a timer.
#[derive(Debug, Clone, Default)]
pub struct GaugeReadings {
    pub queue_waiting: i64,
    pub dlq_unresolved: i64,
    pub agents_online: i64,
    pub agents_degraded: i64,
    pub agents_offline: i64,
    pub breakers_open: i64,
}

#[derive(Clone)]
pub struct Prometheus {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    http_requests: Family<HttpLabels, Counter>,
    http_duration: Family<RouteLabels, Histogram>,
    ingest_records: Family<IngestLabels, Counter>,
    jobs: Family<OutcomeLabels, Counter>,
    scheduler_runs: Family<JobRunLabels, Counter>,
    queue_waiting: Gauge,
    dlq_unresolved: Gauge,
    agents: Family<StatusLabels, Gauge>,
    breakers_open: Gauge,
}

impl Default for Prometheus {
    fn default() -> Self {
        Self::new()
    }
}

impl Prometheus {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let http_requests = Family::<HttpLabels, Counter>::default();
        let http_duration = Family::<RouteLabels, Histogram>::new_with_constructor(
            (|| Histogram::new(DURATION_BUCKETS)) as fn() -> Histogram,
        );
        let ingest_records = Family::<IngestLabels, Counter>::default();
        let jobs = Family::<OutcomeLabels, Counter>::default();
        let scheduler_runs = Family::<JobRunLabels, Counter>::default();
        let agents = Family::<StatusLabels, Gauge>::default();
        let (queue_waiting, dlq_unresolved, breakers_open) =
            (Gauge::default(), Gauge::default(), Gauge::default());
        // Counters get their `_total` suffix from the encoder.
        registry.register(
            "http_requests",
            "HTTP requests by method, route template and status",
            http_requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request duration by method and route template",
            http_duration.clone(),
        );
        registry.register(
            "erp_sync_ingest_records",
            "Records pushed by agents, by kind and outcome",
            ingest_records.clone(),
        );
        registry.register(
            "erp_sync_jobs",
            "Order-sync attempts and callbacks by outcome",
            jobs.clone(),
        );
        registry.register(
            "erp_sync_scheduler_runs",
            "Scheduled job runs of this replica by job and status",
            scheduler_runs.clone(),
        );
        registry.register(
            "erp_sync_queue_waiting",
            "Order-sync jobs due and waiting for a worker",
            queue_waiting.clone(),
        );
        registry.register(
            "erp_sync_dlq_unresolved",
            "Unresolved dead-letter entries",
            dlq_unresolved.clone(),
        );
        registry.register(
            "erp_sync_agents",
            "Registered agents by health",
            agents.clone(),
        );
        registry.register(
            "erp_sync_breakers_open",
            "Circuit breakers of this replica that are open",
            breakers_open.clone(),
        );
        // Every series of a closed set exists from the start, at zero, so rates work at once.
        for kind in ["items", "stock", "warehouses"] {
            for status in ["processed", "skipped", "failed"] {
                ingest_records.get_or_create_owned(&IngestLabels { kind, status });
            }
        }
        for outcome in JobOutcome::ALL {
            jobs.get_or_create_owned(&OutcomeLabels {
                outcome: outcome.as_str(),
            });
        }
        for status in ["online", "degraded", "offline"] {
            agents.get_or_create_owned(&StatusLabels { status });
        }
        Self {
            inner: Arc::new(Inner {
                registry,
                http_requests,
                http_duration,
                ingest_records,
                jobs,
                scheduler_runs,
                queue_waiting,
                dlq_unresolved,
                agents,
                breakers_open,
            }),
        }
    }

    fn observe_http(&self, method: &Method, route: &str, status: u16, seconds: f64) {
        let method = method_label(method);
        let route = route.to_owned();
        self.inner
            .http_duration
            .get_or_create(&RouteLabels {
                method,
                route: route.clone(),
            })
            .observe(seconds);
        self.inner
            .http_requests
            .get_or_create(&HttpLabels {
                method,
                route,
                status,
            })
            .inc();
    }

    pub fn count_ingest(&self, counts: &IngestCounts) {
        for (status, n) in [
            ("processed", counts.processed),
            ("skipped", counts.skipped),
            ("failed", counts.failed),
        ] {
            self.inner
                .ingest_records
                .get_or_create(&IngestLabels {
                    kind: counts.kind,
                    status,
                })
                .inc_by(n as u64);
        }
    }

    pub fn count_job(&self, outcome: JobOutcome) {
        self.inner
            .jobs
            .get_or_create(&OutcomeLabels {
                outcome: outcome.as_str(),
            })
            .inc();
    }

    pub fn count_scheduler_run(&self, job: &'static str, status: &'static str) {
        self.inner
            .scheduler_runs
            .get_or_create(&JobRunLabels { job, status })
            .inc();
    }

    pub fn set_gauges(&self, readings: &GaugeReadings) {
        let inner = &self.inner;
        inner.queue_waiting.set(readings.queue_waiting);
        inner.dlq_unresolved.set(readings.dlq_unresolved);
        inner.breakers_open.set(readings.breakers_open);
        for (status, value) in [
            ("online", readings.agents_online),
            ("degraded", readings.agents_degraded),
            ("offline", readings.agents_offline),
        ] {
            inner
                .agents
                .get_or_create(&StatusLabels { status })
                .set(value);
        }
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn encode(&self) -> String {
        let mut text = String::new();
        if let Err(error) =
            prometheus_client::encoding::prometheus_text::encode(&mut text, &self.inner.registry)
        {
            tracing::error!(%error, "could not encode the metrics");
        }
        text
    }
}

pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Methods outside the standard set (any token is a valid method) share one label.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// The route template with `:name` placeholders (`/api/agents/:vendorId`): braces inside a
/// label value are valid Prometheus text, but trip up line-oriented parsers and relabel regexes.
fn route_label(template: &str) -> String {
    template.replace('{', ":").replace('}', "")
}

/// Middleware: counts and times every request under its route template. Applied with
/// `Router::layer`, so it runs inside routing and sees the `MatchedPath`.
pub async fn track_http(
    State(prometheus): State<Prometheus>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or(UNMATCHED_ROUTE.to_owned(), |path| {
            route_label(path.as_str())
        });
    let response = next.run(request).await;
    prometheus.observe_http(
        &method,
        &route,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}
