//! Logging: JSON lines in production, readable lines in development. `RUST_LOG` filters.

use std::io::IsTerminal;

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

pub fn init(json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new("info,sqlx=warn,apalis=warn,tower_http=warn,tokio_cron_scheduler=warn")
    });
    let registry = tracing_subscriber::registry().with(filter);
    if json {
        registry
            .with(
                fmt::layer()
                    .json()
                    .with_current_span(true)
                    .with_span_list(false),
            )
            .init();
    } else {
        // Colours only for a person at a terminal: a file or a pipe gets plain text.
        let ansi = std::io::stdout().is_terminal();
        registry.with(fmt::layer().compact().with_ansi(ansi)).init();
    }
}
