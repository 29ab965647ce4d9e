use std::{path::PathBuf, process::ExitCode};

use anyhow::Context;
use clap::{Parser, Subcommand};
use erp_sync::{config::Settings, startup::Application};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "erp-sync",
    version,
    about = "Keeps the marketplace's PostgreSQL in step with the vendors' ERPs"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP API and the background workers (the default).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Apply a vendor's ERP code mapping file ({"vendorId", "mappings": [...]}) and exit.
    SeedMappings {
        /// Path to the JSON file.
        file: PathBuf,
    },
    /// Print the OpenAPI document and exit.
    Openapi,
    /// Check an agent against the contract: its reconciliation endpoints (read-only) and, with
    /// `--orders`, its create-order endpoint in its test mode; exits 1 if any check fails.
    AgentCheck(erp_sync::reconciliation::agent_check::AgentCheckArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Needs neither configuration nor a database: it runs on an agent author's machine.
    if let Some(Command::AgentCheck(args)) = cli.command {
        return erp_sync::reconciliation::agent_check::main(args);
    }
    if let Some(Command::Openapi) = cli.command {
        println!(
            "{}",
            erp_sync::http::openapi_document()
                .to_pretty_json()
                .unwrap_or_default()
        );
        return ExitCode::SUCCESS;
    }
    // `.env` fills in what the environment does not set; done before any thread starts.
    let _ = dotenvy::dotenv();
    let settings = match Settings::from_env() {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("erp-sync: configuration error: {error}");
            return ExitCode::from(2);
        }
    };
    erp_sync::telemetry::init(settings.is_production());
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("erp-sync: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command.unwrap_or(Command::Serve), settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "erp-sync failed");
            eprintln!("erp-sync: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, settings: Settings) -> anyhow::Result<()> {
    match command {
        Command::Serve => {
            tracing::info!(?settings, "starting");
            let app = Application::build(settings).await?;
            let shutdown = CancellationToken::new();
            tokio::spawn(erp_sync::startup::cancel_on_signal(shutdown.clone()));
            app.run(shutdown).await
        }
        Command::Migrate => {
            let pool = erp_sync::db::connect(&settings).await?;
            erp_sync::db::migrate(&pool).await?;
            tracing::info!("migrations applied");
            Ok(())
        }
        Command::SeedMappings { file } => {
            let text =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let request: erp_sync::mappings::model::SeedMappings =
                erp_sync::http::extract::parse_json(&text)
                    .and_then(|r| erp_sync::http::extract::validate(&r).map(|_| r))
                    .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            let pool = erp_sync::db::connect(&settings).await?;
            erp_sync::db::migrate(&pool).await?;
            let outcome = erp_sync::mappings::MappingService::new(pool)
                .seed(&request)
                .await?;
            println!(
                "seeded {} mappings for {}: {} inserted, {} updated, {} unchanged",
                request.mappings.len(),
                request.vendor_id,
                outcome.inserted,
                outcome.updated,
                outcome.unchanged
            );
            Ok(())
        }
        Command::Openapi | Command::AgentCheck(_) => unreachable!("handled before start-up"),
    }
}
