use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use dualwrite_proxy::Settings;
use tokio_util::sync::CancellationToken;

/// Postgres wire-protocol proxy for low-downtime migrations.
#[derive(Parser)]
#[command(name = "dualwrite-proxy", version)]
struct Cli {
    /// Log format: human-readable text or one JSON object per line. Level from RUST_LOG.
    #[arg(long, value_enum, default_value = "text", global = true)]
    log_format: LogFormat,
    /// Worker threads. 1 (the default) runs one event loop; more spreads sessions over cores,
    /// which pays off only when the proxy has cores of its own.
    #[arg(long, global = true, env = "DUALWRITE_THREADS")]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    Run {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate the config file and test that every backend is reachable.
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Show a running proxy's status: mode, primary, dual-write facts for choosing T, journal.
    Status {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Make `--to` the primary: pause new transactions, wait for open ones, drain, swap, resume.
    Cutover {
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long, value_enum)]
        to: SideArg,
        /// How long open transactions may take to finish before the cutover is aborted.
        #[arg(long, default_value = "10s")]
        timeout: String,
        /// Cut over even when the secondary is detached or the journal is not replayed.
        #[arg(long)]
        force: bool,
    },
    /// The journal of writes the secondary missed: `show` lists, `replay` re-applies.
    Journal {
        #[command(subcommand)]
        action: JournalAction,
    },
    /// Shadow reads of a running proxy: per statement, executions, mismatches by kind and
    /// p50/p95/p99 latency on primary and secondary.
    Shadow {
        #[arg(long, short)]
        config: PathBuf,
        /// The report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Change `mode` and/or `shadow_reads` of a running proxy (persisted like a cutover).
    Set {
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long, value_enum)]
        mode: Option<ModeArg>,
        #[arg(long)]
        shadow_reads: Option<f64>,
    },
}

#[derive(Subcommand)]
enum JournalAction {
    /// List the records (seq, time, kind, session, user@db, tables, error, statements).
    Show {
        #[arg(long, short)]
        config: PathBuf,
        /// One JSON array of records, with decoded statements.
        #[arg(long)]
        json: bool,
    },
    /// Re-apply missed writes to the secondary in order; safe to re-run.
    Replay {
        #[arg(long, short)]
        config: PathBuf,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum SideArg {
    Source,
    Target,
}

#[derive(Clone, Copy, ValueEnum)]
enum ModeArg {
    PrimaryOnly,
    DualWrite,
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour only on a terminal: logs redirected to a file stay plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    // One thread by default: relaying is syscall-bound, and a single event loop avoids the
    // cross-thread wake-ups that otherwise dominate the proxy's CPU time (see bench/proxy.sh).
    let threads = cli.threads.unwrap_or(1);
    let runtime = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    };
    match runtime {
        Ok(rt) => rt.block_on(real_main(cli)),
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn real_main(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Run { config } => {
            let settings = match Settings::load(&config) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            let proxy = match dualwrite_proxy::Proxy::bind(settings).await {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let shared = proxy.shared();
            let shutdown = CancellationToken::new();
            let signal = shutdown.clone();
            let abandon = shared.abandon_journal.clone();
            tokio::spawn(async move {
                wait_for_signal().await;
                tracing::info!("signal received: shutting down");
                signal.cancel();
                // A second one stops even if journal records could not be written.
                wait_for_signal().await;
                tracing::warn!("second signal received: stopping now");
                abandon.cancel();
            });
            tokio::spawn(async move {
                use tokio::signal::unix::{signal, SignalKind};
                let Ok(mut hup) = signal(SignalKind::hangup()) else {
                    return;
                };
                while hup.recv().await.is_some() {
                    tracing::info!("SIGHUP: reloading {}", config.display());
                    dualwrite_proxy::reload(&shared, &config);
                }
            });
            proxy.run(shutdown).await;
            ExitCode::SUCCESS
        }
        Command::Journal { action } => journal(action).await,
        Command::Status { config } => admin_call(&config, "GET", "/status", None).await,
        Command::Shadow { config, json: true } => admin_call(&config, "GET", "/shadow", None).await,
        Command::Shadow {
            config,
            json: false,
        } => shadow_table(&config).await,
        Command::Cutover {
            config,
            to,
            timeout,
            force,
        } => {
            let to = match to {
                SideArg::Source => "source",
                SideArg::Target => "target",
            };
            let body =
                serde_json::json!({ "to": to, "timeout": timeout, "force": force }).to_string();
            admin_call(&config, "POST", "/cutover", Some(body)).await
        }
        Command::Set {
            config,
            mode,
            shadow_reads,
        } => {
            let mode = mode.map(|m| match m {
                ModeArg::PrimaryOnly => "primary-only",
                ModeArg::DualWrite => "dual-write",
            });
            let body =
                serde_json::json!({ "mode": mode, "shadow_reads": shadow_reads }).to_string();
            admin_call(&config, "POST", "/config", Some(body)).await
        }
        Command::Check { config } => {
            let settings = match Settings::load(&config) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            println!("config {} is valid", config.display());
            match dualwrite_proxy::check(&settings).await {
                Ok(lines) => {
                    for l in lines {
                        println!("{l}");
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

async fn journal(action: JournalAction) -> ExitCode {
    let (JournalAction::Show { config, .. } | JournalAction::Replay { config }) = &action;
    let mut settings = match Settings::load(config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    // Which side is the secondary now: the persisted state (cutovers) wins over the file, as
    // it does for a running proxy.
    if let Some(state) = dualwrite_proxy::state::load(&settings.journal_dir) {
        dualwrite_proxy::state::apply(&mut settings, &state);
    }
    match action {
        JournalAction::Show { json, .. } => {
            match dualwrite_proxy::journal::read_records(&settings.journal_dir) {
                Ok((records, report)) => {
                    let applied = dualwrite_proxy::replay::applied(&settings.journal_dir);
                    if json {
                        let out: Vec<_> = records
                            .iter()
                            .map(|r| {
                                let mut v = serde_json::to_value(r).unwrap_or_default();
                                v["statements"] = serde_json::json!(
                                    dualwrite_proxy::journal::describe(&r.messages)
                                );
                                v["applied"] = serde_json::json!(
                                    r.kind == dualwrite_proxy::journal::RecordKind::Missed
                                        && r.seq <= applied
                                );
                                v
                            })
                            .collect();
                        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
                    } else {
                        println!("{}", dualwrite_proxy::journal::render(&records, applied));
                        if report.torn_tail_bytes > 0 {
                            println!(
                                "(a torn last record of {} bytes is ignored)",
                                report.torn_tail_bytes
                            );
                        }
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(2)
                }
            }
        }
        JournalAction::Replay { .. } => {
            let result = dualwrite_proxy::replay::replay(&settings, None, &mut |ev| match ev {
                dualwrite_proxy::replay::ReplayEvent::Applied { seq, statements } => {
                    println!("applied  record {seq} ({statements} statement(s))")
                }
                dualwrite_proxy::replay::ReplayEvent::AlreadyApplied { seq } => {
                    println!("skipped  record {seq} (already applied)")
                }
                dualwrite_proxy::replay::ReplayEvent::Divergence { seq, error } => {
                    println!("listed   record {seq}: divergence, not replayed: {error}")
                }
                dualwrite_proxy::replay::ReplayEvent::InDoubtCommitted { seq } => {
                    println!("in doubt record {seq}: the target had committed it (commit marker); not applied again")
                }
                dualwrite_proxy::replay::ReplayEvent::InDoubtSkipped { seq, error } => {
                    println!("in doubt record {seq}: failed on replay ({error}); taken as applied before the connection was lost")
                }
                dualwrite_proxy::replay::ReplayEvent::Waiting { seq, waited, blockers } => {
                    let on = if blockers.is_empty() {
                        "no session holds it up (a long statement?)".to_string()
                    } else {
                        format!("it waits for {}", blockers.join("; "))
                    };
                    println!("waiting  record {seq} has run for {} s: {on}", waited.as_secs())
                }
            })
            .await;
            match result {
                Ok(s) => {
                    println!(
                        "replay done: {} applied, {} already applied, {} in doubt and committed already, {} in doubt and taken as applied, {} divergence record(s) listed",
                        s.applied, s.skipped_already_applied, s.in_doubt_committed, s.in_doubt_skipped, s.divergences_listed
                    );
                    ExitCode::SUCCESS
                }
                Err(e @ dualwrite_proxy::replay::ReplayError::Failed { .. }) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(2)
                }
            }
        }
    }
}

/// The admin address of the proxy a config file describes.
fn admin_addr(config: &std::path::Path) -> Result<std::net::SocketAddr, String> {
    Settings::load_admin_listen(config)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| dualwrite_proxy::admin_client::AdminError::NoAdmin.to_string())
}

/// Call the admin API and print the body; exit 0 on 2xx, 1 otherwise, 2 when unreachable.
async fn admin_call(
    config: &std::path::Path,
    method: &str,
    path: &str,
    body: Option<String>,
) -> ExitCode {
    let addr = match admin_addr(config) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    match dualwrite_proxy::admin_client::request(addr, method, path, body.as_deref()).await {
        Ok((code, text)) => {
            let pretty = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| serde_json::to_string_pretty(&v).ok())
                .unwrap_or(text);
            if (200..300).contains(&code) {
                println!("{pretty}");
                ExitCode::SUCCESS
            } else {
                eprintln!("error ({code}): {pretty}");
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// `shadow`: the report as a table.
async fn shadow_table(config: &std::path::Path) -> ExitCode {
    let addr = match admin_addr(config) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    match dualwrite_proxy::admin_client::request(addr, "GET", "/shadow", None).await {
        Ok((200, text)) => {
            match serde_json::from_str::<dualwrite_proxy::shadow::ShadowReport>(&text) {
                Ok(r) => {
                    print!("{}", dualwrite_proxy::shadow::render(&r));
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: unexpected answer from the proxy: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Ok((code, text)) => {
            eprintln!("error ({code}): {text}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
