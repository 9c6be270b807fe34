//! `dualwrite-validator`: proves the target holds what the source holds.

use clap::Parser;
use dualwrite_validator::cli::Cli;

fn main() {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // Colour only on a terminal: server notices also end up in log files.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("dualwrite-validator: error: cannot start the runtime: {e}");
            std::process::exit(dualwrite_validator::EXIT_ERROR);
        }
    };
    let code = runtime.block_on(dualwrite_validator::run_cli(cli));
    std::process::exit(code);
}
