//! `csv`: a CSV file with a header and quoted fields holding commas, quotes and newlines loads
//! exactly (compared with the table it was exported from); a rerun skips the loaded batches;
//! a batch that fails leaves the others loaded and a rerun with the same import id loads just
//! it; stdin works with an import id.

use std::io::Write;
use std::process::Stdio;

use dualwrite_tests::backfill_util::{command, digest, process};
use dualwrite_tests::Pair;

const DDL: &str = "CREATE TABLE items (id int PRIMARY KEY, at timestamptz, note text, amount numeric, payload jsonb, tags text[]);
CREATE TABLE items2 (LIKE items INCLUDING ALL); CREATE TABLE items3 (LIKE items INCLUDING ALL);";

fn run_ok(args: &[&str]) -> String {
    let out = process(args);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{args:?}: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn csv_loads_exactly_in_idempotent_batches() {
    let pair = Pair::start();
    pair.both(DDL);
    let db = &pair.db;
    pair.source.psql(
        db,
        "INSERT INTO items SELECT i, '2024-01-01 00:00:00+00'::timestamptz + i * interval '1 minute',
           CASE i % 5 WHEN 0 THEN NULL WHEN 1 THEN '' WHEN 2 THEN 'commas, and \"quotes\"' WHEN 3 THEN E'two\\nlines, \"q\"\\n' ELSE 'plain ' || i END,
           CASE WHEN i % 7 = 0 THEN NULL ELSE i * 0.25 END,
           jsonb_build_object('i', i, 's', 'a,b\"c'),
           ARRAY['x,y', NULL, 'z\"']
         FROM generate_series(1, 20000) i",
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("items.csv");
    let file_s = file.to_str().unwrap().to_string();
    pair.source.psql(
        db,
        &format!(
            "\\copy (SELECT * FROM items ORDER BY id) TO '{file_s}' WITH (FORMAT csv, HEADER)"
        ),
    );
    let original = std::fs::read_to_string(&file).unwrap();
    assert!(original.starts_with("id,at,note"));
    let want = digest(&pair.source, db, "items", "true");
    let t = pair.target_url();

    let load = |table: &str, extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = [
            "csv",
            "--target",
            &t,
            "--table",
            table,
            "--header",
            "--batch-rows",
            "1000",
            "--jobs",
            "2",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };

    let args = load("public.items", &[&file_s]);
    let out = run_ok(&refs(&args));
    assert!(out.contains("20 batches loaded, 0 skipped"), "{out}");
    assert_eq!(digest(&pair.target, db, "items", "true"), want);

    // A rerun skips every batch.
    let out = run_ok(&refs(&args));
    assert!(out.contains("0 batches loaded, 20 skipped"), "{out}");
    assert_eq!(digest(&pair.target, db, "items", "true"), want);

    // One bad record (in the third batch): that batch fails, the others load, exit 1.
    let bad = original.replacen("\n2504,", "\nnot-a-number,", 1);
    assert_ne!(bad, original);
    std::fs::write(&file, &bad).unwrap();
    let args = load("public.items2", &["--import-id", "second", &file_s]);
    let out = process(&refs(&args));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("19 batches loaded, 0 skipped (loaded before), 1 failed"),
        "{stdout}"
    );
    assert!(stdout.contains("batch 1:3"), "{stdout}");
    assert_eq!(pair.target.psql(db, "SELECT count(*) FROM items2"), "19000");
    // Fixed, the rerun with the same import id loads only the failed batch.
    std::fs::write(&file, &original).unwrap();
    let out = run_ok(&refs(&args));
    assert!(out.contains("1 batches loaded, 19 skipped"), "{out}");
    assert_eq!(digest(&pair.target, db, "items2", "true"), want);

    // stdin needs an import id; with one it loads.
    let args = load("public.items3", &["-"]);
    let out = process(&refs(&args));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--import-id"));
    let args = load("public.items3", &["--import-id", "piped", "-"]);
    let mut child = command()
        .args(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let data = original.clone();
    let writer = std::thread::spawn(move || stdin.write_all(data.as_bytes()));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(digest(&pair.target, db, "items3", "true"), want);

    // Unknown table or column: refused, exit 2.
    let args = load("public.nope", &[&file_s]);
    assert_eq!(process(&refs(&args)).status.code(), Some(2));
    let args = load("public.items", &["--columns", "id,nope", &file_s]);
    assert_eq!(process(&refs(&args)).status.code(), Some(2));
}
