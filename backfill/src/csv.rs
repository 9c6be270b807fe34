//! `csv`: CSV files into a target table in parallel, idempotent batches.
//!
//! A reader thread splits each file into batches of whole records (`--batch-rows` records or
//! [`MAX_BATCH_BYTES`], whichever comes first), finding record ends the way PostgreSQL's CSV
//! reader does: a newline outside double quotes. Each batch is one target transaction that
//! records the batch in `_dualwrite_backfill.csv_batch` and COPYs it; a rerun with the same
//! import id skips the batches recorded.

use std::collections::HashSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use dualwrite_common::ident::{quote_ident, quote_literal, QualifiedName};
use dualwrite_common::PgUrl;
use futures_util::SinkExt;
use tokio::sync::mpsc;
use tokio_postgres::Client;

use crate::cli::CsvArgs;
use crate::copy::input_pg;
use crate::pg::{self, describe, is_transient, Side};
use crate::progress::{self, Mode, Progress};
use crate::store;
use crate::worker::backoff;
use crate::Error;

/// A batch is cut at this size even before `--batch-rows` records (bounds memory).
pub const MAX_BATCH_BYTES: usize = 8 * 1024 * 1024;

/// Whole records of one file.
#[derive(Clone, Debug)]
pub struct Batch {
    /// `<file number>:<batch number>`, stable across reruns with the same files.
    pub id: String,
    /// The file, for people.
    pub file: String,
    pub data: Bytes,
    /// Records in the batch.
    pub records: u64,
}

/// Splits a byte stream into batches of whole CSV records.
#[derive(Debug)]
pub struct Splitter {
    quote: u8,
    in_quotes: bool,
    skip_header: bool,
    batch_rows: u64,
    max_bytes: usize,
    cur: Vec<u8>,
    /// Bytes of `cur` already scanned.
    scanned: usize,
    /// Records complete in `cur`.
    records: u64,
}

impl Splitter {
    /// A splitter for one file.
    pub fn new(header: bool, batch_rows: u64, max_bytes: usize) -> Splitter {
        Splitter {
            quote: b'"',
            in_quotes: false,
            skip_header: header,
            batch_rows: batch_rows.max(1),
            max_bytes: max_bytes.max(1),
            cur: Vec::new(),
            scanned: 0,
            records: 0,
        }
    }

    /// Feed bytes; returns the batches completed by them, as (data, records).
    pub fn feed(&mut self, data: &[u8]) -> Vec<(Vec<u8>, u64)> {
        let mut out = Vec::new();
        self.cur.extend_from_slice(data);
        let mut i = self.scanned;
        while i < self.cur.len() {
            let b = self.cur[i];
            if b == self.quote {
                self.in_quotes = !self.in_quotes;
            } else if b == b'\n' && !self.in_quotes {
                if self.skip_header {
                    self.skip_header = false;
                    self.cur.drain(..=i);
                    i = 0;
                    continue;
                }
                self.records += 1;
                if self.records >= self.batch_rows || i + 1 >= self.max_bytes {
                    let rest = self.cur.split_off(i + 1);
                    out.push((std::mem::replace(&mut self.cur, rest), self.records));
                    self.records = 0;
                    i = 0;
                    continue;
                }
            }
            i += 1;
        }
        self.scanned = self.cur.len();
        out
    }

    /// The end of the file: the last batch, if any (a last record may lack its newline).
    pub fn finish(&mut self) -> Option<(Vec<u8>, u64)> {
        if self.skip_header || self.cur.is_empty() {
            return None;
        }
        let mut records = self.records;
        if self.cur.last() != Some(&b'\n') {
            records += 1;
        }
        self.records = 0;
        self.scanned = 0;
        Some((std::mem::take(&mut self.cur), records))
    }
}

fn label(path: &Path) -> String {
    if path == Path::new("-") {
        "stdin".into()
    } else {
        path.display().to_string()
    }
}

/// Read the files in order, sending batches not in `loaded`; returns (batches, skipped).
fn read_files(
    files: &[PathBuf],
    header: bool,
    batch_rows: u64,
    loaded: &HashSet<String>,
    tx: &mpsc::Sender<Batch>,
    progress: &Progress,
) -> Result<(u64, u64), String> {
    let (mut sent, mut skipped) = (0u64, 0u64);
    for (n, path) in files.iter().enumerate() {
        let mut reader: Box<dyn Read> = if path == Path::new("-") {
            Box::new(std::io::stdin().lock())
        } else {
            Box::new(std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?)
        };
        let mut split = Splitter::new(header, batch_rows, MAX_BATCH_BYTES);
        let mut buf = vec![0u8; 256 * 1024];
        let mut number = 0u64;
        let mut emit = |data: Vec<u8>, records: u64| -> Result<(), String> {
            number += 1;
            let id = format!("{}:{number}", n + 1);
            progress.add_units(1);
            if loaded.contains(&id) {
                skipped += 1;
                progress.skip();
                return Ok(());
            }
            sent += 1;
            tx.blocking_send(Batch {
                id,
                file: label(path),
                data: Bytes::from(data),
                records,
            })
            .map_err(|_| "stopped".to_string())
        };
        loop {
            let got = reader
                .read(&mut buf)
                .map_err(|e| format!("{}: {e}", label(path)))?;
            if got == 0 {
                break;
            }
            for (data, records) in split.feed(&buf[..got]) {
                emit(data, records)?;
            }
        }
        if let Some((data, records)) = split.finish() {
            emit(data, records)?;
        }
    }
    Ok((sent, skipped))
}

/// The default import id: the table, the files (path, size, modification time) and how they
/// are split.
fn default_import_id(args: &CsvArgs) -> crate::Result<String> {
    let mut key = format!(
        "{}|{}|{}|{:?}|{:?}",
        args.table.quoted(),
        args.batch_rows,
        args.header,
        args.delimiter,
        args.columns
    );
    for f in &args.files {
        if f == Path::new("-") {
            return Err(Error::Input(
                "reading stdin needs --import-id NAME (so a rerun knows which batches are loaded)"
                    .into(),
            ));
        }
        let meta =
            std::fs::metadata(f).map_err(|e| Error::Input(format!("{}: {e}", f.display())))?;
        let path = std::fs::canonicalize(f).unwrap_or_else(|_| f.clone());
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs())
            .unwrap_or(0);
        key.push_str(&format!("|{}:{}:{mtime}", path.display(), meta.len()));
    }
    Ok(format!(
        "csv{:012x}",
        crate::plan::fnv64(&key) & 0xffff_ffff_ffff
    ))
}

/// The column list: given, or every non-generated column of the table.
async fn column_list(
    client: &Client,
    table: &QualifiedName,
    given: &[String],
) -> crate::Result<String> {
    let rows = client
        .query(
            "SELECT a.attname::text, a.attgenerated <> '' FROM pg_attribute a
             JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p', 'f')
               AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
            &[&table.schema, &table.name],
        )
        .await
        .map_err(|e| Error::Other(anyhow::anyhow!("target: {}", describe(&e))))?;
    if rows.is_empty() {
        return Err(Error::Input(format!(
            "table {table} does not exist on the target"
        )));
    }
    let cols: Vec<(String, bool)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    let names: Vec<String> = if given.is_empty() {
        cols.iter()
            .filter(|(_, generated)| !generated)
            .map(|(n, _)| n.clone())
            .collect()
    } else {
        for g in given {
            if !cols.iter().any(|(n, generated)| n == g && !generated) {
                return Err(Error::Input(format!(
                    "table {table} has no column {g:?} that can be loaded"
                )));
            }
        }
        given.to_vec()
    };
    Ok(names
        .iter()
        .map(|n| quote_ident(n))
        .collect::<Vec<_>>()
        .join(", "))
}

struct Loader {
    url: PgUrl,
    import_id: String,
    table: String,
    copy_sql: String,
    batch_rows: i64,
    attempts: u32,
    progress: Arc<Progress>,
    failed: Mutex<Vec<String>>,
}

enum Loaded {
    Done(u64),
    AlreadyLoaded,
}

impl Loader {
    async fn load(&self, client: &mut Client, b: &Batch) -> Result<Loaded, tokio_postgres::Error> {
        let tx = client.transaction().await?;
        let inserted = tx
            .execute(
                "INSERT INTO _dualwrite_backfill.csv_batch
                   (import_id, batch_id, table_name, file, batch_rows, rows, bytes)
                 VALUES ($1, $2, $3, $4, $5, 0, $6) ON CONFLICT DO NOTHING",
                &[
                    &self.import_id,
                    &b.id,
                    &self.table,
                    &b.file,
                    &self.batch_rows,
                    &(b.data.len() as i64),
                ],
            )
            .await?;
        if inserted == 0 {
            return Ok(Loaded::AlreadyLoaded);
        }
        let sink = tx.copy_in(&self.copy_sql).await?;
        let mut sink = std::pin::pin!(sink);
        sink.send(b.data.clone()).await?;
        let rows = sink.as_mut().finish().await?;
        tx.execute(
            "UPDATE _dualwrite_backfill.csv_batch SET rows = $3 WHERE import_id = $1 AND batch_id = $2",
            &[&self.import_id, &b.id, &(rows as i64)],
        )
        .await?;
        tx.commit().await?;
        Ok(Loaded::Done(rows))
    }

    /// One worker: batches from the channel until it closes.
    async fn work(self: Arc<Self>, rx: Arc<tokio::sync::Mutex<mpsc::Receiver<Batch>>>) {
        let mut client: Option<Client> = None;
        loop {
            let Some(batch) = rx.lock().await.recv().await else {
                return;
            };
            let label = format!("{} batch {}", batch.file, batch.id);
            let started = std::time::Instant::now();
            let mut attempt = 1;
            loop {
                let result = match client.as_mut() {
                    Some(c) => self
                        .load(c, &batch)
                        .await
                        .map_err(|e| (format!("target: {}", describe(&e)), is_transient(&e))),
                    None => match pg::open(&self.url, Side::Target).await {
                        Ok(c) => {
                            client = Some(c);
                            continue;
                        }
                        Err(e) => Err((e.to_string(), true)),
                    },
                };
                match result {
                    Ok(Loaded::Done(rows)) => {
                        self.progress.stream(rows, batch.data.len() as u64);
                        self.progress.unit_done(
                            &label,
                            rows,
                            batch.data.len() as u64,
                            started.elapsed(),
                        );
                        break;
                    }
                    Ok(Loaded::AlreadyLoaded) => {
                        self.progress.skip();
                        break;
                    }
                    Err((e, transient)) => {
                        client = None;
                        if transient && attempt < self.attempts {
                            self.progress.note(&format!(
                                "{label}: {e}; retrying (attempt {} of {})",
                                attempt + 1,
                                self.attempts
                            ));
                            tokio::time::sleep(backoff(attempt)).await;
                            attempt += 1;
                            continue;
                        }
                        self.progress.unit_failed(&label, &e);
                        self.failed
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(format!("{label}: {e}"));
                        break;
                    }
                }
            }
        }
    }
}

/// Run `csv`.
pub async fn run(args: CsvArgs) -> crate::Result<ExitCode> {
    if args.jobs == 0 || args.batch_rows == 0 {
        return Err(Error::Input(
            "--jobs and --batch-rows must be at least 1".into(),
        ));
    }
    if !args.delimiter.is_ascii() || args.delimiter == '"' || args.delimiter == '\n' {
        return Err(Error::Input(format!(
            "--delimiter {:?}: must be one ASCII character other than a quote or newline",
            args.delimiter
        )));
    }
    for f in &args.files {
        if f != Path::new("-") && !f.is_file() {
            return Err(Error::Input(format!("{}: no such file", f.display())));
        }
    }
    if args.files.iter().filter(|f| *f == Path::new("-")).count() > 1 {
        return Err(Error::Input("stdin (-) can be read only once".into()));
    }
    let import_id = match &args.import_id {
        Some(id) => id.clone(),
        None => default_import_id(&args)?,
    };
    let url = pg::parse_url(&args.target.target, Side::Target).map_err(input_pg)?;
    let mut client = pg::open(&url, Side::Target).await.map_err(input_pg)?;
    let columns = column_list(&client, &args.table, &args.columns).await?;
    let mut options = format!(
        "FORMAT csv, DELIMITER {}",
        quote_literal(&args.delimiter.to_string())
    );
    if let Some(null) = &args.null {
        options.push_str(&format!(", NULL {}", quote_literal(null)));
    }
    let copy_sql = format!(
        "COPY {} ({columns}) FROM STDIN ({options})",
        args.table.quoted()
    );

    store::ensure_schema(&mut client)
        .await
        .map_err(|e| Error::Other(anyhow::anyhow!("target: {}", describe(&e))))?;
    let prior = client
        .query(
            "SELECT batch_id, batch_rows FROM _dualwrite_backfill.csv_batch WHERE import_id = $1",
            &[&import_id],
        )
        .await
        .map_err(|e| Error::Other(anyhow::anyhow!("target: {}", describe(&e))))?;
    if let Some(r) = prior
        .iter()
        .find(|r| r.get::<_, i64>(1) != args.batch_rows as i64)
    {
        return Err(Error::Input(format!(
            "import {import_id} was loaded with --batch-rows {}; rerun it with the same value",
            r.get::<_, i64>(1)
        )));
    }
    let loaded: HashSet<String> = prior.iter().map(|r| r.get(0)).collect();

    let mode = Mode::detect(args.quiet);
    if mode != Mode::Quiet {
        eprintln!(
            "import {import_id} into {}: {} batches already loaded",
            args.table,
            loaded.len()
        );
    }
    let progress = Progress::new(mode, "batches", 0, 0, None);
    let ticker = progress.start_ticker();
    let loader = Arc::new(Loader {
        url,
        import_id: import_id.clone(),
        table: args.table.to_string(),
        copy_sql,
        batch_rows: args.batch_rows as i64,
        attempts: 5,
        progress: Arc::clone(&progress),
        failed: Mutex::new(Vec::new()),
    });
    let (tx, rx) = mpsc::channel::<Batch>(args.jobs);
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let workers: Vec<_> = (0..args.jobs)
        .map(|_| tokio::spawn(Arc::clone(&loader).work(Arc::clone(&rx))))
        .collect();
    let reader = {
        let (files, header, rows) = (args.files.clone(), args.header, args.batch_rows);
        let progress = Arc::clone(&progress);
        tokio::task::spawn_blocking(move || {
            read_files(&files, header, rows, &loaded, &tx, &progress)
        })
    };
    let read = reader
        .await
        .map_err(|e| Error::Other(anyhow::anyhow!("reader: {e}")))?;
    for w in workers {
        let _ = w.await;
    }
    if let Some(t) = ticker {
        t.abort();
    }
    progress.finish();
    let failed = loader
        .failed
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let secs = progress.elapsed().as_secs_f64().max(1e-3);
    println!(
        "import {import_id}: {} batches loaded, {} skipped (loaded before), {} failed; {} rows, {} in {} ({} rows/s)",
        progress.done(),
        progress.skipped(),
        failed.len(),
        progress::group(progress.rows()),
        progress::mb(progress.bytes()),
        progress::duration(secs),
        progress::group((progress.rows() as f64 / secs) as u64)
    );
    for f in &failed {
        println!("failed: {f}");
    }
    if let Err(e) = read {
        return Err(Error::Other(anyhow::anyhow!("reading the input: {e}")));
    }
    Ok(if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        println!(
            "rerun the same command (with --import-id {import_id}) to load the failed batches"
        );
        ExitCode::from(1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split_all(input: &[u8], header: bool, rows: u64, chunk: usize) -> Vec<(String, u64)> {
        let mut s = Splitter::new(header, rows, 1 << 20);
        let mut out: Vec<(Vec<u8>, u64)> = Vec::new();
        for c in input.chunks(chunk) {
            out.extend(s.feed(c));
        }
        out.extend(s.finish());
        out.into_iter()
            .map(|(d, n)| (String::from_utf8(d).unwrap(), n))
            .collect()
    }

    #[test]
    fn splits_on_record_boundaries_only() {
        let input = b"id,text\n1,\"a, b\"\n2,\"line\nbreak \"\"quoted\"\"\"\n3,plain\n4,last";
        for chunk in [1, 2, 3, 7, 100] {
            let got = split_all(input, true, 2, chunk);
            assert_eq!(
                got,
                vec![
                    (
                        "1,\"a, b\"\n2,\"line\nbreak \"\"quoted\"\"\"\n".to_string(),
                        2
                    ),
                    ("3,plain\n4,last".to_string(), 2),
                ],
                "chunk {chunk}"
            );
        }
        // No header, CRLF line ends, trailing newline.
        let got = split_all(b"1,a\r\n2,\"b\r\nc\"\r\n", false, 10, 4);
        assert_eq!(got, vec![("1,a\r\n2,\"b\r\nc\"\r\n".to_string(), 2)]);
        // A header alone gives no batch.
        assert!(split_all(b"id,text\n", true, 10, 3).is_empty());
    }

    #[test]
    fn cuts_big_batches_by_size() {
        let mut s = Splitter::new(false, 1000, 10);
        let out = s.feed(b"aaaa\nbbbb\ncccc\n");
        assert_eq!(out.len(), 1);
        assert_eq!(out[0], (b"aaaa\nbbbb\n".to_vec(), 2));
        assert_eq!(s.finish(), Some((b"cccc\n".to_vec(), 1)));
    }
}
