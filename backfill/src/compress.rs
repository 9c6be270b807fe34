//! `compress`: after `copy`, compress on the target exactly the chunks the source has
//! compressed (runbook step 6, TimescaleDB).
//!
//! `schema` restores every chunk with the source's compression flag, so a chunk compressed on
//! the source is flagged compressed on the target while `copy` puts its rows in the chunk's
//! uncompressed part ("partially compressed"): it takes the uncompressed size, and the
//! compression policy leaves it alone when the chunk is younger than `compress_after`. This
//! command compresses each such chunk (`compress_chunk`), one at a time with progress and an
//! optional pause between chunks, and decompresses any the source has uncompressed. The
//! target's chunk states are the progress: a rerun does only what is left.

use std::process::ExitCode;
use std::time::Instant;

use dualwrite_common::catalog::{self, CatalogError, Chunk, Compression, TableKind};
use dualwrite_common::ident::{quote_ident, QualifiedName};
use tokio_postgres::Client;

use crate::cli::CompressArgs;
use crate::pg::{self, PgError, ServerInfo, Side};
use crate::Error;

/// One chunk to bring to the source's state.
#[derive(Clone, Debug)]
struct Action {
    table: QualifiedName,
    chunk: QualifiedName,
    compress: bool,
    now: Compression,
}

/// Run `compress`.
pub async fn run(args: CompressArgs) -> crate::Result<ExitCode> {
    let input = |e: PgError| match e {
        PgError::Query { .. } => Error::from(e),
        other => Error::Input(other.to_string()),
    };
    let source_url = pg::parse_url(&args.source.source, Side::Source).map_err(input)?;
    let target_url = pg::parse_url(&args.target.target, Side::Target).map_err(input)?;
    let source = pg::open(&source_url, Side::Source).await.map_err(input)?;
    let target = pg::open(&target_url, Side::Target).await.map_err(input)?;
    let s = ServerInfo::read(&source, Side::Source).await?;
    let t = ServerInfo::read(&target, Side::Target).await?;
    let (Some(_), Some(_)) = (&s.timescaledb, &t.timescaledb) else {
        println!("TimescaleDB is not installed on both sides: there are no compressed chunks to match; nothing to do.");
        return Ok(ExitCode::SUCCESS);
    };
    let schema = t
        .timescaledb_schema
        .clone()
        .unwrap_or_else(|| "public".into());
    let actions = plan(&source, &target, &args).await?;
    if actions.is_empty() {
        println!("compression: every chunk already has the source's compression state");
        return Ok(ExitCode::SUCCESS);
    }
    let to_compress = actions.iter().filter(|a| a.compress).count();
    println!(
        "compression: {} chunks to compress and {} to decompress on the target, as on the source{}",
        to_compress,
        actions.len() - to_compress,
        if args.dry_run { " (dry run)" } else { "" }
    );
    for (i, a) in actions.iter().enumerate() {
        let verb = if a.compress { "compress" } else { "decompress" };
        if args.dry_run {
            println!(
                "  [{}/{}] would {verb} {} of {} (now {})",
                i + 1,
                actions.len(),
                a.chunk,
                a.table,
                a.now.word()
            );
            continue;
        }
        if i > 0 && !args.pause.is_zero() {
            tokio::time::sleep(args.pause).await;
        }
        let started = Instant::now();
        let before = size(&target, &a.chunk).await;
        let sql = format!(
            "SELECT {}.{verb}_chunk($1::text::regclass)",
            quote_ident(&schema)
        );
        let name = format!(
            "{}.{}",
            quote_ident(&a.chunk.schema),
            quote_ident(&a.chunk.name)
        );
        target.execute(&sql, &[&name]).await.map_err(|e| {
            Error::Other(anyhow::anyhow!(
                "{verb}ing {} failed: {}; {} of {} chunks done, run `compress` again to go on",
                a.chunk,
                pg::describe(&e),
                i,
                actions.len()
            ))
        })?;
        let after = size(&target, &a.chunk).await;
        let sizes = match (before, after) {
            (Some(b), Some(a)) => {
                format!(" ({:.1} MB -> {:.1} MB)", b as f64 / 1e6, a as f64 / 1e6)
            }
            _ => String::new(),
        };
        println!(
            "  [{}/{}] {verb}ed {} of {} in {:.1}s{sizes}",
            i + 1,
            actions.len(),
            a.chunk,
            a.table,
            started.elapsed().as_secs_f64(),
        );
    }
    if !args.dry_run {
        println!(
            "compression: done; the target's chunks are compressed as the source's are (`dualwrite-validator counts` shows each chunk's state)"
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// What to do, in time order per table: the target chunk matching each source chunk (same
/// range in every dimension) whose compression differs from the source's.
async fn plan(source: &Client, target: &Client, args: &CompressArgs) -> crate::Result<Vec<Action>> {
    let catalog_err = |side: Side| {
        move |e: CatalogError| match e {
            CatalogError::Query(source) => Error::from(PgError::Query { side, source }),
            other => Error::Input(format!("{side}: {other}")),
        }
    };
    let tables: Vec<_> = catalog::discover(source, &args.tables)
        .await
        .map_err(catalog_err(Side::Source))?
        .into_iter()
        .filter(|t| t.kind == TableKind::Hypertable)
        .collect();
    let source_state = catalog::chunk_compression(source)
        .await
        .map_err(PgError::query(Side::Source))?;
    let target_state = catalog::chunk_compression(target)
        .await
        .map_err(PgError::query(Side::Target))?;
    let mut actions = Vec::new();
    for table in tables {
        let spec = catalog::TableSpec {
            table: table.table.clone(),
            time_column: Some(table.time_column.clone()),
        };
        let on_target = catalog::discover(target, &[spec])
            .await
            .map_err(catalog_err(Side::Target))?
            .pop()
            .ok_or_else(|| Error::Input(format!("target: table {} not found", table.table)))?;
        for chunk in &table.chunks {
            let want = source_state
                .get(&chunk.relation)
                .copied()
                .unwrap_or(Compression::None);
            let Some(t) = matching(&on_target.chunks, chunk) else {
                if want != Compression::None {
                    println!(
                        "  note: {} (compressed on the source) has no chunk with the same ranges on the target: not compressed",
                        chunk.relation
                    );
                }
                continue;
            };
            let now = target_state
                .get(&t.relation)
                .copied()
                .unwrap_or(Compression::None);
            let action = match (want, now) {
                (Compression::None, Compression::None) => None,
                (Compression::None, _) => Some(false),
                (_, Compression::Full) => None,
                (_, _) => Some(true),
            };
            if let Some(compress) = action {
                actions.push(Action {
                    table: table.table.clone(),
                    chunk: t.relation.clone(),
                    compress,
                    now,
                });
            }
        }
    }
    Ok(actions)
}

fn matching<'a>(chunks: &'a [Chunk], c: &Chunk) -> Option<&'a Chunk> {
    chunks
        .iter()
        .find(|t| t.start == c.start && t.end == c.end && t.slices == c.slices)
}

/// A chunk's size with its compressed part, in bytes; `None` when the catalog does not say
/// (the size is only for the progress lines).
async fn size(target: &Client, chunk: &QualifiedName) -> Option<i64> {
    let name = format!(
        "{}.{}",
        quote_ident(&chunk.schema),
        quote_ident(&chunk.name)
    );
    let row = target
        .query_one(
            "SELECT pg_total_relation_size($1::text::regclass)
                    + coalesce((SELECT sum(pg_total_relation_size(c.oid))::int8 FROM pg_class c
                                 WHERE c.oid IN (SELECT cc.relid FROM _timescaledb_catalog.chunk cc
                                                  WHERE cc.id = (SELECT compressed_chunk_id FROM _timescaledb_catalog.compression_chunk_size s
                                                                  JOIN _timescaledb_catalog.chunk ch ON ch.id = s.chunk_id
                                                                 WHERE ch.relid = $1::text::regclass))), 0)",
            &[&name],
        )
        .await
        .ok()?;
    row.get(0)
}
