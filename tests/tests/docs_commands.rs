//! Every command line shown in README.md and docs/**/*.md works: it parses with the real
//! parser of its binary, and its subcommand is run by a test or the demo. No clusters.
//!
//! Commands are taken from fenced code blocks: lines (joined over `\` continuations and over
//! synopsis lines that continue with `[--flag ...]`) whose first word, after `VAR=value`
//! assignments, is `dualwrite-proxy`, `dualwrite-backfill` or `dualwrite-validator`.
//! Synopsis notation is expanded: `[--flag]` becomes `--flag`, `a|b` gives one variant per
//! alternative, `[selection]` and `...` are dropped, and placeholders (`URL`, `T`, `FILE`,
//! `$SOURCE`, ...) get a valid value chosen by the flag they follow.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use dualwrite_tests::bins::binary;

const BINARIES: [&str; 3] = [
    "dualwrite-proxy",
    "dualwrite-backfill",
    "dualwrite-validator",
];
const DUMMY_URL: &str = "postgres://app:secret@127.0.0.1:5432/app?sslmode=disable";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the workspace")
        .to_path_buf()
}

/// README.md and every markdown file under docs/, in a stable order.
fn doc_files() -> Vec<PathBuf> {
    let root = repo_root();
    let mut files = vec![root.join("README.md")];
    let mut dirs = vec![root.join("docs")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("reading docs/") {
            let path = entry.expect("a docs/ entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "md") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// One documented command line.
#[derive(Debug, Clone)]
struct DocCommand {
    /// `file:line`, for messages.
    at: String,
    /// The logical line as written.
    text: String,
    binary: &'static str,
    /// `VAR=value` assignments before the binary.
    env: Vec<(String, String)>,
    /// The raw words after the binary (synopsis notation not yet expanded).
    words: Vec<String>,
}

/// Logical lines inside fenced code blocks, with the line number each starts on.
fn fenced_lines(text: &str) -> Vec<(usize, String)> {
    let mut out: Vec<(usize, String)> = Vec::new();
    let mut fence: Option<String> = None;
    let mut pending: Option<(usize, String)> = None;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
            let marker = trimmed[..3].to_string();
            match &fence {
                None => fence = Some(marker),
                Some(m) if *m == marker => {
                    if let Some(p) = pending.take() {
                        out.push(p);
                    }
                    fence = None;
                }
                Some(_) => {}
            }
            continue;
        }
        if fence.is_none() {
            continue;
        }
        // A synopsis continues on an indented line of optional flags.
        let synopsis_continuation = line.starts_with(' ')
            && (trimmed.starts_with("[-") || trimmed.starts_with("--"))
            && out
                .last()
                .is_some_and(|(_, l)| words_of(l).iter().any(|w| is_binary(w).is_some()));
        if pending.is_none() && synopsis_continuation {
            let last = out.last_mut().expect("checked above");
            last.1.push(' ');
            last.1.push_str(trimmed);
            continue;
        }
        let (start, mut acc) = pending.take().unwrap_or((i + 1, String::new()));
        let body = line.trim_end();
        if let Some(stripped) = body.strip_suffix('\\') {
            acc.push_str(stripped);
            acc.push(' ');
            pending = Some((start, acc));
        } else {
            acc.push_str(body);
            out.push((start, acc));
        }
    }
    if let Some(p) = pending {
        out.push(p);
    }
    out
}

/// Shell-like words: quotes and backslashes respected, a `#` word starts a comment, a control
/// operator (`|`, `;`, `&&`, `>`, `<`) ends the command.
fn words_of(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                for d in chars.by_ref() {
                    if d == '\'' {
                        break;
                    }
                    cur.push(d);
                }
            }
            '"' => {
                in_word = true;
                while let Some(d) = chars.next() {
                    match d {
                        '"' => break,
                        '\\' => {
                            if let Some(e) = chars.next() {
                                cur.push(e);
                            }
                        }
                        _ => cur.push(d),
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(e) = chars.next() {
                    cur.push(e);
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '#' if !in_word => break,
            ';' | '>' | '<' | '&' if !in_word => break,
            '|' if !in_word => break,
            _ => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    words
}

fn is_binary(word: &str) -> Option<&'static str> {
    let name = word.rsplit('/').next().unwrap_or(word);
    BINARIES.iter().copied().find(|b| *b == name)
}

fn is_assignment(word: &str) -> bool {
    word.split_once('=').is_some_and(|(k, _)| {
        !k.is_empty()
            && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !k.starts_with(|c: char| c.is_ascii_digit())
    })
}

/// Every documented command in README.md and docs/.
fn documented_commands() -> Vec<DocCommand> {
    let root = repo_root();
    let mut out = Vec::new();
    for file in doc_files() {
        let text = std::fs::read_to_string(&file).expect("reading a doc file");
        let rel = file
            .strip_prefix(&root)
            .unwrap_or(&file)
            .display()
            .to_string();
        for (line, logical) in fenced_lines(&text) {
            let words = words_of(&logical);
            let Some(pos) = words.iter().position(|w| is_binary(w).is_some()) else {
                continue;
            };
            let prefix = &words[..pos];
            let runner = prefix
                .iter()
                .all(|w| is_assignment(w) || matches!(w.as_str(), "exec" | "env" | "time"));
            if !runner {
                continue;
            }
            let env = prefix
                .iter()
                .filter_map(|w| w.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            out.push(DocCommand {
                at: format!("{rel}:{line}"),
                text: logical.trim().to_string(),
                binary: is_binary(&words[pos]).expect("found above"),
                env,
                words: words[pos + 1..].to_vec(),
            });
        }
    }
    out
}

/// Is `word` a placeholder rather than a literal value?
fn is_placeholder(word: &str) -> bool {
    word.starts_with('$')
        || (word.starts_with('<') && word.ends_with('>'))
        || (word.chars().next().is_some_and(|c| c.is_ascii_uppercase())
            && word
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || "_.:[]-".contains(c)))
}

/// A valid value for a placeholder following `flag`.
fn dummy_for(flag: Option<&str>) -> String {
    match flag.unwrap_or("") {
        "--source" | "--target" => DUMMY_URL.into(),
        "--from" | "--until" => "2024-01-01 00:00:00+00".into(),
        "--table" => "public.readings:ts".into(),
        "--key" => "id".into(),
        "--workdir" | "--pg-bin" | "--output" => "/tmp/dualwrite-docs".into(),
        "--job-owner" => "app".into(),
        "--plan" => "docs-plan".into(),
        "--bucket" | "--slice" => "1h".into(),
        "--config" | "-c" => "proxy.toml".into(),
        "--timeout" => "10s".into(),
        "--jobs"
        | "-j"
        | "--threads"
        | "--max-rows-per-second"
        | "--rows-per-unit"
        | "--attempts"
        | "--bisect-rows"
        | "--max-rows"
        | "--batch-rows" => "2".into(),
        "--tolerance" => "0.05".into(),
        _ => "x".into(),
    }
}

/// The concrete argument lists a documented line stands for (one per `a|b` alternative).
fn expand(cmd: &DocCommand) -> Vec<Vec<String>> {
    let mut cleaned: Vec<String> = Vec::new();
    for w in &cmd.words {
        if w == "..." {
            continue;
        }
        // `[selection]`: a name for a group of flags, not a word to type.
        if w.starts_with('[') && !w.starts_with("[-") && w.ends_with(']') && !w.contains('|') {
            continue;
        }
        let mut t = w.trim_start_matches('[').to_string();
        while t.ends_with("...") {
            t.truncate(t.len() - 3);
        }
        let t = t.trim_end_matches(']').to_string();
        if t.is_empty() {
            continue;
        }
        cleaned.push(t);
    }
    let variants = cleaned
        .iter()
        .filter(|w| !w.starts_with('-') && w.contains('|'))
        .map(|w| w.split('|').count())
        .max()
        .unwrap_or(1);
    (0..variants)
        .map(|k| {
            let mut args: Vec<String> = Vec::new();
            for w in &cleaned {
                let w = if !w.starts_with('-') && w.contains('|') {
                    let alts: Vec<&str> = w.split('|').collect();
                    alts[k % alts.len()].to_string()
                } else {
                    w.clone()
                };
                let prev = args.last().map(String::as_str);
                let prev_flag = prev.filter(|p| p.starts_with('-'));
                if is_placeholder(&w) {
                    args.push(dummy_for(prev_flag));
                } else {
                    args.push(w);
                }
            }
            // URLs given through the environment become flags.
            for (var, flag) in [
                ("DUALWRITE_SOURCE_URL", "--source"),
                ("DUALWRITE_TARGET_URL", "--target"),
            ] {
                if cmd.env.iter().any(|(k, _)| k == var) && !args.iter().any(|a| a == flag) {
                    args.push(flag.into());
                    args.push(DUMMY_URL.into());
                }
            }
            args
        })
        .collect()
}

fn asks_for_help(args: &[String]) -> bool {
    args.iter()
        .any(|a| matches!(a.as_str(), "--help" | "-h" | "--version" | "-V"))
}

/// The subcommand path of a concrete command: `copy`, `jobs enable`, `journal replay`.
fn subcommand_path(binary: &str, args: &[String]) -> Vec<String> {
    let mut i = 0;
    // The proxy's global flags come before the subcommand.
    if binary == "dualwrite-proxy" {
        while i < args.len() && args[i].starts_with('-') {
            i += if args[i].contains('=') { 1 } else { 2 };
        }
    }
    let mut path = Vec::new();
    if let Some(sub) = args.get(i) {
        path.push(sub.clone());
        if let Some(action) = args.get(i + 1).filter(|a| !a.starts_with('-')) {
            path.push(action.clone());
        }
    }
    path
}

/// Parse with the real parser; `Err` holds the parser's message.
fn parse(
    proxy: &Path,
    binary: &str,
    env: &[(String, String)],
    args: &[String],
) -> Result<(), String> {
    match binary {
        "dualwrite-backfill" => {
            let argv = std::iter::once(binary.to_string()).chain(args.iter().cloned());
            match dualwrite_backfill::parse_args(argv) {
                Ok(_) => Ok(()),
                Err(e) if asks_for_help(args) && !e.use_stderr() => Ok(()),
                Err(e) => Err(e.to_string()),
            }
        }
        "dualwrite-validator" => {
            let argv = std::iter::once(binary.to_string()).chain(args.iter().cloned());
            match dualwrite_validator::parse_args(argv) {
                Ok(_) => Ok(()),
                Err(e) if asks_for_help(args) && !e.use_stderr() => Ok(()),
                Err(e) => Err(e.to_string()),
            }
        }
        _ => parse_proxy(proxy, env, args),
    }
}

/// The proxy's parser lives in its binary: run it with a config file that does not exist.
/// A command line clap accepts then stops at loading the config ("does not exist", exit 2)
/// before doing anything; one it rejects prints clap's usage error.
fn parse_proxy(proxy: &Path, env: &[(String, String)], args: &[String]) -> Result<(), String> {
    let missing = "/nonexistent/dualwrite-docs-check/proxy.toml";
    let mut args = args.to_vec();
    for i in 0..args.len() {
        if (args[i] == "--config" || args[i] == "-c") && i + 1 < args.len() {
            args[i + 1] = missing.into();
        }
    }
    let mut cmd = Command::new(proxy);
    cmd.args(&args).stdin(Stdio::null());
    for (k, _) in std::env::vars() {
        if k.starts_with("DUALWRITE") {
            cmd.env_remove(k);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd
        .output()
        .map_err(|e| format!("running the proxy: {e}"))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let help = asks_for_help(&args);
    if help && out.status.success() {
        return Ok(());
    }
    if out.status.code() == Some(2) && stderr.contains("does not exist") {
        return Ok(());
    }
    Err(format!("exit {:?}: {}", out.status.code(), stderr.trim()))
}

/// Test sources that run the binaries: tests/tests/*.rs and the demo.
fn exercising_sources() -> Vec<(String, String)> {
    let root = repo_root();
    let mut files: Vec<PathBuf> = std::fs::read_dir(root.join("tests/tests"))
        .expect("reading tests/tests")
        .map(|e| e.expect("an entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .collect();
    files.push(root.join("tests/src/bin/dualwrite-demo.rs"));
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("reading a test source");
            (p.display().to_string(), text)
        })
        .collect()
}

/// Does this source run `binary` (as a process or in-process)?
fn runs_binary(source: &str, binary: &str) -> bool {
    let markers: &[&str] = match binary {
        "dualwrite-proxy" => &["\"dualwrite-proxy\"", "dualwrite_proxy", "ProxyHandle"],
        "dualwrite-backfill" => &[
            "\"dualwrite-backfill\"",
            "dualwrite_backfill",
            "backfill_util",
        ],
        _ => &[
            "\"dualwrite-validator\"",
            "dualwrite_validator",
            "validator_util",
        ],
    };
    markers.iter().any(|m| source.contains(m))
}

#[test]
fn every_documented_command_parses_and_is_exercised() {
    let commands = documented_commands();
    assert!(
        commands.len() >= 20,
        "found only {} commands in README.md and docs/: is the extraction broken?",
        commands.len()
    );
    let proxy = binary("dualwrite-proxy", "dualwrite-proxy");
    let sources = exercising_sources();
    let mut bad_parse = Vec::new();
    let mut not_exercised = BTreeSet::new();
    let mut paths_seen = BTreeSet::new();
    for cmd in &commands {
        for args in expand(cmd) {
            if let Err(e) = parse(&proxy, cmd.binary, &cmd.env, &args) {
                bad_parse.push(format!(
                    "{}: {}\n    as: {} {}\n    {}",
                    cmd.at,
                    cmd.text,
                    cmd.binary,
                    args.join(" "),
                    e.lines().next().unwrap_or_default()
                ));
                continue;
            }
            if asks_for_help(&args) {
                continue;
            }
            let path = subcommand_path(cmd.binary, &args);
            paths_seen.insert(format!("{} {}", cmd.binary, path.join(" ")));
            let exercised = sources.iter().any(|(_, src)| {
                runs_binary(src, cmd.binary)
                    && path.iter().all(|p| src.contains(&format!("\"{p}\"")))
            });
            if !exercised {
                not_exercised.insert(format!(
                    "{} {} (first shown at {})",
                    cmd.binary,
                    path.join(" "),
                    cmd.at
                ));
            }
        }
    }
    eprintln!(
        "{} documented command lines; subcommands: {}",
        commands.len(),
        paths_seen.into_iter().collect::<Vec<_>>().join(", ")
    );
    let mut problems = String::new();
    if !bad_parse.is_empty() {
        problems.push_str(&format!(
            "documented commands that the binary rejects (fix the docs):\n  {}\n",
            bad_parse.join("\n  ")
        ));
    }
    if !not_exercised.is_empty() {
        problems.push_str(&format!(
            "documented subcommands no test or the demo runs:\n  {}\n",
            not_exercised.into_iter().collect::<Vec<_>>().join("\n  ")
        ));
    }
    assert!(problems.is_empty(), "{problems}");
}

#[test]
fn extraction_handles_continuations_synopses_and_placeholders() {
    let text = "intro\n```sh\nDUALWRITE_TARGET_URL=$T dualwrite-backfill status \\\n  --plan NAME   # a comment\ncargo build -p dualwrite-proxy\n```\n\n```\ndualwrite-validator counts --source URL --target URL [selection] [--estimate [--no-analyze]]\n                   [--bucket 1h] [--table SCHEMA.TABLE[:TIME_COLUMN]]...\ndualwrite-backfill jobs enable|disable --target URL\n```\n";
    let lines = fenced_lines(text);
    let cmds: Vec<Vec<String>> = lines
        .iter()
        .map(|(_, l)| words_of(l))
        .filter(|w| w.iter().any(|x| is_binary(x).is_some()))
        .collect();
    assert_eq!(cmds.len(), 4, "{lines:?}");
    assert_eq!(
        cmds[0],
        [
            "DUALWRITE_TARGET_URL=$T",
            "dualwrite-backfill",
            "status",
            "--plan",
            "NAME"
        ]
    );
    let cmd = DocCommand {
        at: "x".into(),
        text: String::new(),
        binary: "dualwrite-validator",
        env: Vec::new(),
        words: cmds[2][1..].to_vec(),
    };
    let args = expand(&cmd);
    assert_eq!(args.len(), 1);
    assert_eq!(
        args[0],
        [
            "counts",
            "--source",
            DUMMY_URL,
            "--target",
            DUMMY_URL,
            "--estimate",
            "--no-analyze",
            "--bucket",
            "1h",
            "--table",
            "public.readings:ts"
        ]
    );
    assert!(dualwrite_validator::parse_args(
        std::iter::once("dualwrite-validator".to_string()).chain(args[0].clone())
    )
    .is_ok());
    let jobs = DocCommand {
        words: cmds[3][1..].to_vec(),
        binary: "dualwrite-backfill",
        ..cmd
    };
    let variants = expand(&jobs);
    assert_eq!(variants.len(), 2);
    assert_eq!(
        subcommand_path("dualwrite-backfill", &variants[1])[1],
        "disable"
    );
    assert_eq!(
        subcommand_path(
            "dualwrite-proxy",
            &[
                "--log-format".into(),
                "json".into(),
                "journal".into(),
                "show".into()
            ]
        ),
        ["journal", "show"]
    );
}

fn run_cli(proxy: &Path, args: &[&str]) -> Output {
    Command::new(proxy)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running dualwrite-proxy")
}

/// The proxy's admin subcommands, run as the docs show them against a proxy whose backends
/// are not running (they are reached only when a client connects).
#[test]
fn proxy_admin_subcommands_work_as_documented() {
    let proxy = binary("dualwrite-proxy", "dualwrite-proxy");
    let dir = tempfile::tempdir().expect("a temp dir");
    let nowhere = dualwrite_tests::free_port();
    let admin = dualwrite_tests::free_port();
    let cfg = dir.path().join("proxy.toml");
    std::fs::write(
        &cfg,
        format!(
            "listen = \"127.0.0.1:{listen}\"\nadmin_listen = \"127.0.0.1:{admin}\"\nmode = \"primary-only\"\nprimary = \"source\"\n\
             [source]\nurl = \"postgres://app:x@127.0.0.1:{nowhere}/app?sslmode=disable\"\n\
             [target]\nurl = \"postgres://app:y@127.0.0.1:{nowhere}/app?sslmode=disable\"\n\
             [auth]\nmethod = \"trust\"\n[journal]\ndir = \"{journal}\"\n",
            listen = dualwrite_tests::free_port(),
            journal = dir.path().join("journal").display()
        ),
    )
    .expect("writing the config");
    let cfg = cfg.to_str().expect("utf-8 path").to_string();
    let mut child = Command::new(&proxy)
        .args(["run", "--config", &cfg])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting dualwrite-proxy");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        let out = run_cli(&proxy, &["status", "--config", &cfg]);
        if out.status.success() {
            break out;
        }
        assert!(
            Instant::now() < deadline,
            "the proxy's admin API never answered: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let result = std::panic::catch_unwind(|| {
        let json = |out: &Output| -> serde_json::Value {
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            serde_json::from_slice(&out.stdout).expect("JSON on stdout")
        };
        let st = json(&status);
        assert_eq!(st["mode"], "primary-only", "{st}");

        // A cutover needs dual-write: refused with the reason, exit 1.
        let out = run_cli(&proxy, &["cutover", "--config", &cfg, "--to", "target"]);
        assert_eq!(out.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&out.stderr).contains("dual-write"));

        json(&run_cli(
            &proxy,
            &["set", "--config", &cfg, "--mode", "dual-write"],
        ));
        json(&run_cli(
            &proxy,
            &["set", "--config", &cfg, "--shadow-reads", "0.1"],
        ));
        let st = json(&run_cli(&proxy, &["status", "--config", &cfg]));
        assert_eq!(st["mode"], "dual-write", "{st}");
        assert_eq!(st["shadow_reads"], 0.1, "{st}");
        assert!(st["dual_write"]["started_at"].is_string(), "{st}");

        let out = run_cli(&proxy, &["shadow", "--config", &cfg]);
        assert!(out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stdout).starts_with("shadow reads: rate 0.1"),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        let report = json(&run_cli(&proxy, &["shadow", "--config", &cfg, "--json"]));
        assert_eq!(report["sample_rate"], 0.1, "{report}");

        let done = json(&run_cli(
            &proxy,
            &[
                "cutover",
                "--config",
                &cfg,
                "--to",
                "target",
                "--timeout",
                "10s",
            ],
        ));
        assert!(done["pause_ms"].is_number(), "{done}");
        let again = run_cli(&proxy, &["cutover", "--config", &cfg, "--to", "target"]);
        assert_eq!(again.status.code(), Some(1), "a second cutover is refused");
        json(&run_cli(
            &proxy,
            &["cutover", "--config", &cfg, "--to", "source", "--force"],
        ));
        let st = json(&run_cli(&proxy, &["status", "--config", &cfg]));
        assert_eq!(st["primary"], "source", "{st}");
        assert_eq!(st["cutovers"].as_array().map(Vec::len), Some(2), "{st}");
        json(&run_cli(
            &proxy,
            &["set", "--config", &cfg, "--mode", "primary-only"],
        ));

        let out = run_cli(&proxy, &["journal", "show", "--config", &cfg]);
        assert!(out.status.success());
    });
    let _ = child.kill();
    let _ = child.wait();
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}
