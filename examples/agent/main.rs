//! `cargo run --example agent -- --help`: the reference agent (see README.md next to this file).

mod agent;

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::Parser;

#[derive(Parser)]
struct Args {
    /// erp-sync's base URL.
    #[arg(long, env = "ERP_SYNC_URL")]
    erp_sync_url: String,
    #[arg(long, env = "AGENT_VENDOR_ID")]
    vendor_id: String,
    /// The agent's own token (`authToken` at registration).
    #[arg(long, env = "AGENT_TOKEN", hide_env_values = true)]
    token: String,
    /// The `whsec_…` secret the registration answered.
    #[arg(long, env = "AGENT_SIGNING_SECRET", hide_env_values = true)]
    signing_secret: String,
    /// The ERP: a JSON file `{"warehouses", "items", "stock": {"<warehouse>": [...]}}`.
    #[arg(long, env = "AGENT_CATALOGUE")]
    catalogue: PathBuf,
    /// The idempotency store (created if missing).
    #[arg(long, env = "AGENT_STORE", default_value = "agent-idempotency.json")]
    store: PathBuf,
    #[arg(long, env = "AGENT_LISTEN", default_value = "127.0.0.1:8081")]
    listen: SocketAddr,
    /// Answer create-order with 202 and a callback instead of 200.
    #[arg(long)]
    callback_mode: bool,
    /// Answer `agent-check` test orders (AGENT-CHECK-…) without forwarding them to the ERP.
    #[arg(long)]
    test_mode: bool,
    #[arg(long, default_value_t = 30)]
    heartbeat_secs: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = agent::Config {
        erp_sync_url: args.erp_sync_url,
        vendor_id: args.vendor_id,
        token: args.token,
        signing_secret: args.signing_secret,
        catalogue: agent::Catalogue::load(&args.catalogue)?,
        store_path: args.store,
        mode: if args.callback_mode {
            agent::Mode::Async
        } else {
            agent::Mode::Sync
        },
        test_mode: args.test_mode,
        heartbeat: Duration::from_secs(args.heartbeat_secs.max(1)),
    };
    let agent = agent::Agent::new(config)?;
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    println!("agent listening on http://{}", listener.local_addr()?);
    tokio::spawn(agent::heartbeat_loop(agent.clone()));
    let pusher = agent.clone();
    tokio::spawn(async move {
        match agent::push_catalogue(&pusher).await {
            Ok(()) => println!("catalogue pushed"),
            Err(error) => eprintln!("catalogue push failed: {error}"),
        }
    });
    axum::serve(listener, agent::router(agent.clone()))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    println!(
        "stopped; the ERP received {} orders",
        agent.erp_orders().len()
    );
    Ok(())
}
