//! Reconciliation against a mock ERP agent: drift found by checksums and bisection, repaired
//! through the ingest path, with a hostile or failing agent too.

use erp_sync::reconciliation::{
    catalogue_queries,
    model::{RunOutcome, RunSummary},
    range::{Lower, SkuRange},
};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sqlx::PgPool;

use crate::{
    helpers::{AGENT_SECRET, TestApp, spawn_app_with},
    mock_erp::{MockErp, checksum_of, content_hash, erp_item},
};

pub const VENDOR: &str = "vendor-recon";

pub struct Fixture {
    pub app: TestApp,
    pub erp: MockErp,
}

/// An app, a mock ERP holding `erp_items` (verifying erp-sync's signatures), Postgres holding
/// `pg_items` (written through ingest), mappings for KG and T1, and an online agent.
pub async fn fixture(
    db: PgPool,
    erp_items: Vec<Value>,
    pg_items: Vec<Value>,
    settings: &[(&str, &str)],
) -> Fixture {
    let settings: Vec<(String, String)> = settings
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let app = spawn_app_with(db.clone(), |vars| {
        vars.push(("AGENT_TIMEOUT_MS".into(), "3000".into()));
        vars.extend(settings);
    })
    .await;
    for (mapping_type, erp_code, resto_code) in [("unit", "KG", "kg"), ("vat", "T1", "20")] {
        sqlx::query(
            "INSERT INTO erp_code_mappings (vendor_id, mapping_type, erp_code, resto_code, resto_label)
             VALUES ($1, $2, $3, $4, $4)",
        )
        .bind(VENDOR)
        .bind(mapping_type)
        .bind(erp_code)
        .bind(resto_code)
        .execute(&db)
        .await
        .unwrap();
    }
    let erp = MockErp::start(erp_items).await;
    erp.verify_with(
        standardwebhooks::Webhook::from_bytes(AGENT_SECRET.as_bytes().to_vec()).unwrap(),
    );
    register_online(&db, VENDOR, &erp.url).await;
    ingest(&app, &pg_items).await;
    Fixture { app, erp }
}

pub async fn register_online(db: &PgPool, vendor: &str, agent_url: &str) {
    sqlx::query(
        "INSERT INTO agent_registry (vendor_id, agent_url, erp_type, auth_token_hash, status, last_heartbeat)
         VALUES ($1, $2, 'ebp', 'not-a-hash', 'online', now())",
    )
    .bind(vendor)
    .bind(agent_url)
    .execute(db)
    .await
    .unwrap();
}

pub async fn ingest(app: &TestApp, items: &[Value]) {
    let raws: Vec<Box<serde_json::value::RawValue>> = items
        .iter()
        .map(|i| serde_json::value::to_raw_value(i).unwrap())
        .collect();
    let refs: Vec<&serde_json::value::RawValue> = raws.iter().map(|r| &**r).collect();
    let report = app.state.ingest.ingest_items(VENDOR, &refs).await.unwrap();
    assert_eq!(report.failed, 0, "{:?}", report.results);
}

pub fn catalogue(skus: impl IntoIterator<Item = String>, version: u32) -> Vec<Value> {
    skus.into_iter()
        .map(|sku| erp_item(&sku, version))
        .collect()
}

pub fn numbered(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("SKU-{i:05}")).collect()
}

impl Fixture {
    pub async fn detect_drift(&self) -> RunSummary {
        self.app
            .state
            .reconciliation
            .detect_drift(VENDOR)
            .await
            .unwrap()
    }

    /// The vendor's checksum computed here, in Rust, from the stored rows: sorted by bytes.
    pub async fn pg_checksum(&self) -> (usize, String) {
        let mut rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT sku, content_hash FROM items WHERE vendor_id = $1 AND erp_absent_since IS NULL",
        )
        .bind(VENDOR)
        .fetch_all(&self.app.db)
        .await
        .unwrap();
        rows.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        (
            rows.len(),
            checksum_of(rows.iter().map(|(s, h)| (s.as_str(), h.as_str()))),
        )
    }

    pub async fn assert_in_step(&self) {
        assert_eq!(
            self.pg_checksum().await,
            (self.erp.items().len(), self.erp.checksum())
        );
    }

    pub async fn active(&self, sku: &str) -> Option<bool> {
        sqlx::query_scalar("SELECT is_active FROM items WHERE vendor_id = $1 AND sku = $2")
            .bind(VENDOR)
            .bind(sku)
            .fetch_optional(&self.app.db)
            .await
            .unwrap()
    }

    pub async fn events(&self) -> Vec<Value> {
        let page: Value = self
            .app
            .admin_get(&format!(
                "/api/admin/reconciliation/events?vendorId={VENDOR}&limit=100"
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        page["data"].as_array().unwrap().clone()
    }
}

/// ⌈log2(n/10)⌉: the depth of a bisection down to ranges of ten.
fn depth(n: usize) -> u64 {
    (n as f64 / 10.0).log2().ceil().max(1.0) as u64
}

#[sqlx::test]
async fn no_drift_costs_one_checksum_call_and_records_full_checksum(db: PgPool) {
    let items = catalogue(numbered(300), 1);
    let fx = fixture(db, items.clone(), items, &[]).await;
    let summary = fx.detect_drift().await;
    assert_eq!(summary.outcome, RunOutcome::InSync);
    assert_eq!(
        (summary.erp_count, summary.pg_count, summary.agent_calls),
        (Some(300), 300, 1)
    );
    assert_eq!((fx.erp.checksum_calls(), fx.erp.items_calls()), (1, 0));
    let events = fx.events().await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["eventType"], "full_checksum");
    let s = &events[0]["summary"];
    assert_eq!(s["runId"], json!(summary.run_id));
    for (field, value) in [
        ("erpCount", 300),
        ("pgCount", 300),
        ("agentCalls", 1),
        ("repaired", 0),
        ("deactivated", 0),
        ("unresolved", 0),
    ] {
        assert_eq!(s[field], value, "{field}");
    }
    assert_eq!(fx.erp.bad_signatures(), 0);
    assert!(!crate::helpers::captured_logs().contains(AGENT_SECRET));
    assert_eq!(
        fx.erp.correlation_ids(),
        [format!("reconciliation-{}", summary.run_id)]
    );
}

#[sqlx::test]
async fn a_changed_a_missing_and_an_extra_item_are_repaired_and_the_next_run_is_in_sync(
    db: PgPool,
) {
    let skus = numbered(400);
    let erp = catalogue(skus.clone(), 1);
    let mut pg = erp.clone();
    pg.retain(|i| i["sku"] != "SKU-00100"); // missing in Postgres
    pg.push(erp_item("SKU-00250-EXTRA", 1)); // extra in Postgres
    let fx = fixture(db, erp, pg, &[]).await;
    fx.erp.put(erp_item("SKU-00300", 2)); // changed in the ERP

    let summary = fx.detect_drift().await;
    assert_eq!(summary.outcome, RunOutcome::Repaired);
    assert_eq!(
        (summary.repaired, summary.deactivated, summary.unresolved),
        (2, 1, 0)
    );
    assert!(summary.agent_calls <= 4 * 3 * depth(400) + 2, "{summary:?}");
    assert!(summary.items_fetched <= 3 * 2 * 10, "{summary:?}");
    assert_eq!(fx.active("SKU-00250-EXTRA").await, Some(false));
    assert_eq!(fx.active("SKU-00100").await, Some(true));
    let hash: String = sqlx::query_scalar("SELECT content_hash FROM items WHERE sku = 'SKU-00300'")
        .fetch_one(&fx.app.db)
        .await
        .unwrap();
    assert_eq!(hash, content_hash("SKU-00300", 2));
    fx.assert_in_step().await;
    let types: Vec<Value> = fx
        .events()
        .await
        .iter()
        .map(|e| e["eventType"].clone())
        .collect();
    assert_eq!(types, ["drift_resolved", "drift_detected"]);

    // The deactivated item is no drift any more: the next run matches at once.
    fx.erp.reset_counts();
    let again = fx.detect_drift().await;
    assert_eq!((again.outcome, again.agent_calls), (RunOutcome::InSync, 1));
}

#[sqlx::test]
async fn drift_in_both_halves_is_found_in_each(db: PgPool) {
    let skus = numbered(1000);
    let items = catalogue(skus.clone(), 1);
    let fx = fixture(db, items.clone(), items, &[]).await;
    for sku in [&skus[3], &skus[997]] {
        fx.erp.put(erp_item(sku, 2));
    }
    let summary = fx.detect_drift().await;
    assert_eq!(
        (summary.outcome, summary.repaired),
        (RunOutcome::Repaired, 2)
    );
    let bound = 4 * 2 * depth(1000) + 2;
    assert!(
        summary.agent_calls <= bound,
        "{} calls > {bound}",
        summary.agent_calls
    );
    assert_eq!(summary.agent_calls, fx.erp.calls());
    fx.assert_in_step().await;
}

#[sqlx::test]
async fn every_item_drifted_is_repaired(db: PgPool) {
    let skus = numbered(250);
    let fx = fixture(db, catalogue(skus.clone(), 2), catalogue(skus, 1), &[]).await;
    let summary = fx.detect_drift().await;
    assert_eq!(
        (summary.outcome, summary.repaired, summary.unresolved),
        (RunOutcome::Repaired, 250, 0)
    );
    assert_eq!(summary.items_fetched, 250);
    fx.assert_in_step().await;
}

#[sqlx::test]
async fn an_empty_erp_deactivates_everything_with_one_listing(db: PgPool) {
    let fx = fixture(db, Vec::new(), catalogue(numbered(300), 1), &[]).await;
    let summary = fx.detect_drift().await;
    assert_eq!(
        (summary.erp_count, summary.pg_count, summary.deactivated),
        (Some(0), 300, 300)
    );
    assert_eq!((fx.erp.checksum_calls(), fx.erp.items_calls()), (1, 1));
    let active: i64 = sqlx::query_scalar("SELECT count(*) FROM items WHERE is_active")
        .fetch_one(&fx.app.db)
        .await
        .unwrap();
    assert_eq!(active, 0);
    fx.assert_in_step().await;
}

#[sqlx::test]
async fn a_nearly_empty_postgres_is_filled_by_paging_not_bisecting(db: PgPool) {
    // Postgres knows only three items, which the ERP no longer has.
    let stale = catalogue(["OLD-1", "SKU-00500x", "ZZZ"].map(String::from), 1);
    let fx = fixture(
        db,
        catalogue(numbered(1200), 1),
        stale,
        &[("RECONCILIATION_PAGE_SIZE", "500")],
    )
    .await;
    let summary = fx.detect_drift().await;
    assert_eq!((summary.repaired, summary.items_fetched), (1200, 1200));
    assert_eq!(summary.deactivated, 3);
    assert_eq!((fx.erp.checksum_calls(), fx.erp.items_calls()), (1, 3));
    fx.assert_in_step().await;
    assert_eq!(fx.active("SKU-00500x").await, Some(false));
}

/// Bytewise order puts 'Z' < 'a' < 'é' < '＀' (U+FF00) < '😀' (U+1F600); UTF-16 order would
/// put the emoji before U+FF00.
fn awkward_skus() -> Vec<String> {
    let mut skus: Vec<String> = [
        "A",
        "AB",
        "AB-1",
        "AB-10",
        "AB-2",
        "ABC",
        "Z",
        "a",
        "z",
        "é",
        "éa",
        "e\u{301}",
        "Ω-1",
        "＀",
        "😀",
        "😀😀",
        "日本-1",
        "日本-10",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    skus.extend((0..40).map(|i| format!("PRÉ-{i:02}")));
    skus
}

#[sqlx::test]
async fn non_ascii_skus_and_common_prefixes_are_compared_bytewise(db: PgPool) {
    let skus = awkward_skus();
    let fx = fixture(db, catalogue(skus.clone(), 1), catalogue(skus, 1), &[]).await;
    fx.assert_in_step().await;
    for sku in ["AB-1", "é", "😀", "PRÉ-20"] {
        fx.erp.put(erp_item(sku, 3));
    }
    fx.erp.remove("日本-10");
    fx.erp.put(erp_item("＀-new", 1));
    let summary = fx.detect_drift().await;
    assert_eq!(
        (summary.repaired, summary.deactivated, summary.unresolved),
        (5, 1, 0),
        "{summary:?}"
    );
    fx.assert_in_step().await;
}

#[sqlx::test]
async fn the_postgres_checksum_matches_an_independent_computation(db: PgPool) {
    let skus = awkward_skus();
    let fx = fixture(db, Vec::new(), catalogue(skus.clone(), 1), &[]).await;
    let mut sorted = skus.clone();
    sorted.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    let lines = |range: &SkuRange| -> (i64, String) {
        let mut hasher = Sha256::new();
        let mut n = 0;
        for sku in sorted.iter().filter(|s| range.contains(s)) {
            hasher.update(format!("{sku}:{}\n", content_hash(sku, 1)));
            n += 1;
        }
        (n, hex::encode(hasher.finalize()))
    };
    let (left, right) = SkuRange::all().split_at("é");
    let ranges = [
        SkuRange::all(),
        left,
        right,
        SkuRange::new(Lower::From("AB".into()), Some("AB-2".into())),
        SkuRange::new(Lower::After("😀😀".into()), None),
    ];
    for range in ranges {
        let digest = catalogue_queries::digest(&fx.app.db, VENDOR, &range)
            .await
            .unwrap();
        assert_eq!((digest.count, digest.checksum), lines(&range), "{range}");
    }
    // An empty range hashes nothing: SHA-256 of the empty string.
    let empty = catalogue_queries::digest(&fx.app.db, "no-such-vendor", &SkuRange::all())
        .await
        .unwrap();
    assert_eq!(
        empty.checksum,
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
}

#[sqlx::test]
async fn unmapped_codes_and_stale_items_are_unresolved_and_not_written(db: PgPool) {
    let items = catalogue(numbered(50), 1);
    let fx = fixture(db, items.clone(), items, &[]).await;
    let mut unmapped = erp_item("SKU-00010", 2);
    unmapped["unitCode"] = json!("BOX");
    fx.erp.put(unmapped);
    fx.erp.put(erp_item("SKU-00042-NEW", 1));
    // Postgres holds a newer version than the ERP lists: the ERP never rolls it back.
    let mut newer = erp_item("SKU-00020", 5);
    newer["lastModifiedAt"] = json!("2026-03-01T00:00:00Z");
    ingest(&fx.app, &[newer]).await;

    let summary = fx.detect_drift().await;
    assert_eq!(
        (summary.repaired, summary.unresolved),
        (1, 2),
        "{summary:?}"
    );
    let details = fx.events().await[0]["details"].as_str().unwrap().to_owned();
    assert!(
        details.contains("unmapped_unit: BOX") && details.contains("stale"),
        "{details}"
    );
    let stored: Vec<(String, String)> = sqlx::query_as(
        "SELECT sku, content_hash FROM items WHERE sku IN ('SKU-00010', 'SKU-00020')",
    )
    .fetch_all(&fx.app.db)
    .await
    .unwrap();
    assert!(stored.contains(&("SKU-00010".into(), content_hash("SKU-00010", 1))));
    assert!(stored.contains(&("SKU-00020".into(), content_hash("SKU-00020", 5))));
}

#[sqlx::test]
async fn an_item_the_erp_lists_again_is_restored(db: PgPool) {
    let items = catalogue(numbered(40), 1);
    let fx = fixture(db, items.clone(), items, &[]).await;
    fx.erp.remove("SKU-00013");
    assert_eq!(fx.detect_drift().await.deactivated, 1);
    assert_eq!(fx.active("SKU-00013").await, Some(false));
    // Back unchanged: reconciliation restores it.
    fx.erp.put(erp_item("SKU-00013", 1));
    let summary = fx.detect_drift().await;
    assert_eq!(
        (summary.repaired, summary.outcome),
        (1, RunOutcome::Repaired)
    );
    assert_eq!(fx.active("SKU-00013").await, Some(true));
    // Gone again, then pushed changed by the agent: the push itself brings it back.
    fx.erp.remove("SKU-00013");
    fx.detect_drift().await;
    fx.erp.put(erp_item("SKU-00013", 2));
    ingest(&fx.app, &[erp_item("SKU-00013", 2)]).await;
    assert_eq!(fx.active("SKU-00013").await, Some(true));
    assert_eq!(fx.detect_drift().await.outcome, RunOutcome::InSync);
}
