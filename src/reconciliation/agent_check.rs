//! `erp-sync agent-check URL --vendor V`: read-only conformance checks of an agent's
//! reconciliation endpoints, for agent authors. It calls the agent exactly as a
//! reconciliation does (same client code, same answer validation) and checks what a
//! reconciliation relies on: checksums that match the listing, ranges that add up, bounds
//! that are honoured, items in the ingest shape.

use std::{process::ExitCode, time::Duration};

use base64::Engine as _;
use sha2::{Digest, Sha256};

use super::{
    erp::{ErpCatalogue, ErpError, RangeChecksum, Signer},
    range::{Lower, SkuRange},
};
use crate::ingest::model::{IngestRecord, ItemRecord};

#[derive(Debug, clap::Args)]
pub struct AgentCheckArgs {
    /// The agent's base URL (what `agentUrl` is registered as).
    pub url: String,
    /// The vendor the agent serves (labels the report and the X-Correlation-ID).
    #[arg(long)]
    pub vendor: String,
    /// The agent's signing secret (`whsec_…`) to sign requests with; without it requests go
    /// unsigned, and whether the agent refuses bad signatures is not checked.
    #[arg(long, env = "AGENT_CHECK_SIGNING_SECRET", hide_env_values = true)]
    pub signing_secret: Option<String>,
    /// Items per /sync/items page while listing the catalogue.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u16).range(2..=1000))]
    pub page_size: u16,
    /// Timeout of each request, in milliseconds.
    #[arg(long, default_value_t = 30_000)]
    pub timeout_ms: u64,
    /// Also run the create-order checks (needs `--signing-secret`, and the agent in its test
    /// mode: the orders sent are test orders under `AGENT-CHECK-`, see
    /// docs/agent-protocol.md §9).
    #[arg(long)]
    pub orders: bool,
    /// Run only the create-order checks (implies `--orders`).
    #[arg(long)]
    pub orders_only: bool,
    /// Where the kit listens for callbacks after a 202; the agent is told
    /// `http://<this address>` in the `X-Agent-Check-Erp-Sync-Url` header.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub callback_listen: std::net::SocketAddr,
    /// How long to wait for the callback of a 202, in milliseconds.
    #[arg(long, default_value_t = 30_000)]
    pub callback_timeout_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckResult {
    pub name: &'static str,
    pub passed: bool,
    pub detail: String,
}

/// Runs the checks and prints each; exit status 0 when all pass, 1 otherwise, 2 on bad usage.
pub fn main(args: AgentCheckArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("agent-check: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    println!("agent-check {} (vendor {})", args.url, args.vendor);
    let results = match runtime.block_on(run(&args, |r| {
        let mark = if r.passed { "PASS" } else { "FAIL" };
        println!("{mark}  {}: {}", r.name, r.detail);
    })) {
        Ok(results) => results,
        Err(usage) => {
            eprintln!("agent-check: {usage}");
            return ExitCode::from(2);
        }
    };
    let failed = results.iter().filter(|r| !r.passed).count();
    if failed == 0 {
        println!("all {} checks passed", results.len());
        ExitCode::SUCCESS
    } else {
        println!("{failed} of {} checks failed", results.len());
        ExitCode::FAILURE
    }
}

/// The checks, in order; `report` sees each result as it is known. `Err` only for bad usage.
pub async fn run(
    args: &AgentCheckArgs,
    mut report: impl FnMut(&CheckResult),
) -> Result<Vec<CheckResult>, String> {
    let signer = args
        .signing_secret
        .as_deref()
        .map(Signer::signing_secret)
        .transpose()?;
    let url = url::Url::parse(&args.url).map_err(|e| format!("invalid URL {:?}: {e}", args.url))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("the URL must be http(s)".into());
    }
    let http = reqwest::Client::builder()
        .timeout(Duration::from_millis(args.timeout_ms.max(1)))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("erp-sync-agent-check/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
    let correlation = format!(
        "agent-check-{}-{}",
        args.vendor,
        uuid::Uuid::new_v4().simple()
    );
    let orders = args.orders || args.orders_only;
    let order_key = match (&args.signing_secret, orders) {
        (Some(secret), true) => Some(super::agent_check_orders::decode_secret(secret)?),
        (None, true) => return Err("--orders needs --signing-secret".into()),
        (_, false) => None,
    };
    let erp = ErpCatalogue::direct(http.clone(), &args.url, signer.clone(), &correlation);
    let mut checks = Checks {
        results: Vec::new(),
        report: &mut report,
    };
    if !args.orders_only {
        checks.all(&erp, usize::from(args.page_size)).await;
    }
    if let Some(key) = order_key {
        let config = super::agent_check_orders::OrderCheckConfig {
            http: http.clone(),
            base_url: &args.url,
            vendor: &args.vendor,
            key,
            callback_listen: args.callback_listen,
            callback_timeout: Duration::from_millis(args.callback_timeout_ms.max(1)),
        };
        super::agent_check_orders::run(&config, |name, outcome| {
            checks.push(name, outcome);
        })
        .await?;
    }
    if signer.is_some() && !args.orders_only {
        // A key nobody holds: the agent must refuse what it signs.
        let forged = Signer::signing_secret(&format!(
            "whsec_{}",
            base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>())
        ))
        .expect("a valid secret");
        let forger = ErpCatalogue::direct(http, &args.url, Some(forged), &correlation);
        let outcome = match forger.checksum(&SkuRange::all()).await {
            Err(ErpError::Call(crate::orders::agent_client::AgentCallError::Status {
                status: 401 | 403,
                ..
            })) => Ok("a request signed with another key is refused".into()),
            Err(error) => Err(format!(
                "expected 401 or 403 for a bad signature, got: {error}"
            )),
            Ok(_) => Err(
                "a request signed with another key was answered: signatures are not verified"
                    .into(),
            ),
        };
        checks.push("bad signatures refused", outcome);
    }
    Ok(checks.results)
}

struct Checks<'r, R: FnMut(&CheckResult)> {
    results: Vec<CheckResult>,
    report: &'r mut R,
}

impl<R: FnMut(&CheckResult)> Checks<'_, R> {
    fn push(&mut self, name: &'static str, outcome: Result<String, String>) -> bool {
        let passed = outcome.is_ok();
        let result = CheckResult {
            name,
            passed,
            detail: outcome.unwrap_or_else(|e| e),
        };
        (self.report)(&result);
        self.results.push(result);
        passed
    }

    async fn all(&mut self, erp: &ErpCatalogue, page_size: usize) {
        let whole = match erp.checksum(&SkuRange::all()).await {
            Ok(whole) => whole,
            Err(error) => {
                self.push("checksum of the whole catalogue", Err(error.to_string()));
                return;
            }
        };
        self.push(
            "checksum of the whole catalogue",
            Ok(format!(
                "{} items, checksum {}",
                whole.count, whole.checksum
            )),
        );
        let listing = match list_all(erp, page_size, whole.count).await {
            Ok(listing) => listing,
            Err(error) => {
                self.push("listing with /sync/items", Err(error));
                return;
            }
        };
        let pages = listing.len().div_ceil(page_size).max(1);
        self.push(
            "listing with /sync/items",
            Ok(format!(
                "{} items in {pages} pages of limit={page_size}, in strictly increasing bytewise order",
                listing.len()
            )),
        );
        self.push("items in the ingest shape", ingest_shape(&listing));
        let lines: Vec<(&str, &str)> = listing
            .iter()
            .map(|i| (i.0.as_str(), i.1.as_str()))
            .collect();
        self.push(
            "whole checksum equals the listing's",
            same(&whole, &lines, "the whole catalogue"),
        );
        if lines.is_empty() {
            self.push(
                "ranges",
                Ok("skipped: the catalogue is empty (fill it to check ranges)".into()),
            );
            return;
        }
        self.check_ranges(erp, &lines, page_size).await;
    }

    async fn check_ranges(&mut self, erp: &ErpCatalogue, lines: &[(&str, &str)], page_size: usize) {
        let n = lines.len();
        let mid = (n - 1) / 2;
        let median = lines[mid].0;
        let (left, right) = SkuRange::all().split_at(median);
        let split = async {
            let l = erp
                .checksum(&left)
                .await
                .map_err(|e| format!("{left}: {e}"))?;
            let r = erp
                .checksum(&right)
                .await
                .map_err(|e| format!("{right}: {e}"))?;
            same(&l, &lines[..=mid], &left.to_string())?;
            same(&r, &lines[mid + 1..], &right.to_string())?;
            Ok(format!(
                "{left} has {} and {right} has {}: {n} in all",
                l.count, r.count
            ))
        };
        let outcome = split.await;
        self.push("split checksums and counts add up", outcome);

        let last = lines[n - 1].0;
        let after_last = SkuRange::all().after(last);
        let empty = async {
            let c = erp.checksum(&after_last).await.map_err(|e| e.to_string())?;
            same(&c, &[], &after_last.to_string())?;
            let items = erp
                .items(&after_last, page_size)
                .await
                .map_err(|e| e.to_string())?;
            if !items.is_empty() {
                return Err(format!("{} items listed for {after_last}", items.len()));
            }
            Ok(format!(
                "{after_last}: count 0, SHA-256 of nothing, no items"
            ))
        };
        let outcome = empty.await;
        self.push("empty range", outcome);

        let outcome = self.bounds(erp, lines, mid).await;
        self.push("skuFrom, skuAfter, skuTo and limit honoured", outcome);
    }

    async fn bounds(
        &self,
        erp: &ErpCatalogue,
        lines: &[(&str, &str)],
        mid: usize,
    ) -> Result<String, String> {
        let m = lines[mid].0;
        let first_of = |range: SkuRange| async move {
            let items = erp
                .items(&range, 1)
                .await
                .map_err(|e| format!("{range}: {e}"))?;
            Ok::<_, String>(items.into_iter().next().map(|i| i.sku))
        };
        let from = first_of(SkuRange::new(Lower::From(m.into()), None)).await?;
        if from.as_deref() != Some(m) {
            return Err(format!(
                "skuFrom={m:?} with limit=1 gave {from:?}, not {m:?}"
            ));
        }
        let after = first_of(SkuRange::all().after(m)).await?;
        let expected = lines.get(mid + 1).map(|l| l.0);
        if after.as_deref() != expected {
            return Err(format!(
                "skuAfter={m:?} with limit=1 gave {after:?}, not {expected:?}"
            ));
        }
        let to = SkuRange::new(Lower::Unbounded, Some(m.into()));
        let upto = erp
            .items(&to, mid + 1)
            .await
            .map_err(|e| format!("{to}: {e}"))?;
        if upto.len() != mid + 1 || upto.last().map(|i| i.sku.as_str()) != Some(m) {
            return Err(format!(
                "skuTo={m:?} listed {} items ending at {:?}; expected {} ending at {m:?}",
                upto.len(),
                upto.last().map(|i| &i.sku),
                mid + 1
            ));
        }
        let single = SkuRange::new(Lower::From(m.into()), Some(m.into()));
        let one = erp
            .checksum(&single)
            .await
            .map_err(|e| format!("{single}: {e}"))?;
        same(&one, &lines[mid..=mid], &single.to_string())?;
        Ok(format!("checked around the median sku {m:?}"))
    }
}

/// Every item, page by page: `(sku, contentHash, the record)`.
async fn list_all(
    erp: &ErpCatalogue,
    page_size: usize,
    count: u64,
) -> Result<Vec<(String, String, Box<serde_json::value::RawValue>)>, String> {
    let most = count.saturating_add(page_size as u64);
    let mut listing: Vec<(String, String, Box<serde_json::value::RawValue>)> = Vec::new();
    loop {
        let range = match listing.last() {
            Some((last, ..)) => SkuRange::all().after(last),
            None => SkuRange::all(),
        };
        let page = erp
            .items(&range, page_size)
            .await
            .map_err(|e| format!("page after {} items, {range}: {e}", listing.len()))?;
        let full = page.len() == page_size;
        for item in page {
            let hash = item
                .content_hash
                .ok_or_else(|| format!("item {:?} has no string contentHash", item.sku))?;
            listing.push((item.sku, hash, item.raw));
        }
        if listing.len() as u64 > most {
            return Err(format!(
                "listed more than the {count} items the checksum counted"
            ));
        }
        if !full {
            return Ok(listing);
        }
    }
}

fn ingest_shape(
    listing: &[(String, String, Box<serde_json::value::RawValue>)],
) -> Result<String, String> {
    let mut bad = Vec::new();
    for (sku, _, raw) in listing {
        let problem = match serde_json::from_str::<ItemRecord>(raw.get()) {
            Err(error) => Some(error.to_string()),
            Ok(record) => record.check().err().map(|field| format!("invalid {field}")),
        };
        if let Some(problem) = problem {
            bad.push(format!("{sku:?} ({problem})"));
        }
    }
    if bad.is_empty() {
        Ok(format!(
            "{} items parse and validate as ingest items",
            listing.len()
        ))
    } else {
        let shown: Vec<&str> = bad.iter().take(5).map(String::as_str).collect();
        Err(format!("{} items do not: {}", bad.len(), shown.join("; ")))
    }
}

/// The contract's checksum of `sku:contentHash` lines, already in bytewise order.
pub fn checksum_of(lines: &[(&str, &str)]) -> String {
    let mut hasher = Sha256::new();
    for (sku, hash) in lines {
        hasher.update(sku.as_bytes());
        hasher.update(b":");
        hasher.update(hash.as_bytes());
        hasher.update(b"\n");
    }
    hex::encode(hasher.finalize())
}

fn same(answer: &RangeChecksum, lines: &[(&str, &str)], what: &str) -> Result<String, String> {
    let expected = checksum_of(lines);
    if answer.count != lines.len() as u64 {
        return Err(format!(
            "{what}: count {} but {} items listed",
            answer.count,
            lines.len()
        ));
    }
    if answer.checksum != expected {
        return Err(format!(
            "{what}: checksum {} but the listed items give {expected} \
             (SHA-256 of \"sku:contentHash\\n\" lines in bytewise sku order)",
            answer.checksum
        ));
    }
    Ok(format!("{what}: {} items, checksum matches", lines.len()))
}
