//! The README's main command: the migration on an embedded default. Starts a source and a
//! target cluster, puts `dualwrite-proxy` in front of the source, runs pgbench through it and
//! directly, and prints the figures.
//!
//!   dualwrite-demo [--seconds N] [--keep]

use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use dualwrite_tests::proxy::ProxyHandle;
use dualwrite_tests::{Cluster, PgBin};

struct Args {
    seconds: u32,
    keep: bool,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        seconds: 10,
        keep: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--seconds" => {
                args.seconds = it
                    .next()
                    .context("--seconds needs a value")?
                    .parse()
                    .context("--seconds: a number")?
            }
            "--keep" => args.keep = true,
            "-h" | "--help" => {
                println!("usage: dualwrite-demo [--seconds N] [--keep]");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (try --help)"),
        }
    }
    Ok(args)
}

fn step(n: u32, what: &str) -> Instant {
    println!("\n== step {n}: {what}");
    Instant::now()
}

fn done(t: Instant) {
    println!("   done in {:.1}s", t.elapsed().as_secs_f64());
}

/// Run pgbench; returns (tps, failed transactions).
fn pgbench(bin: &PgBin, port: u16, password: &str, args: &[&str]) -> Result<(f64, u64)> {
    let out = Command::new(bin.bin("pgbench"))
        .env("PGPASSWORD", password)
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "app"])
        .args(args)
        .arg("app")
        .output()
        .context("running pgbench")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        bail!("pgbench {args:?} failed:\n{text}");
    }
    let tps = text
        .lines()
        .find(|l| l.starts_with("tps = "))
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    let failed = text
        .lines()
        .find(|l| l.starts_with("number of failed transactions:"))
        .and_then(|l| l.split_whitespace().nth(4))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Ok((tps, failed))
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = parse_args()?;
    let total = Instant::now();
    println!("dualwrite demo: a local source and target, the proxy in front, a load through it");

    let t = step(1, "start a source and a target cluster");
    let source_bin = PgBin::source();
    let target_bin = PgBin::newer().unwrap_or_else(PgBin::target);
    let (sb, tb) = (source_bin.clone(), target_bin.clone());
    let target = std::thread::spawn(move || Cluster::start(&tb));
    let source = Cluster::start(&sb);
    let target = target
        .join()
        .map_err(|_| anyhow::anyhow!("target cluster failed to start"))?;
    for c in [&source, &target] {
        c.create_role("app", "app-secret", "");
        c.psql("postgres", "CREATE DATABASE app OWNER app");
    }
    println!(
        "   source: PostgreSQL {} on 127.0.0.1:{}",
        source_bin.major, source.port
    );
    println!(
        "   target: PostgreSQL {} on 127.0.0.1:{}",
        target_bin.major, target.port
    );
    done(t);

    let t = step(2, "start dualwrite-proxy (primary-only, primary = source)");
    let proxy = ProxyHandle::start(&format!(
        "mode = \"primary-only\"\nprimary = \"source\"\n[source]\nurl = \"{}\"\n[target]\nurl = \"{}\"\n\
         [auth]\nmethod = \"scram-sha-256\"\nusers = [{{ name = \"app\", password = \"app-secret\" }}]\n",
        source.url("app"),
        target.url("app")
    ))
    .await;
    println!(
        "   proxy on 127.0.0.1:{}, admin on http://{}",
        proxy.port(),
        proxy.admin.map(|a| a.to_string()).unwrap_or_default()
    );
    done(t);

    let t = step(3, "pgbench -i through the proxy");
    pgbench(
        &source_bin,
        proxy.port(),
        "app-secret",
        &["-i", "-s", "5", "-q"],
    )?;
    println!(
        "   pgbench_accounts on source: {} rows",
        source.psql("app", "SELECT count(*) FROM pgbench_accounts")
    );
    done(t);

    let t = step(
        4,
        "pgbench -M prepared, 8 clients: directly, then through the proxy",
    );
    let secs = args.seconds.to_string();
    let load = [
        "-M",
        "prepared",
        "-c",
        "8",
        "-j",
        "2",
        "-T",
        secs.as_str(),
        "-n",
    ];
    let (direct, _) = pgbench(&source_bin, source.port, "app-secret", &load)?;
    let (through, failed) = pgbench(&source_bin, proxy.port(), "app-secret", &load)?;
    println!("   direct:  {direct:>9.0} tps");
    println!(
        "   proxy:   {through:>9.0} tps  ({:.2}x direct), failed transactions: {failed}",
        through / direct
    );
    done(t);

    let status = proxy.admin_get("/status").await;
    println!("\nproxy status: {status}");
    println!("\nsummary: pass-through {through:.0} tps vs direct {direct:.0} tps, {failed} failed transactions, {:.1}s in all", total.elapsed().as_secs_f64());
    if failed > 0 {
        bail!("{failed} transactions failed through the proxy");
    }
    if args.keep {
        println!("\n--keep: still running. Connect with:");
        println!(
            "   psql 'postgres://app:app-secret@127.0.0.1:{}/app'   # through the proxy",
            proxy.port()
        );
        println!("   psql '{}'   # source", source.url("app"));
        println!("   psql '{}'   # target", target.url("app"));
        println!("Ctrl-C stops everything.");
        tokio::signal::ctrl_c().await?;
    }
    proxy.stop().await;
    Ok(())
}
