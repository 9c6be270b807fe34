use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = dualwrite_backfill::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("DUALWRITE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colour only on a terminal: server notices also end up in log files.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("dualwrite-backfill: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(dualwrite_backfill::run(cli))
}
