//! Configuration: validated once, failing with the variable's name; secrets redacted.

use erp_sync::config::{Settings, redact_url};

fn vars(extra: &[(&str, &str)]) -> Vec<(String, String)> {
    extra
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn defaults_match_the_design() {
    let settings = Settings::from_vars(vars(&[])).unwrap();
    assert_eq!(settings.port, 3000);
    assert_eq!(settings.worker_concurrency, 5);
    assert_eq!(settings.order_sync_max_attempts, 5);
    assert_eq!(settings.order_sync_backoff.as_millis(), 60_000);
    assert_eq!(settings.redis_prefix, "erp-sync");
    assert!(!settings.swagger_enabled);
    assert!(settings.api_secret.is_none() && settings.agent_secret.is_none());
    assert_eq!(settings.agent_degraded_after.as_secs(), 60);
    assert_eq!(settings.agent_offline_after.as_secs(), 300);
    assert_eq!(settings.order_sync_max_retry_after.as_secs(), 3600);
    assert_eq!(settings.order_sync_vendor_share, 0.5);
    assert!(settings.trusted_proxies.is_empty(), "no proxy trusted");
}

#[test]
fn trusted_proxies_take_addresses_and_networks() {
    let settings = Settings::from_vars(vars(&[(
        "TRUSTED_PROXIES",
        " 10.0.0.0/8, 192.0.2.7 ,2001:db8::/32,",
    )]))
    .unwrap();
    let listed: Vec<String> = settings
        .trusted_proxies
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(listed, ["10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32"]);
}

#[test]
fn invalid_values_name_their_variable() {
    for (var, value) in [
        ("WORKER_CONCURRENCY", "99"),
        ("WORKER_CONCURRENCY", "0"),
        ("WORKER_CONCURRENCY", "five"),
        ("PORT", "70000"),
        ("API_SECRET", "too-short"),
        ("AGENT_SECRET", "short"),
        ("REDIS_URL", "http://127.0.0.1:6379"),
        ("DATABASE_URL", "not a url"),
        ("SWAGGER_ENABLED", "maybe"),
        ("CORS_ORIGINS", "https://ok.example.com,*"),
        ("REDIS_PREFIX", "has space"),
        ("APP_ENV", "staging"),
        ("SLACK_WEBHOOK_URL", "ftp://hooks.example.com"),
        ("ORDER_SYNC_MAX_RETRY_AFTER_SECS", "0"),
        ("ORDER_SYNC_MAX_RETRY_AFTER_SECS", "18446744073709551615"),
        ("ORDER_SYNC_VENDOR_SHARE", "0"),
        ("ORDER_SYNC_VENDOR_SHARE", "1.5"),
        ("ORDER_SYNC_VENDOR_SHARE", "NaN"),
        ("TRUSTED_PROXIES", "10.0.0.0/8,proxy.internal"),
        ("TRUSTED_PROXIES", "10.0.0.0/33"),
    ] {
        let error = Settings::from_vars(vars(&[(var, value)])).expect_err(var);
        assert_eq!(error.variable(), Some(var), "{var}={value}: {error}");
        assert!(error.to_string().starts_with(var), "{error}");
    }
}

#[test]
fn production_requires_both_secrets() {
    let api = "a".repeat(32);
    let agent = "b".repeat(16);
    let error = Settings::from_vars(vars(&[("APP_ENV", "production"), ("AGENT_SECRET", &agent)]))
        .unwrap_err();
    assert_eq!(error.variable(), Some("API_SECRET"));
    let error =
        Settings::from_vars(vars(&[("APP_ENV", "production"), ("API_SECRET", &api)])).unwrap_err();
    assert_eq!(error.variable(), Some("AGENT_SECRET"));
    let ok = Settings::from_vars(vars(&[
        ("APP_ENV", "production"),
        ("API_SECRET", &api),
        ("AGENT_SECRET", &agent),
    ]));
    assert!(ok.unwrap().is_production());
}

#[test]
fn secrets_never_show_in_debug_output() {
    let settings = Settings::from_vars(vars(&[
        ("API_SECRET", "api-secret-value-0123456789-abcdefgh"),
        ("AGENT_SECRET", "agent-secret-value-0123"),
        (
            "SLACK_WEBHOOK_URL",
            "https://hooks.example.com/services/T000/B000/XXXXSECRET",
        ),
        (
            "DATABASE_URL",
            "postgres://app:db-password-123@db.example.com/erp",
        ),
    ]))
    .unwrap();
    let printed = format!("{settings:?}");
    for secret in [
        "api-secret-value",
        "agent-secret-value",
        "XXXXSECRET",
        "db-password-123",
    ] {
        assert!(!printed.contains(secret), "{secret} leaked: {printed}");
    }
    assert!(printed.contains("[REDACTED]"));
}

#[test]
fn the_binary_refuses_to_start_with_an_invalid_value() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_erp-sync"))
        .env("WORKER_CONCURRENCY", "99")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("WORKER_CONCURRENCY"), "{stderr}");
}

#[test]
fn the_binary_refuses_production_without_secrets() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_erp-sync"))
        .env("APP_ENV", "production")
        .env_remove("API_SECRET")
        .env_remove("AGENT_SECRET")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("API_SECRET"));
}

#[test]
fn connection_urls_are_logged_without_any_secret() {
    for (raw, secrets) in [
        (
            "postgres://app:pg-pass-1@db.example.com:5432/erp?sslmode=require&password=pg-pass-2",
            &["pg-pass-1", "pg-pass-2"][..],
        ),
        (
            "postgresql://app@db/erp?sslpassword=fake-key-pass&options=-c%20x",
            &["fake-key-pass"][..],
        ),
        (
            "redis://:fake-redis-pass@cache:6379/0",
            &["fake-redis-pass"][..],
        ),
        (
            "rediss://user:fake-redis-pass@cache:6380/?token=tok-1&auth=tok-2",
            &["fake-redis-pass", "tok-1", "tok-2"][..],
        ),
    ] {
        let shown = redact_url(raw);
        for secret in secrets {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(shown.contains("***"), "{shown}");
    }
    assert_eq!(
        redact_url("postgres://app:fake-pw@db/erp?sslmode=require"),
        "postgres://app:***@db/erp?sslmode=require",
        "harmless parameters stay readable"
    );

    let settings = Settings::from_vars([
        (
            "DATABASE_URL",
            "postgres://app:fake-db-pass-1@db/erp?password=fake-db-pass-2",
        ),
        (
            "REDIS_URL",
            "redis://:fake-redis-pass-3@cache:6379/?password=fake-redis-pass-4",
        ),
    ])
    .unwrap();
    let printed = format!("{settings:?}");
    for secret in [
        "fake-db-pass-1",
        "fake-db-pass-2",
        "fake-redis-pass-3",
        "fake-redis-pass-4",
    ] {
        assert!(!printed.contains(secret), "{secret} in {printed}");
    }
}
