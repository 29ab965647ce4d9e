//! `erp-sync agent-check` against the mock ERP: a conforming agent passes, each kind of
//! non-conforming one fails the check that concerns it.

use std::process::Stdio;

use erp_sync::reconciliation::agent_check::{AgentCheckArgs, CheckResult, run};

use crate::mock_erp::{Behaviour, MockErp, OrderMode, erp_item};

const SECRET: &str = "whsec_dGVzdC1hZ2VudC1jaGVjay1zaWduaW5nLXNlY3JldCE=";

fn skus() -> Vec<String> {
    let mut skus: Vec<String> = (0..230).map(|i| format!("SKU-{i:04}")).collect();
    skus.extend(["é", "😀", "＀", "AB", "AB-1", "AB-10"].map(String::from));
    skus
}

async fn erp() -> MockErp {
    MockErp::start(skus().iter().map(|s| erp_item(s, 1))).await
}

fn args(url: &str, secret: Option<&str>) -> AgentCheckArgs {
    AgentCheckArgs {
        url: url.to_owned(),
        vendor: "vendor-check".into(),
        signing_secret: secret.map(str::to_owned),
        page_size: 50,
        timeout_ms: 5_000,
        orders: false,
        orders_only: false,
        callback_listen: "127.0.0.1:0".parse().unwrap(),
        callback_timeout_ms: 5_000,
    }
}

async fn check(url: &str, secret: Option<&str>) -> Vec<CheckResult> {
    run(&args(url, secret), |_| {}).await.unwrap()
}

fn failed(results: &[CheckResult]) -> Vec<&'static str> {
    results
        .iter()
        .filter(|r| !r.passed)
        .map(|r| r.name)
        .collect()
}

#[tokio::test]
async fn a_conforming_agent_passes_every_check() {
    let erp = erp().await;
    erp.verify_with(standardwebhooks::Webhook::new(SECRET).unwrap());
    let results = check(&erp.url, Some(SECRET)).await;
    assert_eq!(failed(&results), Vec::<&str>::new(), "{results:#?}");
    let names: Vec<&str> = results.iter().map(|r| r.name).collect();
    assert_eq!(
        names,
        [
            "checksum of the whole catalogue",
            "listing with /sync/items",
            "items in the ingest shape",
            "whole checksum equals the listing's",
            "split checksums and counts add up",
            "empty range",
            "skuFrom, skuAfter, skuTo and limit honoured",
            "bad signatures refused",
        ]
    );
    assert_eq!(
        erp.bad_signatures(),
        1,
        "only the deliberately forged request"
    );
    assert!(erp.items_calls() >= 5, "the listing is paged");
}

#[tokio::test]
async fn each_departure_from_the_contract_fails_its_check() {
    let erp = erp().await;
    for (behaviour, expected) in [
        (Behaviour::SkuAfterInclusive, "listing with /sync/items"),
        (
            Behaviour::WrongChecksumFormula,
            "whole checksum equals the listing's",
        ),
        (Behaviour::IgnoresSkuTo, "split checksums and counts add up"),
        (Behaviour::Utf16Order, "listing with /sync/items"),
    ] {
        erp.set_behaviour(behaviour.clone());
        let results = check(&erp.url, None).await;
        assert!(
            failed(&results).contains(&expected),
            "{behaviour:?}: {results:#?}"
        );
    }
    // Items that are not in the ingest shape.
    erp.set_behaviour(Behaviour::Correct);
    let mut bad = erp_item("SKU-0005", 2);
    bad["price"] = serde_json::json!("free");
    erp.put(bad);
    let results = check(&erp.url, None).await;
    assert_eq!(
        failed(&results),
        ["items in the ingest shape"],
        "{results:#?}"
    );
}

#[tokio::test]
async fn an_agent_that_ignores_signatures_fails_and_an_unreachable_one_fails_fast() {
    let erp = erp().await;
    let results = check(&erp.url, Some(SECRET)).await;
    assert_eq!(failed(&results), ["bad signatures refused"]);

    let results = check("http://127.0.0.1:9", None).await;
    assert_eq!(results.len(), 1);
    assert!(
        !results[0].passed && results[0].detail.contains("unreachable"),
        "{results:?}"
    );
    assert!(
        run(&args(&erp.url, Some("not-a-secret")), |_| {})
            .await
            .is_err()
    );
}

#[tokio::test]
async fn the_binary_prints_each_check_and_exits_by_the_outcome() {
    let erp = erp().await;
    let binary = || {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_erp-sync"));
        command
            .args([
                "agent-check",
                &erp.url,
                "--vendor",
                "vendor-check",
                "--page-size",
                "40",
            ])
            .env_remove("AGENT_CHECK_SIGNING_SECRET")
            .stdin(Stdio::null());
        command
    };
    let ok = binary().output().await.unwrap();
    let stdout = String::from_utf8_lossy(&ok.stdout);
    assert!(ok.status.success(), "{stdout}");
    eprintln!("{stdout}");
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("PASS")).count(),
        7,
        "{stdout}"
    );
    assert!(stdout.contains("all 7 checks passed"), "{stdout}");

    erp.set_behaviour(Behaviour::SkuAfterInclusive);
    let failing = binary().output().await.unwrap();
    let stdout = String::from_utf8_lossy(&failing.stdout);
    assert_eq!(failing.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("FAIL  listing with /sync/items"),
        "{stdout}"
    );
    eprintln!("{stdout}");

    let usage = binary()
        .env("AGENT_CHECK_SIGNING_SECRET", "nope")
        .output()
        .await
        .unwrap();
    assert_eq!(usage.status.code(), Some(2));
    assert!(!String::from_utf8_lossy(&usage.stderr).contains("nope"));
}

const ORDER_CHECKS: [&str; 7] = [
    "signed create-order accepted",
    "callback posted back for a 202",
    "tampered body refused with 401",
    "wrong secret refused with 401",
    "stale timestamp refused with 401",
    "same idempotency key twice: one order, same answer",
    "concurrent duplicates: one order",
];

async fn check_orders(erp: &MockErp) -> Vec<CheckResult> {
    let mut args = args(&erp.url, Some(SECRET));
    args.orders_only = true;
    run(&args, |_| {}).await.unwrap()
}

#[tokio::test]
async fn a_conforming_agent_passes_the_order_checks_answering_200_or_202() {
    let erp = erp().await;
    erp.verify_with(standardwebhooks::Webhook::new(SECRET).unwrap());
    for (mode, created) in [(OrderMode::Answer200, 2), (OrderMode::Answer202, 4)] {
        erp.set_order_mode(mode);
        let results = check_orders(&erp).await;
        assert_eq!(
            failed(&results),
            Vec::<&str>::new(),
            "{mode:?}: {results:#?}"
        );
        let names: Vec<&str> = results.iter().map(|r| r.name).collect();
        assert_eq!(names, ORDER_CHECKS, "{mode:?}");
        // One ERP order for the first key and one for the concurrent key; nothing for the
        // refused deliveries.
        assert_eq!(erp.orders_created(), created, "{mode:?}");
    }
    assert!(
        check_orders(&erp).await[1]
            .detail
            .contains("completed with erpReference"),
        "the 202 mode's callback was observed"
    );
    // --orders adds the order checks to the read checks.
    erp.set_order_mode(OrderMode::Answer200);
    let mut all = args(&erp.url, Some(SECRET));
    all.orders = true;
    let results = run(&all, |_| {}).await.unwrap();
    assert_eq!(failed(&results), Vec::<&str>::new(), "{results:#?}");
    assert_eq!(results.len(), 8 + ORDER_CHECKS.len());
}

#[tokio::test]
async fn an_agent_that_ignores_signatures_fails_the_refusal_checks() {
    let erp = erp().await;
    erp.verify_with(standardwebhooks::Webhook::new(SECRET).unwrap());
    erp.set_order_mode(OrderMode::IgnoresSignatures);
    let results = check_orders(&erp).await;
    assert_eq!(failed(&results), ORDER_CHECKS[2..5], "{results:#?}");
    assert!(results[3].detail.contains("signatures are not verified"));

    erp.set_order_mode(OrderMode::Refuses403);
    let results = check_orders(&erp).await;
    assert_eq!(failed(&results), ORDER_CHECKS[2..5], "{results:#?}");
    assert!(results[2].detail.contains("not 401"), "{results:#?}");
}

#[tokio::test]
async fn an_agent_that_creates_an_order_per_delivery_fails_the_idempotency_checks() {
    let erp = erp().await;
    erp.verify_with(standardwebhooks::Webhook::new(SECRET).unwrap());
    erp.set_order_mode(OrderMode::CreatesTwice);
    let results = check_orders(&erp).await;
    assert_eq!(failed(&results), ORDER_CHECKS[5..], "{results:#?}");
    assert!(results[5].detail.contains("created twice"), "{results:#?}");
}

#[tokio::test]
async fn the_order_checks_need_the_signing_secret_and_fail_without_an_agent() {
    let mut no_secret = args("http://127.0.0.1:9", None);
    no_secret.orders = true;
    assert!(run(&no_secret, |_| {}).await.is_err());

    let mut unreachable = args("http://127.0.0.1:9", Some(SECRET));
    unreachable.orders_only = true;
    let results = run(&unreachable, |_| {}).await.unwrap();
    assert_eq!(failed(&results), ORDER_CHECKS, "{results:#?}");
}

#[tokio::test]
async fn the_binary_runs_the_order_checks_and_exits_1_on_a_duplicate_order() {
    let erp = erp().await;
    erp.verify_with(standardwebhooks::Webhook::new(SECRET).unwrap());
    erp.set_order_mode(OrderMode::Answer202);
    let binary = || {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_erp-sync"));
        command
            .args([
                "agent-check",
                &erp.url,
                "--vendor",
                "vendor-check",
                "--orders-only",
            ])
            .env("AGENT_CHECK_SIGNING_SECRET", SECRET)
            .stdin(Stdio::null());
        command
    };
    let ok = binary().output().await.unwrap();
    let stdout = String::from_utf8_lossy(&ok.stdout);
    assert!(ok.status.success(), "{stdout}");
    assert!(stdout.contains("all 7 checks passed"), "{stdout}");
    assert!(
        stdout.contains("PASS  callback posted back for a 202: completed"),
        "{stdout}"
    );
    assert!(!stdout.contains(SECRET));

    erp.set_order_mode(OrderMode::CreatesTwice);
    let failing = binary().output().await.unwrap();
    let stdout = String::from_utf8_lossy(&failing.stdout);
    assert_eq!(failing.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("FAIL  concurrent duplicates: one order"),
        "{stdout}"
    );
    assert!(stdout.contains("2 of 7 checks failed"), "{stdout}");
}
