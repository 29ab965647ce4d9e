//! Settings, read once at start-up from defaults, then `.env` (loaded by `main`), then the
//! process environment. Every value is validated here so the rest of the code never re-checks;
//! an invalid value stops the process with a message naming the variable.

use std::{collections::HashMap, fmt, time::Duration};

use axum::http::HeaderValue;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::ops::scheduler::{JobName, JobSchedule, Schedule};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{var}: {message}")]
    Invalid { var: String, message: String },
    #[error("configuration could not be read: {0}")]
    Unreadable(#[from] config::ConfigError),
}

impl ConfigError {
    fn invalid(var: &str, message: impl Into<String>) -> Self {
        Self::Invalid {
            var: var.to_owned(),
            message: message.into(),
        }
    }

    /// The environment variable at fault, when there is one.
    pub fn variable(&self) -> Option<&str> {
        match self {
            Self::Invalid { var, .. } => Some(var),
            Self::Unreadable(_) => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppEnv {
    Development,
    Production,
}

/// Validated settings. Secrets are `SecretString`, so `Debug` prints `[REDACTED]`.
#[derive(Clone)]
pub struct Settings {
    pub app_env: AppEnv,
    pub host: String,
    pub port: u16,
    pub database_url: SecretString,
    pub redis_url: SecretString,
    pub redis_prefix: String,
    pub api_secret: Option<SecretString>,
    pub agent_secret: Option<SecretString>,
    pub slack_webhook_url: Option<SecretString>,
    pub worker_concurrency: usize,
    pub order_sync_max_attempts: u32,
    pub order_sync_backoff: Duration,
    pub order_sync_callback_timeout: Duration,
    pub order_sync_sweep_interval: Duration,
    pub order_sync_enabled: bool,
    pub swagger_enabled: bool,
    pub cors_origins: Vec<HeaderValue>,
    /// Reverse proxies whose `X-Forwarded-For` is believed (`TRUSTED_PROXIES`); empty: the
    /// TCP peer is the client.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    pub agent_degraded_after: Duration,
    pub agent_offline_after: Duration,
    pub register_rate_limit_per_min: u32,
    pub ingest_rate_limit_per_min: u32,
    pub ingest_batch_rate_limit_per_min: u32,
    pub breaker_failure_rate: f64,
    pub breaker_min_calls: u32,
    pub breaker_open_for: Duration,
    pub agent_timeout: Duration,
    pub db_max_connections: u32,
    pub metrics_enabled: bool,
    pub scheduler_enabled: bool,
    pub alert_cooldown: Duration,
    /// Every scheduled job with its schedule (`None`: switched off with `off`).
    pub schedules: Vec<JobSchedule>,
    pub reconciliation_concurrency: usize,
    pub reconciliation_page_size: usize,
    pub reconciliation_run_timeout: Duration,
    /// May an `agentUrl` resolve to loopback or private addresses (link-local never may).
    pub agent_url_allow_private: bool,
    /// A former `AGENT_SECRET`, still accepted to unseal agents' signing secrets while they are
    /// re-sealed under the current one (master-secret rotation).
    pub agent_secret_previous: Option<SecretString>,
    /// Agent authentications the token cache cannot answer (in practice, failures) allowed per
    /// client address and per vendor, a minute.
    pub auth_failures_per_min: u32,
    /// bcrypt verifications running at once, and requests allowed to wait for one.
    pub auth_bcrypt_concurrency: usize,
    pub auth_bcrypt_queue: usize,
    /// Bytes of an agent request read before its token is verified, per request; and, for
    /// bodies whose `vendorId` lies beyond that window, the most such unauthenticated bytes
    /// held at once by the whole process.
    pub agent_preauth_max_bytes: usize,
    pub agent_preauth_budget_bytes: usize,
    pub http_header_read_timeout: Duration,
    pub http_idle_timeout: Duration,
    pub http_max_connections: usize,
    /// The longest `Retry-After` an agent can impose on an order.
    pub order_sync_max_retry_after: Duration,
    /// At most this share of the order-sync workers serves one vendor while others wait.
    pub order_sync_vendor_share: f64,
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Connection URLs may embed passwords: print them with the password masked.
        f.debug_struct("Settings")
            .field("app_env", &self.app_env)
            .field("host", &self.host)
            .field("port", &self.port)
            .field(
                "database_url",
                &redact_url(self.database_url.expose_secret()),
            )
            .field("redis_url", &redact_url(self.redis_url.expose_secret()))
            .field("redis_prefix", &self.redis_prefix)
            .field(
                "api_secret",
                &self.api_secret.as_ref().map(|_| "[REDACTED]"),
            )
            .field(
                "agent_secret",
                &self.agent_secret.as_ref().map(|_| "[REDACTED]"),
            )
            .field(
                "slack_webhook_url",
                &self.slack_webhook_url.as_ref().map(|_| "[REDACTED]"),
            )
            .field("worker_concurrency", &self.worker_concurrency)
            .field("order_sync_max_attempts", &self.order_sync_max_attempts)
            .field("order_sync_backoff", &self.order_sync_backoff)
            .field(
                "order_sync_callback_timeout",
                &self.order_sync_callback_timeout,
            )
            .field("swagger_enabled", &self.swagger_enabled)
            .field("cors_origins", &self.cors_origins)
            .field("trusted_proxies", &self.trusted_proxies)
            .field("metrics_enabled", &self.metrics_enabled)
            .field("scheduler_enabled", &self.scheduler_enabled)
            .field("alert_cooldown", &self.alert_cooldown)
            .field("schedules", &self.schedules)
            .field("agent_url_allow_private", &self.agent_url_allow_private)
            .field(
                "agent_secret_previous",
                &self.agent_secret_previous.as_ref().map(|_| "[REDACTED]"),
            )
            .finish_non_exhaustive()
    }
}

/// A connection URL fit for logs: the password of the userinfo and the value of every query
/// parameter that may carry a secret (`password`, `sslpassword`, `token`, …) become `***`.
/// `postgres://app:<password>@db/erp?sslmode=require&password=<password>` →
/// `postgres://app:***@db/erp?sslmode=require&password=***`.
pub fn redact_url(raw: &str) -> String {
    let Ok(mut url) = url::Url::parse(raw) else {
        return "[unparsable url]".to_owned();
    };
    if url.password().is_some() {
        let _ = url.set_password(Some("***"));
    }
    if url.query().is_some() {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(key, value)| {
                let value = if is_secret_parameter(&key) {
                    "***".to_owned()
                } else {
                    value.into_owned()
                };
                (key.into_owned(), value)
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
    }
    url.to_string()
}

/// Query parameters of Postgres and Redis URLs that carry (or may carry) a secret. Matched by
/// substring so spellings like `sslpassword`, `auth_token` or `api-key` are caught too; a
/// harmless parameter masked by mistake costs nothing.
fn is_secret_parameter(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    [
        "pass",
        "pwd",
        "secret",
        "token",
        "key",
        "auth",
        "credential",
    ]
    .iter()
    .any(|word| key.contains(word))
}

/// What the environment provides, before validation. All optional: defaults are applied
/// by the `config` builder, absent secrets stay `None`.
#[derive(Deserialize)]
struct Raw {
    app_env: String,
    host: String,
    port: String,
    database_url: String,
    redis_url: String,
    redis_prefix: String,
    api_secret: Option<String>,
    agent_secret: Option<String>,
    slack_webhook_url: Option<String>,
    worker_concurrency: String,
    order_sync_max_attempts: String,
    order_sync_backoff_ms: String,
    order_sync_callback_timeout_ms: String,
    order_sync_sweep_interval_ms: String,
    order_sync_enabled: String,
    swagger_enabled: String,
    cors_origins: String,
    trusted_proxies: String,
    agent_degraded_after_secs: String,
    agent_offline_after_secs: String,
    register_rate_limit_per_min: String,
    ingest_rate_limit_per_min: String,
    ingest_batch_rate_limit_per_min: String,
    breaker_failure_rate: String,
    breaker_min_calls: String,
    breaker_open_ms: String,
    agent_timeout_ms: String,
    db_max_connections: String,
    metrics_enabled: String,
    scheduler_enabled: String,
    alert_cooldown_secs: String,
    schedule_detect_drift: Option<String>,
    schedule_check_agent_health: Option<String>,
    schedule_check_dlq: Option<String>,
    schedule_cleanup_expired_jobs: Option<String>,
    schedule_archive_reconciliation_events: Option<String>,
    schedule_cleanup_resolved_dlq: Option<String>,
    reconciliation_concurrency: String,
    reconciliation_page_size: String,
    reconciliation_run_timeout_ms: String,
    agent_url_allow_private: Option<String>,
    agent_secret_previous: Option<String>,
    auth_failures_per_min: String,
    auth_bcrypt_concurrency: String,
    auth_bcrypt_queue: String,
    agent_preauth_max_bytes: String,
    agent_preauth_budget_bytes: String,
    http_header_read_timeout_ms: String,
    http_idle_timeout_ms: String,
    http_max_connections: String,
    order_sync_max_retry_after_secs: String,
    order_sync_vendor_share: String,
}

impl Raw {
    /// `SCHEDULE_<JOB>` as set, if set.
    fn schedule(&self, job: JobName) -> Option<String> {
        match job {
            JobName::DetectDrift => &self.schedule_detect_drift,
            JobName::CheckAgentHealth => &self.schedule_check_agent_health,
            JobName::CheckDlq => &self.schedule_check_dlq,
            JobName::CleanupExpiredJobs => &self.schedule_cleanup_expired_jobs,
            JobName::ArchiveReconciliationEvents => &self.schedule_archive_reconciliation_events,
            JobName::CleanupResolvedDlq => &self.schedule_cleanup_resolved_dlq,
        }
        .clone()
    }
}

/// `TRUSTED_PROXIES`: a comma list of addresses (`10.0.0.7`) and networks (`10.0.0.0/8`).
fn parse_trusted_proxies(raw: &str) -> Result<Vec<ipnet::IpNet>, ConfigError> {
    raw.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|entry| {
            entry
                .parse::<ipnet::IpNet>()
                .or_else(|_| entry.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map(|net| net.trunc())
                .map_err(|_| {
                    ConfigError::invalid(
                        "TRUSTED_PROXIES",
                        format!("{entry:?} is not an IP address or CIDR network like 10.0.0.0/8"),
                    )
                })
        })
        .collect()
}

pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/erp_sync";

const DEFAULTS: &[(&str, &str)] = &[
    ("app_env", "development"),
    ("host", "0.0.0.0"),
    ("port", "3000"),
    ("database_url", DEFAULT_DATABASE_URL),
    ("redis_url", "redis://127.0.0.1:6379"),
    ("redis_prefix", "erp-sync"),
    ("worker_concurrency", "5"),
    ("order_sync_max_attempts", "5"),
    ("order_sync_backoff_ms", "60000"),
    ("order_sync_callback_timeout_ms", "600000"),
    ("order_sync_sweep_interval_ms", "30000"),
    ("order_sync_enabled", "true"),
    ("swagger_enabled", "false"),
    ("cors_origins", ""),
    ("trusted_proxies", ""),
    ("agent_degraded_after_secs", "60"),
    ("agent_offline_after_secs", "300"),
    ("register_rate_limit_per_min", "10"),
    ("ingest_rate_limit_per_min", "30"),
    ("ingest_batch_rate_limit_per_min", "5"),
    ("breaker_failure_rate", "0.5"),
    ("breaker_min_calls", "5"),
    ("breaker_open_ms", "60000"),
    ("agent_timeout_ms", "30000"),
    ("db_max_connections", "20"),
    ("metrics_enabled", "true"),
    ("scheduler_enabled", "true"),
    ("alert_cooldown_secs", "900"),
    ("reconciliation_concurrency", "4"),
    ("reconciliation_page_size", "500"),
    ("reconciliation_run_timeout_ms", "1800000"),
    ("auth_failures_per_min", "20"),
    ("auth_bcrypt_concurrency", "2"),
    ("auth_bcrypt_queue", "32"),
    ("agent_preauth_max_bytes", "262144"),
    ("agent_preauth_budget_bytes", "67108864"),
    ("http_header_read_timeout_ms", "10000"),
    ("http_idle_timeout_ms", "60000"),
    ("http_max_connections", "1024"),
    ("order_sync_max_retry_after_secs", "3600"),
    ("order_sync_vendor_share", "0.5"),
];

impl Settings {
    /// Reads the process environment (after `main` has loaded `.env`).
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_source(None)
    }

    /// Reads the given variables instead of the process environment (tests, tools).
    pub fn from_vars<K: Into<String>, V: Into<String>>(
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Self, ConfigError> {
        let map = vars
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        Self::from_source(Some(map))
    }

    fn from_source(vars: Option<HashMap<String, String>>) -> Result<Self, ConfigError> {
        let mut builder = config::Config::builder();
        for (key, value) in DEFAULTS {
            builder = builder.set_default(*key, *value)?;
        }
        let env = config::Environment::default()
            .try_parsing(false)
            .source(vars);
        let raw: Raw = builder.add_source(env).build()?.try_deserialize()?;
        Self::validate(raw)
    }

    fn validate(raw: Raw) -> Result<Self, ConfigError> {
        let app_env = match raw.app_env.trim().to_ascii_lowercase().as_str() {
            "development" | "dev" | "test" => AppEnv::Development,
            "production" | "prod" => AppEnv::Production,
            other => {
                return Err(ConfigError::invalid(
                    "APP_ENV",
                    format!("must be development or production (got {other:?})"),
                ));
            }
        };
        let schedules = JobName::ALL
            .iter()
            .map(|&job| {
                let value =
                    non_empty(raw.schedule(job)).unwrap_or_else(|| job.default_schedule().into());
                Schedule::from_setting(&value)
                    .map(|cron| JobSchedule { job, cron })
                    .map_err(|message| ConfigError::invalid(&job.env_var(), message))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let api_secret = secret(raw.api_secret, "API_SECRET", 32)?;
        let agent_secret = secret(raw.agent_secret, "AGENT_SECRET", 16)?;
        let agent_secret_previous = secret(raw.agent_secret_previous, "AGENT_SECRET_PREVIOUS", 16)?;
        if app_env == AppEnv::Production {
            if api_secret.is_none() {
                return Err(ConfigError::invalid(
                    "API_SECRET",
                    "is required when APP_ENV=production",
                ));
            }
            if agent_secret.is_none() {
                return Err(ConfigError::invalid(
                    "AGENT_SECRET",
                    "is required when APP_ENV=production",
                ));
            }
        }
        let database_url = url_var(
            "DATABASE_URL",
            &raw.database_url,
            &["postgres", "postgresql"],
        )?;
        let redis_url = url_var(
            "REDIS_URL",
            &raw.redis_url,
            &["redis", "rediss", "redis+unix"],
        )?;
        let slack_webhook_url = match non_empty(raw.slack_webhook_url) {
            Some(url) => Some(url_var("SLACK_WEBHOOK_URL", &url, &["http", "https"])?),
            None => None,
        };
        let redis_prefix = raw.redis_prefix.trim().to_owned();
        let prefix_ok = !redis_prefix.is_empty()
            && redis_prefix.len() <= 64
            && redis_prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c));
        if !prefix_ok {
            return Err(ConfigError::invalid(
                "REDIS_PREFIX",
                "must be 1-64 characters of letters, digits, '-', '_', '.' or ':'",
            ));
        }
        let cors_origins = raw
            .cors_origins
            .split(',')
            .map(str::trim)
            .filter(|o| !o.is_empty())
            .map(|origin| {
                let parsed = url::Url::parse(origin).ok().filter(|u| {
                    matches!(u.scheme(), "http" | "https") && u.host().is_some() && u.path() == "/"
                });
                parsed
                    .and_then(|_| HeaderValue::from_str(origin.trim_end_matches('/')).ok())
                    .ok_or_else(|| {
                        ConfigError::invalid(
                            "CORS_ORIGINS",
                            format!("{origin:?} is not an origin like https://app.example.com"),
                        )
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let trusted_proxies = parse_trusted_proxies(&raw.trusted_proxies)?;
        let degraded = int::<u64>(
            "AGENT_DEGRADED_AFTER_SECS",
            &raw.agent_degraded_after_secs,
            1,
            86_400,
        )?;
        let offline = int::<u64>(
            "AGENT_OFFLINE_AFTER_SECS",
            &raw.agent_offline_after_secs,
            1,
            86_400,
        )?;
        if offline <= degraded {
            return Err(ConfigError::invalid(
                "AGENT_OFFLINE_AFTER_SECS",
                "must be greater than AGENT_DEGRADED_AFTER_SECS",
            ));
        }
        let failure_rate: f64 = raw
            .breaker_failure_rate
            .trim()
            .parse()
            .ok()
            .filter(|r| (0.0..=1.0).contains(r) && *r > 0.0)
            .ok_or_else(|| {
                ConfigError::invalid("BREAKER_FAILURE_RATE", "must be a number in (0, 1]")
            })?;

        Ok(Self {
            app_env,
            host: raw.host.trim().to_owned(),
            port: int("PORT", &raw.port, 0, u16::MAX)?,
            database_url,
            redis_url,
            redis_prefix,
            api_secret,
            agent_secret,
            slack_webhook_url,
            worker_concurrency: int("WORKER_CONCURRENCY", &raw.worker_concurrency, 1, 20)?,
            order_sync_max_attempts: int(
                "ORDER_SYNC_MAX_ATTEMPTS",
                &raw.order_sync_max_attempts,
                1,
                25,
            )?,
            order_sync_backoff: millis(
                "ORDER_SYNC_BACKOFF_MS",
                &raw.order_sync_backoff_ms,
                1,
                86_400_000,
            )?,
            order_sync_callback_timeout: millis(
                "ORDER_SYNC_CALLBACK_TIMEOUT_MS",
                &raw.order_sync_callback_timeout_ms,
                10,
                7 * 86_400_000,
            )?,
            order_sync_sweep_interval: millis(
                "ORDER_SYNC_SWEEP_INTERVAL_MS",
                &raw.order_sync_sweep_interval_ms,
                10,
                3_600_000,
            )?,
            order_sync_enabled: boolean("ORDER_SYNC_ENABLED", &raw.order_sync_enabled)?,
            swagger_enabled: boolean("SWAGGER_ENABLED", &raw.swagger_enabled)?,
            cors_origins,
            trusted_proxies,
            agent_degraded_after: Duration::from_secs(degraded),
            agent_offline_after: Duration::from_secs(offline),
            register_rate_limit_per_min: int(
                "REGISTER_RATE_LIMIT_PER_MIN",
                &raw.register_rate_limit_per_min,
                1,
                1_000_000,
            )?,
            ingest_rate_limit_per_min: int(
                "INGEST_RATE_LIMIT_PER_MIN",
                &raw.ingest_rate_limit_per_min,
                1,
                1_000_000,
            )?,
            ingest_batch_rate_limit_per_min: int(
                "INGEST_BATCH_RATE_LIMIT_PER_MIN",
                &raw.ingest_batch_rate_limit_per_min,
                1,
                1_000_000,
            )?,
            breaker_failure_rate: failure_rate,
            breaker_min_calls: int("BREAKER_MIN_CALLS", &raw.breaker_min_calls, 1, 10_000)?,
            breaker_open_for: millis("BREAKER_OPEN_MS", &raw.breaker_open_ms, 1, 86_400_000)?,
            agent_timeout: millis("AGENT_TIMEOUT_MS", &raw.agent_timeout_ms, 10, 600_000)?,
            db_max_connections: int("DB_MAX_CONNECTIONS", &raw.db_max_connections, 2, 1_000)?,
            metrics_enabled: boolean("METRICS_ENABLED", &raw.metrics_enabled)?,
            scheduler_enabled: boolean("SCHEDULER_ENABLED", &raw.scheduler_enabled)?,
            alert_cooldown: Duration::from_secs(int(
                "ALERT_COOLDOWN_SECS",
                &raw.alert_cooldown_secs,
                1,
                7 * 86_400,
            )?),
            schedules,
            reconciliation_concurrency: int(
                "RECONCILIATION_CONCURRENCY",
                &raw.reconciliation_concurrency,
                1,
                32,
            )?,
            reconciliation_page_size: int(
                "RECONCILIATION_PAGE_SIZE",
                &raw.reconciliation_page_size,
                1,
                1_000,
            )?,
            reconciliation_run_timeout: millis(
                "RECONCILIATION_RUN_TIMEOUT_MS",
                &raw.reconciliation_run_timeout_ms,
                100,
                86_400_000,
            )?,
            agent_url_allow_private: match non_empty(raw.agent_url_allow_private) {
                Some(value) => boolean("AGENT_URL_ALLOW_PRIVATE", &value)?,
                None => app_env == AppEnv::Development,
            },
            agent_secret_previous,
            auth_failures_per_min: int(
                "AUTH_FAILURES_PER_MIN",
                &raw.auth_failures_per_min,
                1,
                1_000_000,
            )?,
            auth_bcrypt_concurrency: int(
                "AUTH_BCRYPT_CONCURRENCY",
                &raw.auth_bcrypt_concurrency,
                1,
                64,
            )?,
            auth_bcrypt_queue: int("AUTH_BCRYPT_QUEUE", &raw.auth_bcrypt_queue, 0, 10_000)?,
            agent_preauth_max_bytes: int(
                "AGENT_PREAUTH_MAX_BYTES",
                &raw.agent_preauth_max_bytes,
                1_024,
                32 * 1024 * 1024,
            )?,
            agent_preauth_budget_bytes: int(
                "AGENT_PREAUTH_BUDGET_BYTES",
                &raw.agent_preauth_budget_bytes,
                0,
                1024 * 1024 * 1024,
            )?,
            http_header_read_timeout: millis(
                "HTTP_HEADER_READ_TIMEOUT_MS",
                &raw.http_header_read_timeout_ms,
                100,
                600_000,
            )?,
            http_idle_timeout: millis(
                "HTTP_IDLE_TIMEOUT_MS",
                &raw.http_idle_timeout_ms,
                100,
                3_600_000,
            )?,
            http_max_connections: int(
                "HTTP_MAX_CONNECTIONS",
                &raw.http_max_connections,
                1,
                100_000,
            )?,
            order_sync_max_retry_after: Duration::from_secs(int(
                "ORDER_SYNC_MAX_RETRY_AFTER_SECS",
                &raw.order_sync_max_retry_after_secs,
                1,
                7 * 86_400,
            )?),
            order_sync_vendor_share: fraction(
                "ORDER_SYNC_VENDOR_SHARE",
                &raw.order_sync_vendor_share,
            )?,
        })
    }

    pub fn is_production(&self) -> bool {
        self.app_env == AppEnv::Production
    }

    /// Every Redis key and queue name this instance uses starts with this.
    pub fn redis_key(&self, suffix: &str) -> String {
        format!("{}:{}", self.redis_prefix, suffix)
    }
}

fn non_empty(value: Option<String>) -> Option<String> {
    value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

fn secret(
    value: Option<String>,
    var: &str,
    min_len: usize,
) -> Result<Option<SecretString>, ConfigError> {
    match non_empty(value) {
        None => Ok(None),
        Some(v) if v.chars().count() < min_len => Err(ConfigError::invalid(
            var,
            format!("must be at least {min_len} characters long"),
        )),
        Some(v) => Ok(Some(SecretString::from(v))),
    }
}

fn url_var(var: &str, value: &str, schemes: &[&str]) -> Result<SecretString, ConfigError> {
    let value = value.trim();
    match url::Url::parse(value) {
        Ok(url) if schemes.contains(&url.scheme()) => Ok(SecretString::from(value.to_owned())),
        Ok(url) => Err(ConfigError::invalid(
            var,
            format!(
                "scheme {:?} is not one of {}",
                url.scheme(),
                schemes.join(", ")
            ),
        )),
        Err(e) => Err(ConfigError::invalid(
            var,
            format!("is not a valid URL ({e})"),
        )),
    }
}

fn int<T>(var: &str, value: &str, min: T, max: T) -> Result<T, ConfigError>
where
    T: std::str::FromStr + PartialOrd + fmt::Display + Copy,
{
    match value.trim().parse::<T>() {
        Ok(n) if n >= min && n <= max => Ok(n),
        _ => Err(ConfigError::invalid(
            var,
            format!("must be an integer between {min} and {max} (got {value:?})"),
        )),
    }
}

fn millis(var: &str, value: &str, min: u64, max: u64) -> Result<Duration, ConfigError> {
    int(var, value, min, max).map(Duration::from_millis)
}

/// A number in (0, 1].
fn fraction(var: &str, value: &str) -> Result<f64, ConfigError> {
    value
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|r| *r > 0.0 && *r <= 1.0)
        .ok_or_else(|| {
            ConfigError::invalid(var, format!("must be a number in (0, 1] (got {value:?})"))
        })
}

fn boolean(var: &str, value: &str) -> Result<bool, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" | "" => Ok(false),
        _ => Err(ConfigError::invalid(
            var,
            format!("must be true or false (got {value:?})"),
        )),
    }
}
