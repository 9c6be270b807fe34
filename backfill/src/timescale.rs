//! TimescaleDB's part of the schema clone and of `jobs`: the SQL that brackets a restore, the
//! background-job switches, and the dump edits the runbook does by hand (extension schema,
//! job owners). Written from `TIMESCALEDB.md`; kept as strings and pure functions so they are
//! tested without a TimescaleDB server.

use std::collections::{BTreeMap, BTreeSet};

use dualwrite_common::ident::{quote_ident, quote_literal};

use crate::sqlscript::{self, PieceKind, TokenKind};

/// Job ids from this one up are user jobs (retention, compression, continuous aggregates);
/// below are TimescaleDB's own (telemetry, job history), which stay as they are.
pub const FIRST_USER_JOB: i32 = 1000;

/// `CREATE EXTENSION` on a fresh target, at the source's version, in `schema`.
pub fn create_extension_sql(version: &str, schema: &str) -> String {
    format!(
        "CREATE SCHEMA IF NOT EXISTS {};\nCREATE EXTENSION IF NOT EXISTS timescaledb WITH SCHEMA {} VERSION {};",
        quote_ident(schema),
        quote_ident(schema),
        quote_literal(version)
    )
}

/// Run before the dump: stops background workers and marks the database as restoring.
pub fn pre_restore_sql(schema: &str) -> String {
    format!(
        "SELECT {}.timescaledb_pre_restore();\n",
        quote_ident(schema)
    )
}

/// `alter_job(..., scheduled => on)` for every user job, as one statement.
pub fn schedule_jobs_sql(schema: &str, scheduled: bool) -> String {
    format!(
        "SELECT {}.alter_job(id::integer, scheduled => {scheduled}) FROM _timescaledb_config.bgw_job WHERE id >= {FIRST_USER_JOB} ORDER BY id;\n",
        quote_ident(schema)
    )
}

/// Run after the dump, in the restore's transaction: leave restoring mode and disable every
/// user job.
pub fn post_restore_sql(schema: &str) -> String {
    format!(
        "SELECT {}.timescaledb_post_restore();\n{}",
        quote_ident(schema),
        schedule_jobs_sql(schema, false)
    )
}

/// A job's schedule on the source: whether it is scheduled, and its next start (UTC text).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceJob {
    pub id: i32,
    pub scheduled: bool,
    pub next_start: Option<String>,
}

/// The source's jobs (id >= 1000) with their schedule, as `SourceJob` rows.
pub const SOURCE_JOBS_SQL: &str = "SELECT job_id, scheduled, next_start::text
    FROM timescaledb_information.jobs WHERE job_id >= 1000 ORDER BY job_id";

/// Where `schema` records the source's job schedules on the target, for `jobs enable`.
pub const RECORDED_JOBS_TABLE: &str = "_dualwrite_backfill.source_job";

/// Record the source's job schedules on the target (the dump does not carry next_start, and
/// post_restore's disabling hides which jobs were paused).
pub fn record_source_jobs_sql(jobs: &[SourceJob]) -> String {
    let mut sql = format!(
        "CREATE SCHEMA IF NOT EXISTS _dualwrite_backfill;\n\
         CREATE TABLE IF NOT EXISTS {RECORDED_JOBS_TABLE} (job_id integer PRIMARY KEY, scheduled boolean NOT NULL, next_start timestamptz, recorded_at timestamptz NOT NULL DEFAULT now());\n\
         DELETE FROM {RECORDED_JOBS_TABLE};\n"
    );
    if !jobs.is_empty() {
        let values: Vec<String> = jobs
            .iter()
            .map(|j| {
                format!(
                    "({}, {}, {})",
                    j.id,
                    j.scheduled,
                    j.next_start
                        .as_deref()
                        .map(|t| format!("{}::timestamptz", quote_literal(t)))
                        .unwrap_or_else(|| "NULL".into())
                )
            })
            .collect();
        sql.push_str(&format!(
            "INSERT INTO {RECORDED_JOBS_TABLE} (job_id, scheduled, next_start) VALUES {};\n",
            values.join(", ")
        ));
    }
    sql
}

/// `alter_job` turning one job on or off, with its next start when given (a timestamptz
/// literal).
pub fn schedule_job_sql(
    schema: &str,
    id: i32,
    scheduled: bool,
    next_start: Option<&str>,
) -> String {
    match next_start {
        Some(t) => format!(
            "SELECT {}.alter_job({id}, scheduled => {scheduled}, next_start => {t});",
            quote_ident(schema)
        ),
        None => format!(
            "SELECT {}.alter_job({id}, scheduled => {scheduled});",
            quote_ident(schema)
        ),
    }
}

/// Continuous aggregates in refresh order: an aggregate built on another one comes after it.
/// Each item is (name, its materialized hypertable id, the hypertable id it reads from).
pub fn refresh_order<T: Clone>(caggs: &[(T, i32, i32)]) -> Vec<T> {
    let mut done: Vec<bool> = vec![false; caggs.len()];
    let mut out = Vec::with_capacity(caggs.len());
    while out.len() < caggs.len() {
        let before = out.len();
        for i in 0..caggs.len() {
            if done[i] {
                continue;
            }
            let (_, _, raw) = &caggs[i];
            let waits = caggs
                .iter()
                .enumerate()
                .any(|(j, (_, mat, _))| !done[j] && j != i && mat == raw);
            if !waits {
                done[i] = true;
                out.push(caggs[i].0.clone());
            }
        }
        if out.len() == before {
            // A cycle cannot happen in TimescaleDB; keep the rest in the given order.
            for i in 0..caggs.len() {
                if !done[i] {
                    done[i] = true;
                    out.push(caggs[i].0.clone());
                }
            }
        }
    }
    out
}

/// Run one job now (outside a transaction block).
pub fn run_job_sql(schema: &str, job_id: i32) -> String {
    format!("CALL {}.run_job({job_id});", quote_ident(schema))
}

/// Refresh a continuous aggregate over `[from, until)`; `None` is open-ended (SQL NULL).
/// `from`/`until` are SQL literals with their casts.
pub fn refresh_cagg_sql(
    schema: &str,
    view: &str,
    from: Option<&str>,
    until: Option<&str>,
) -> String {
    format!(
        "CALL {}.refresh_continuous_aggregate({}, {}, {});",
        quote_ident(schema),
        quote_literal(view),
        from.unwrap_or("NULL"),
        until.unwrap_or("NULL")
    )
}

/// The names of the extension's own objects in its schema (functions, types, relations), from
/// the source, so only references to them move with the extension.
pub const EXTENSION_MEMBERS_SQL: &str = "
    SELECT p.proname::text FROM pg_extension e
      JOIN pg_depend d ON d.refclassid = 'pg_extension'::regclass AND d.refobjid = e.oid AND d.deptype = 'e'
      JOIN pg_proc p ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND p.pronamespace = e.extnamespace
     WHERE e.extname = 'timescaledb'
    UNION
    SELECT t.typname::text FROM pg_extension e
      JOIN pg_depend d ON d.refclassid = 'pg_extension'::regclass AND d.refobjid = e.oid AND d.deptype = 'e'
      JOIN pg_type t ON d.classid = 'pg_type'::regclass AND d.objid = t.oid AND t.typnamespace = e.extnamespace
     WHERE e.extname = 'timescaledb'
    UNION
    SELECT c.relname::text FROM pg_extension e
      JOIN pg_depend d ON d.refclassid = 'pg_extension'::regclass AND d.refobjid = e.oid AND d.deptype = 'e'
      JOIN pg_class c ON d.classid = 'pg_class'::regclass AND d.objid = c.oid AND c.relnamespace = e.extnamespace
     WHERE e.extname = 'timescaledb'";

/// Move the extension from schema `from` to `to` in a dump: `CREATE EXTENSION ... WITH SCHEMA`
/// and every `"from"."member"` reference to one of the extension's objects. String literals,
/// function bodies, comments and COPY data are left alone. Returns the edited script and how
/// many references changed.
pub fn rewrite_extension_schema(
    script: &str,
    from: &str,
    to: &str,
    members: &BTreeSet<String>,
) -> (String, usize) {
    let mut out = String::with_capacity(script.len());
    let mut changed = 0;
    let to_quoted = quote_ident(to);
    for piece in sqlscript::split(script) {
        if piece.kind != PieceKind::Statement {
            out.push_str(piece.text);
            continue;
        }
        let sql = piece.text;
        let w = sqlscript::words(sql);
        let is_create_ext = w.first().is_some_and(|t| t.is_keyword(sql, "CREATE"))
            && w.get(1).is_some_and(|t| t.is_keyword(sql, "EXTENSION"))
            && w.iter().any(|t| {
                matches!(t.kind, TokenKind::Word | TokenKind::QuotedIdent)
                    && sqlscript::ident_value(sql, t) == "timescaledb"
            });
        let mut pos = 0;
        for (k, t) in w.iter().enumerate() {
            let is_schema_ref = matches!(t.kind, TokenKind::Word | TokenKind::QuotedIdent)
                && sqlscript::ident_value(sql, t) == from;
            if !is_schema_ref {
                continue;
            }
            let member_ref = w.get(k + 1).is_some_and(|d| d.is_punct(sql, '.'))
                && w.get(k + 2).is_some_and(|m| {
                    matches!(m.kind, TokenKind::Word | TokenKind::QuotedIdent)
                        && members.contains(&sqlscript::ident_value(sql, m))
                });
            let ext_schema = is_create_ext
                && k >= 2
                && w[k - 1].is_keyword(sql, "SCHEMA")
                && w[k - 2].is_keyword(sql, "WITH");
            if member_ref || ext_schema {
                out.push_str(&sql[pos..t.start]);
                out.push_str(&to_quoted);
                pos = t.end;
                changed += 1;
            }
        }
        out.push_str(&sql[pos..]);
    }
    (out, changed)
}

/// Relations whose owner TimescaleDB sets itself: chunks (compressed ones included), the
/// internal hypertables behind compression and continuous aggregates, and the aggregates'
/// partial and direct views. `ALTER ... OWNER` on them fails ("operation not supported on
/// chunk tables"); they follow their hypertable's or aggregate's owner.
pub const OWNER_FOLLOWS_SQL: &str = "
    WITH internal AS (
      SELECT h.schema_name::text AS s, h.table_name::text AS t FROM _timescaledb_catalog.hypertable h
       WHERE h.id IN (SELECT mat_hypertable_id FROM _timescaledb_catalog.continuous_agg)
          OR NOT EXISTS (SELECT 1 FROM timescaledb_information.hypertables v
                          WHERE v.hypertable_schema = h.schema_name AND v.hypertable_name = h.table_name)
    ), hyper AS (
      SELECT format('%I.%I', h.schema_name, h.table_name)::regclass AS oid FROM _timescaledb_catalog.hypertable h
    )
    SELECT s, t FROM internal
    UNION SELECT n.nspname::text, c.relname::text FROM pg_inherits i
      JOIN hyper ON hyper.oid = i.inhparent
      JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_namespace n ON n.oid = c.relnamespace
    UNION SELECT partial_view_schema::text, partial_view_name::text FROM _timescaledb_catalog.continuous_agg
    UNION SELECT direct_view_schema::text, direct_view_name::text FROM _timescaledb_catalog.continuous_agg";

/// The continuous aggregates (their user-facing views).
pub const CONTINUOUS_AGGREGATES_SQL: &str =
    "SELECT user_view_schema::text, user_view_name::text FROM _timescaledb_catalog.continuous_agg";

/// Fit pg_dump's ownership statements to TimescaleDB: `ALTER VIEW <aggregate> OWNER TO` becomes
/// `ALTER MATERIALIZED VIEW` (which also gives the aggregate's internal objects to the owner),
/// and owner statements on the relations in `follows` are left out (TimescaleDB gives them
/// their hypertable's or aggregate's owner). Returns the script, how many statements were left
/// out and how many rewritten.
pub fn fit_owner_statements(
    script: &str,
    caggs: &BTreeSet<(String, String)>,
    follows: &BTreeSet<(String, String)>,
) -> (String, usize, usize) {
    let mut out = String::with_capacity(script.len());
    let (mut dropped, mut rewritten) = (0, 0);
    let mut skip_newline = false;
    for piece in sqlscript::split(script) {
        let mut text = piece.text;
        if std::mem::take(&mut skip_newline) && piece.kind == PieceKind::Gap {
            text = text.strip_prefix('\n').unwrap_or(text);
        }
        if piece.kind != PieceKind::Statement {
            out.push_str(text);
            continue;
        }
        let w = sqlscript::words(text);
        let kw = |i: usize, k: &str| w.get(i).is_some_and(|t| t.is_keyword(text, k));
        let is_ident = |i: usize| {
            w.get(i)
                .is_some_and(|t| matches!(t.kind, TokenKind::Word | TokenKind::QuotedIdent))
        };
        // ALTER TABLE|VIEW|MATERIALIZED VIEW schema.name OWNER TO role
        let name_at = if kw(0, "ALTER") && (kw(1, "TABLE") || kw(1, "VIEW")) {
            Some(2)
        } else if kw(0, "ALTER") && kw(1, "MATERIALIZED") && kw(2, "VIEW") {
            Some(3)
        } else {
            None
        };
        let target = name_at.filter(|&i| {
            is_ident(i)
                && w.get(i + 1).is_some_and(|t| t.is_punct(text, '.'))
                && is_ident(i + 2)
                && kw(i + 3, "OWNER")
                && kw(i + 4, "TO")
        });
        let Some(i) = target else {
            out.push_str(text);
            continue;
        };
        let name = (
            sqlscript::ident_value(text, &w[i]),
            sqlscript::ident_value(text, &w[i + 2]),
        );
        if follows.contains(&name) {
            dropped += 1;
            skip_newline = true;
            continue;
        }
        if caggs.contains(&name) && kw(1, "VIEW") {
            out.push_str(&text[..w[1].start]);
            out.push_str("MATERIALIZED VIEW");
            out.push_str(&text[w[1].end..]);
            rewritten += 1;
            continue;
        }
        out.push_str(text);
    }
    (out, dropped, rewritten)
}

/// Make the dump's `CREATE SCHEMA <schema>` tolerate the schema existing: the extension is
/// created in it before the dump runs (`timescaledb_pre_restore()` needs the extension).
/// Returns the script and whether it changed.
pub fn tolerate_existing_schema(script: &str, schema: &str) -> (String, bool) {
    let mut out = String::with_capacity(script.len());
    let mut changed = false;
    for piece in sqlscript::split(script) {
        let text = piece.text;
        if piece.kind == PieceKind::Statement {
            let w = sqlscript::words(text);
            let kw = |i: usize, k: &str| w.get(i).is_some_and(|t| t.is_keyword(text, k));
            let named = w.get(2).is_some_and(|t| {
                matches!(t.kind, TokenKind::Word | TokenKind::QuotedIdent)
                    && sqlscript::ident_value(text, t) == schema
            });
            if kw(0, "CREATE") && kw(1, "SCHEMA") && named {
                out.push_str(&text[..w[1].end]);
                out.push_str(" IF NOT EXISTS");
                out.push_str(&text[w[1].end..]);
                changed = true;
                continue;
            }
        }
        out.push_str(text);
    }
    (out, changed)
}

/// Drop `COMMENT ON EXTENSION` for the extensions in `names` (ones that exist on the target
/// owned by another role, e.g. created by a managed service: commenting needs ownership).
/// Returns the edited script and the extensions whose comment was dropped.
pub fn drop_extension_comments(script: &str, names: &BTreeSet<String>) -> (String, Vec<String>) {
    let mut out = String::with_capacity(script.len());
    let mut dropped = Vec::new();
    let mut skip_newline = false;
    for piece in sqlscript::split(script) {
        let mut text = piece.text;
        if std::mem::take(&mut skip_newline) && piece.kind == PieceKind::Gap {
            text = text.strip_prefix('\n').unwrap_or(text);
        }
        if piece.kind == PieceKind::Statement {
            let w = sqlscript::words(text);
            let kw = |i: usize, k: &str| w.get(i).is_some_and(|t| t.is_keyword(text, k));
            if kw(0, "COMMENT") && kw(1, "ON") && kw(2, "EXTENSION") {
                let name = w.get(3).map(|t| sqlscript::ident_value(text, t));
                if let Some(name) = name.filter(|n| names.contains(n)) {
                    dropped.push(name);
                    skip_newline = true;
                    continue;
                }
            }
        }
        out.push_str(text);
    }
    (out, dropped)
}

/// The owners of the background jobs in a dump's `COPY _timescaledb_config.bgw_job` data.
pub fn job_owners(script: &str) -> BTreeSet<String> {
    let mut owners = BTreeSet::new();
    for_each_job_row(script, |fields, owner| {
        owners.insert(regrole_name(fields[owner]));
    });
    owners
}

/// Give the jobs owned by one of `reassign` to `new_owner` in the dump's job data. Returns the
/// edited script and, per job id, the old owner.
pub fn rewrite_job_owners(
    script: &str,
    reassign: &BTreeSet<String>,
    new_owner: &str,
) -> (String, BTreeMap<String, String>) {
    let mut out = String::with_capacity(script.len());
    let mut changed = BTreeMap::new();
    let mut copy_cols: Option<Vec<String>> = None;
    for piece in sqlscript::split(script) {
        match piece.kind {
            PieceKind::Statement => {
                copy_cols = bgw_job_copy_columns(piece.text);
                out.push_str(piece.text);
            }
            PieceKind::CopyData => {
                let owner = copy_cols
                    .as_ref()
                    .and_then(|c| c.iter().position(|n| n == "owner"));
                let id = copy_cols
                    .as_ref()
                    .and_then(|c| c.iter().position(|n| n == "id"));
                match owner {
                    Some(owner) => {
                        for line in piece.text.split_inclusive('\n') {
                            let body = line.trim_end_matches('\n');
                            let mut fields: Vec<&str> = body.split('\t').collect();
                            let new_field = regrole_text(new_owner);
                            if body != "\\."
                                && fields.len() > owner
                                && reassign.contains(&regrole_name(fields[owner]))
                            {
                                let job = id.and_then(|i| fields.get(i)).unwrap_or(&"?");
                                changed.insert(job.to_string(), regrole_name(fields[owner]));
                                fields[owner] = &new_field;
                                out.push_str(&fields.join("\t"));
                                out.push_str(&line[body.len()..]);
                            } else {
                                out.push_str(line);
                            }
                        }
                    }
                    None => out.push_str(piece.text),
                }
                copy_cols = None;
            }
            _ => out.push_str(piece.text),
        }
    }
    (out, changed)
}

fn for_each_job_row(script: &str, mut f: impl FnMut(&[&str], usize)) {
    let mut copy_cols: Option<Vec<String>> = None;
    for piece in sqlscript::split(script) {
        match piece.kind {
            PieceKind::Statement => copy_cols = bgw_job_copy_columns(piece.text),
            PieceKind::CopyData => {
                if let Some(owner) = copy_cols
                    .as_ref()
                    .and_then(|c| c.iter().position(|n| n == "owner"))
                {
                    for line in piece.text.lines() {
                        let fields: Vec<&str> = line.split('\t').collect();
                        if line != "\\." && fields.len() > owner {
                            f(&fields, owner);
                        }
                    }
                }
                copy_cols = None;
            }
            _ => {}
        }
    }
}

/// The column list of `COPY _timescaledb_config.bgw_job (...) FROM stdin;`, if that is the
/// statement.
fn bgw_job_copy_columns(sql: &str) -> Option<Vec<String>> {
    let w = sqlscript::words(sql);
    let name = |t: &sqlscript::Token| sqlscript::ident_value(sql, t);
    if !(w.first()?.is_keyword(sql, "COPY")
        && name(w.get(1)?) == "_timescaledb_config"
        && w.get(2)?.is_punct(sql, '.')
        && name(w.get(3)?) == "bgw_job"
        && w.get(4)?.is_punct(sql, '('))
    {
        return None;
    }
    Some(
        w[5..]
            .iter()
            .take_while(|t| !t.is_punct(sql, ')'))
            .filter(|t| matches!(t.kind, TokenKind::Word | TokenKind::QuotedIdent))
            .map(name)
            .collect(),
    )
}

/// A `regrole` as COPY text prints it (`postgres`, `"We""ird"`) -> the role name.
fn regrole_name(field: &str) -> String {
    match field.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
        Some(inner) => inner.replace("\"\"", "\""),
        None => field.to_string(),
    }
}

/// A role name as `regrole` input in COPY text: quoted unless a plain lower-case identifier.
fn regrole_text(role: &str) -> String {
    let plain = role
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && role
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if plain {
        role.to_string()
    } else {
        quote_ident(role)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restore_and_job_sql() {
        assert_eq!(
            create_extension_sql("2.29.2", "public"),
            "CREATE SCHEMA IF NOT EXISTS \"public\";\nCREATE EXTENSION IF NOT EXISTS timescaledb WITH SCHEMA \"public\" VERSION '2.29.2';"
        );
        assert_eq!(
            pre_restore_sql("public"),
            "SELECT \"public\".timescaledb_pre_restore();\n"
        );
        assert_eq!(
            post_restore_sql("public"),
            "SELECT \"public\".timescaledb_post_restore();\n\
             SELECT \"public\".alter_job(id::integer, scheduled => false) FROM _timescaledb_config.bgw_job WHERE id >= 1000 ORDER BY id;\n"
        );
        assert_eq!(
            schedule_jobs_sql("ts", true),
            "SELECT \"ts\".alter_job(id::integer, scheduled => true) FROM _timescaledb_config.bgw_job WHERE id >= 1000 ORDER BY id;\n"
        );
        assert_eq!(
            run_job_sql("public", 1001),
            "CALL \"public\".run_job(1001);"
        );
        assert_eq!(
            refresh_cagg_sql(
                "public",
                "\"public\".\"daily\"",
                Some("'2024-01-01 00:00:00+00'::timestamptz"),
                None
            ),
            "CALL \"public\".refresh_continuous_aggregate('\"public\".\"daily\"', '2024-01-01 00:00:00+00'::timestamptz, NULL);"
        );
    }

    #[test]
    fn moves_the_extension_schema() {
        let members: BTreeSet<String> = ["time_bucket", "alter_job"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let dump = "CREATE SCHEMA \"tsdb\";\n\
            CREATE EXTENSION IF NOT EXISTS \"timescaledb\" WITH SCHEMA \"tsdb\";\n\
            CREATE TABLE \"tsdb\".\"mine\" (\"a\" int);\n\
            CREATE VIEW \"public\".\"v\" AS SELECT \"tsdb\".\"time_bucket\"('1 day'::interval, \"at\") FROM \"tsdb\".\"mine\";\n\
            COMMENT ON VIEW \"public\".\"v\" IS 'uses \"tsdb\".\"time_bucket\"';\n\
            COPY \"public\".\"t\" (\"a\") FROM stdin;\n\"tsdb\".\"time_bucket\"\n\\.\n";
        let (out, n) = rewrite_extension_schema(dump, "tsdb", "public", &members);
        assert_eq!(n, 2);
        assert_eq!(
            out,
            "CREATE SCHEMA \"tsdb\";\n\
            CREATE EXTENSION IF NOT EXISTS \"timescaledb\" WITH SCHEMA \"public\";\n\
            CREATE TABLE \"tsdb\".\"mine\" (\"a\" int);\n\
            CREATE VIEW \"public\".\"v\" AS SELECT \"public\".\"time_bucket\"('1 day'::interval, \"at\") FROM \"tsdb\".\"mine\";\n\
            COMMENT ON VIEW \"public\".\"v\" IS 'uses \"tsdb\".\"time_bucket\"';\n\
            COPY \"public\".\"t\" (\"a\") FROM stdin;\n\"tsdb\".\"time_bucket\"\n\\.\n"
        );
    }

    #[test]
    fn stacked_aggregates_refresh_after_what_they_read() {
        // daily (mat 3) reads hourly (mat 2), which reads the hypertable 1; weekly reads daily.
        let caggs = vec![
            ("daily", 3, 2),
            ("hourly", 2, 1),
            ("weekly", 4, 3),
            ("other", 5, 1),
        ];
        assert_eq!(
            refresh_order(&caggs),
            vec!["hourly", "other", "daily", "weekly"]
        );
        assert!(refresh_order::<&str>(&[]).is_empty());
    }

    #[test]
    fn records_source_jobs() {
        let sql = record_source_jobs_sql(&[
            SourceJob {
                id: 1000,
                scheduled: true,
                next_start: Some("2026-12-04 07:00:00+00".into()),
            },
            SourceJob {
                id: 1001,
                scheduled: false,
                next_start: None,
            },
        ]);
        assert!(sql.ends_with(
            "VALUES (1000, true, '2026-12-04 07:00:00+00'::timestamptz), (1001, false, NULL);\n"
        ));
        assert_eq!(
            schedule_job_sql("ext", 1000, true, Some("'x'::timestamptz")),
            "SELECT \"ext\".alter_job(1000, scheduled => true, next_start => 'x'::timestamptz);"
        );
    }

    #[test]
    fn existing_extension_schema() {
        let dump = "CREATE SCHEMA \"ext\";\nCREATE SCHEMA \"app\";\nCOMMENT ON SCHEMA \"ext\" IS 'CREATE SCHEMA \"ext\"';\n";
        let (out, changed) = tolerate_existing_schema(dump, "ext");
        assert!(changed);
        assert_eq!(
            out,
            "CREATE SCHEMA IF NOT EXISTS \"ext\";\nCREATE SCHEMA \"app\";\nCOMMENT ON SCHEMA \"ext\" IS 'CREATE SCHEMA \"ext\"';\n"
        );
    }

    #[test]
    fn fits_owner_statements() {
        let pair = |s: &str, t: &str| (s.to_string(), t.to_string());
        let caggs: BTreeSet<_> = [pair("app", "hourly")].into_iter().collect();
        let follows: BTreeSet<_> = [
            pair("_timescaledb_internal", "_hyper_1_1_chunk"),
            pair("_timescaledb_internal", "_partial_view_2"),
        ]
        .into_iter()
        .collect();
        let script = "-- header\n\
            ALTER TABLE \"app\".\"m\" OWNER TO \"own\";\n\
            ALTER TABLE \"_timescaledb_internal\".\"_hyper_1_1_chunk\" OWNER TO \"own\";\n\
            ALTER VIEW \"_timescaledb_internal\".\"_partial_view_2\" OWNER TO \"own\";\n\
            ALTER VIEW \"app\".\"hourly\" OWNER TO \"own\";\n\
            ALTER VIEW \"app\".\"plain\" OWNER TO \"own\";\n\
            GRANT SELECT ON TABLE \"_timescaledb_internal\".\"_hyper_1_1_chunk\" TO \"r\";\n";
        let (out, dropped, rewritten) = fit_owner_statements(script, &caggs, &follows);
        assert_eq!((dropped, rewritten), (2, 1));
        assert_eq!(
            out,
            "-- header\n\
            ALTER TABLE \"app\".\"m\" OWNER TO \"own\";\n\
            ALTER MATERIALIZED VIEW \"app\".\"hourly\" OWNER TO \"own\";\n\
            ALTER VIEW \"app\".\"plain\" OWNER TO \"own\";\n\
            GRANT SELECT ON TABLE \"_timescaledb_internal\".\"_hyper_1_1_chunk\" TO \"r\";\n"
        );
    }

    #[test]
    fn drops_comments_on_foreign_extensions() {
        let dump = "CREATE EXTENSION IF NOT EXISTS \"timescaledb\" WITH SCHEMA \"public\";\n\
            COMMENT ON EXTENSION \"timescaledb\" IS 'Enables scalable inserts; and more';\n\
            COMMENT ON EXTENSION \"pg_trgm\" IS 'trigrams';\n\
            COMMENT ON TABLE \"public\".\"timescaledb\" IS 'kept';\n";
        let names: BTreeSet<String> = ["timescaledb".to_string()].into_iter().collect();
        let (out, dropped) = drop_extension_comments(dump, &names);
        assert_eq!(
            out,
            "CREATE EXTENSION IF NOT EXISTS \"timescaledb\" WITH SCHEMA \"public\";\n\
            COMMENT ON EXTENSION \"pg_trgm\" IS 'trigrams';\n\
            COMMENT ON TABLE \"public\".\"timescaledb\" IS 'kept';\n"
        );
        assert_eq!(dropped, vec!["timescaledb"]);
    }

    #[test]
    fn reassigns_job_owners() {
        let dump = "SELECT 1;\n\
            COPY \"_timescaledb_config\".\"bgw_job\" (\"id\", \"application_name\", \"owner\", \"scheduled\") FROM stdin;\n\
            1000\tRetention Policy [1000]\tpostgres\tt\n\
            1001\tCompression Policy [1001]\tapp\tt\n\
            1002\tRefresh [1002]\t\"We\"\"ird\"\tf\n\
            \\.\n\
            COPY \"public\".\"x\" (\"owner\") FROM stdin;\npostgres\n\\.\n";
        assert_eq!(
            job_owners(dump).into_iter().collect::<Vec<_>>(),
            vec!["We\"ird", "app", "postgres"]
        );
        let reassign: BTreeSet<String> = ["postgres".to_string(), "We\"ird".to_string()]
            .into_iter()
            .collect();
        let (out, changed) = rewrite_job_owners(dump, &reassign, "tsdbadmin");
        assert_eq!(
            out,
            "SELECT 1;\n\
            COPY \"_timescaledb_config\".\"bgw_job\" (\"id\", \"application_name\", \"owner\", \"scheduled\") FROM stdin;\n\
            1000\tRetention Policy [1000]\ttsdbadmin\tt\n\
            1001\tCompression Policy [1001]\tapp\tt\n\
            1002\tRefresh [1002]\ttsdbadmin\tf\n\
            \\.\n\
            COPY \"public\".\"x\" (\"owner\") FROM stdin;\npostgres\n\\.\n"
        );
        assert_eq!(changed.get("1000").map(String::as_str), Some("postgres"));
        assert_eq!(changed.get("1002").map(String::as_str), Some("We\"ird"));
        let (out, _) = rewrite_job_owners(dump, &reassign, "Admin");
        assert!(out.contains("1000\tRetention Policy [1000]\t\"Admin\"\tt\n"));
    }
}
