//! The report for a terminal: per table, a table of units with mismatches first, the
//! differing rows under their unit, and a summary line.

use std::fmt::Write;

use super::{CommandKind, Report, RowDiff, RowDiffKind, Status, TableReport, UnitReport};

/// Equal units listed per table before the rest are summarised in one line.
const MAX_EQUAL_LISTED: usize = 40;

/// suggest-t: buckets shown at each end of a run of buckets with the same status.
const SUGGEST_RUN_EDGE: usize = 3;

fn value(v: &Option<String>) -> String {
    match v {
        Some(s) => format!("{s:?}"),
        None => "NULL".into(),
    }
}

/// TimescaleDB chunks: how many are compressed on each side, and those whose state differs.
fn compression_line(t: &TableReport) -> Option<String> {
    use dualwrite_common::catalog::Compression;
    let chunks: Vec<&UnitReport> = t
        .units
        .iter()
        .filter(|u| u.source_compression.is_some() || u.target_compression.is_some())
        .collect();
    if chunks.is_empty() {
        return None;
    }
    let count = |f: &dyn Fn(&UnitReport) -> Option<Compression>, c: Compression| {
        chunks.iter().filter(|u| f(u) == Some(c)).count()
    };
    let differ: Vec<String> = chunks
        .iter()
        .filter(|u| {
            // Compressed on the source (even with rows added since): fully on the target.
            let want = u.source_compression.unwrap_or(Compression::None) != Compression::None;
            let have = u.target_compression.unwrap_or(Compression::None);
            if want {
                have != Compression::Full
            } else {
                have != Compression::None
            }
        })
        .map(|u| {
            format!(
                "{} ({} -> {})",
                u.label,
                u.source_compression.unwrap_or(Compression::None).word(),
                u.target_compression.unwrap_or(Compression::None).word()
            )
        })
        .collect();
    let mut line = format!(
        "  compression: source {} of {} chunks compressed; target {} compressed, {} partially",
        count(&|u| u.source_compression, Compression::Full)
            + count(&|u| u.source_compression, Compression::Partial),
        chunks.len(),
        count(&|u| u.target_compression, Compression::Full),
        count(&|u| u.target_compression, Compression::Partial),
    );
    if differ.is_empty() {
        line.push_str("; every chunk as on the source");
    } else {
        line.push_str(&format!(
            "; {} differ ({}{}; `dualwrite-backfill compress` fixes them)",
            differ.len(),
            differ
                .iter()
                .take(5)
                .cloned()
                .collect::<Vec<_>>()
                .join(", "),
            if differ.len() > 5 { ", ..." } else { "" }
        ));
    }
    Some(line)
}

fn row_line(t: &TableReport, r: &RowDiff) -> String {
    let key = t
        .key_columns
        .iter()
        .zip(&r.key)
        .map(|(c, v)| format!("{c}={}", value(v)))
        .collect::<Vec<_>>()
        .join(", ");
    let row = |vals: &Option<Vec<Option<String>>>| -> String {
        vals.as_ref()
            .map(|vs| {
                t.columns
                    .iter()
                    .zip(vs)
                    .map(|(c, v)| format!("{c}={}", value(v)))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default()
    };
    match r.kind {
        RowDiffKind::Missing => format!("missing on target  {}", row(&r.source)),
        RowDiffKind::Extra => format!("extra on target    {}", row(&r.target)),
        RowDiffKind::Changed => {
            let cols = r
                .changed_columns
                .iter()
                .map(|c| {
                    let i = t.columns.iter().position(|x| x == c);
                    let get = |side: &Option<Vec<Option<String>>>| {
                        i.and_then(|i| side.as_ref().map(|v| value(&v[i])))
                            .unwrap_or_default()
                    };
                    format!("{c}: {} -> {}", get(&r.source), get(&r.target))
                })
                .collect::<Vec<_>>()
                .join("; ");
            format!("changed            {key}: {cols}")
        }
    }
}

fn range(u: &UnitReport) -> String {
    format!(
        "{} .. {}",
        u.start.as_deref().unwrap_or("-inf"),
        u.end.as_deref().unwrap_or("+inf")
    )
}

/// Plain text for people.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    let mode = match (&report.command, &report.digest) {
        (CommandKind::Checksum, Some(d)) => format!("checksum ({d} digest)"),
        _ => report.mode.clone(),
    };
    let _ = writeln!(out, "dualwrite-validator {mode}");
    let _ = writeln!(
        out,
        "  source {}\n  target {}",
        report.source, report.target
    );
    if report.from.is_some() || report.until.is_some() {
        let _ = writeln!(
            out,
            "  range  [{}, {})",
            report.from.as_deref().unwrap_or("-inf"),
            report.until.as_deref().unwrap_or("+inf")
        );
    }
    if let Some(tol) = report.tolerance {
        let _ = writeln!(
            out,
            "  ESTIMATE: counts come from the catalog after ANALYZE; equal within {:.1}% is reported as within tolerance",
            tol * 100.0
        );
    }
    for n in &report.notes {
        let _ = writeln!(out, "  note: {n}");
    }
    for t in &report.tables {
        let _ = writeln!(
            out,
            "\n{} ({}, time column {}): {} units, {} differ",
            t.table, t.kind, t.time_column, t.units_total, t.units_differing
        );
        for n in &t.notes {
            let _ = writeln!(out, "  note: {n}");
        }
        if let Some(line) = compression_line(t) {
            let _ = writeln!(out, "{line}");
        }
        if let Some(s) = &t.suggestion {
            match &s.candidate {
                Some(c) => {
                    let _ = writeln!(
                        out,
                        "  candidate T: {c}  (confidence {}, bucket {})",
                        s.confidence, s.bucket
                    );
                }
                None => {
                    let _ = writeln!(out, "  no candidate T (bucket {})", s.bucket);
                }
            }
            let _ = writeln!(out, "  why: {}", s.reason);
        }
        let mut units: Vec<&UnitReport> = t.units.iter().collect();
        // suggest-t reads best in time order (the transition is the evidence); else mismatches first.
        let suggest = report.command == CommandKind::SuggestT;
        if !suggest {
            units.sort_by_key(|u| u.status);
        }
        // suggest-t over months in fine buckets has thousands of them: long runs of one status
        // show their first and last buckets and a line for the rest.
        let mut elided: Vec<(usize, String)> = Vec::new();
        let shown: Vec<&UnitReport> = if suggest {
            let mut kept = Vec::new();
            let mut i = 0;
            while i < units.len() {
                let mut j = i;
                while j < units.len() && units[j].status == units[i].status {
                    j += 1;
                }
                let run = &units[i..j];
                if run.len() > 2 * SUGGEST_RUN_EDGE + 1 {
                    kept.extend_from_slice(&run[..SUGGEST_RUN_EDGE]);
                    let middle = &run[SUGGEST_RUN_EDGE..run.len() - SUGGEST_RUN_EDGE];
                    let first = middle.first().map(|u| u.start.clone()).unwrap_or_default();
                    let last = middle.last().map(|u| u.end.clone()).unwrap_or_default();
                    elided.push((
                        kept.len(),
                        format!(
                            "  ... {} more {} buckets from {} to {} (source {} rows, target {} rows; --format json lists every bucket)",
                            middle.len(),
                            match units[i].status {
                                Status::Equal => "equal",
                                Status::WithinTolerance => "within-tolerance",
                                Status::Differ => "differing",
                            },
                            first.as_deref().unwrap_or("-infinity"),
                            last.as_deref().unwrap_or("+infinity"),
                            middle.iter().map(|u| u.source_rows).sum::<i64>(),
                            middle.iter().map(|u| u.target_rows).sum::<i64>(),
                        ),
                    ));
                    kept.extend_from_slice(&run[run.len() - SUGGEST_RUN_EDGE..]);
                } else {
                    kept.extend_from_slice(run);
                }
                i = j;
            }
            kept
        } else {
            units
                .iter()
                .copied()
                .filter(|u| u.status != Status::Equal)
                .chain(
                    units
                        .iter()
                        .copied()
                        .filter(|u| u.status == Status::Equal)
                        .take(MAX_EQUAL_LISTED),
                )
                .collect()
        };
        let hidden = if suggest {
            0
        } else {
            units.len() - shown.len()
        };
        let headers = [
            "unit",
            "range",
            "source rows",
            "target rows",
            "difference",
            "status",
        ];
        let cells: Vec<[String; 6]> = shown
            .iter()
            .map(|u| {
                [
                    u.label.clone(),
                    range(u),
                    u.source_rows.to_string(),
                    u.target_rows.to_string(),
                    format!("{:+}", u.difference),
                    u.status.word().to_string(),
                ]
            })
            .collect();
        let mut w = headers.map(str::len);
        for c in &cells {
            for (i, v) in c.iter().enumerate() {
                w[i] = w[i].max(v.chars().count());
            }
        }
        let line = |c: &[String; 6]| {
            format!(
                "  {:<w0$}  {:<w1$}  {:>w2$}  {:>w3$}  {:>w4$}  {}",
                c[0],
                c[1],
                c[2],
                c[3],
                c[4],
                c[5],
                w0 = w[0],
                w1 = w[1],
                w2 = w[2],
                w3 = w[3],
                w4 = w[4]
            )
        };
        let _ = writeln!(out, "{}", line(&headers.map(String::from)).trim_end());
        for (k, (u, c)) in shown.iter().zip(&cells).enumerate() {
            for (_, text) in elided.iter().filter(|(at, _)| *at == k) {
                let _ = writeln!(out, "{text}");
            }
            let _ = writeln!(out, "{}", line(c).trim_end());
            if u.status == Status::Differ
                && u.source_digest.is_some()
                && u.source_rows == u.target_rows
            {
                let _ = writeln!(
                    out,
                    "      same row count, different content (digest {} vs {})",
                    u.source_digest.as_deref().unwrap_or(""),
                    u.target_digest.as_deref().unwrap_or("")
                );
            }
            for r in &u.rows {
                let _ = writeln!(out, "      {}", row_line(t, r));
            }
            if u.rows_truncated {
                let _ = writeln!(out, "      ... more differing rows (raise --max-rows)");
            }
        }
        if hidden > 0 {
            let _ = writeln!(
                out,
                "  ... {hidden} more equal units (--format json lists every unit)"
            );
        }
    }
    let s = &report.summary;
    if report.command == CommandKind::SuggestT {
        let found = report
            .tables
            .iter()
            .filter(|t| t.suggestion.as_ref().is_some_and(|g| g.candidate.is_some()))
            .count();
        let _ = writeln!(
            out,
            "\nsummary: a candidate T for {found} of {} tables; {:.2}s",
            s.tables, report.elapsed_seconds
        );
        return out;
    }
    let _ = writeln!(
        out,
        "\nsummary: {}: {} tables, {} units, {} differ; source {} rows, target {} rows ({:+}){}; {:.2}s",
        match s.status {
            Status::Equal => "EQUAL",
            Status::WithinTolerance => "EQUAL WITHIN TOLERANCE (estimate)",
            Status::Differ => "DIFFERENCES FOUND",
        },
        s.tables,
        s.units,
        s.units_differing,
        s.source_rows,
        s.target_rows,
        s.target_rows - s.source_rows,
        if s.rows_listed > 0 { format!(", {} differing rows listed", s.rows_listed) } else { String::new() },
        report.elapsed_seconds
    );
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::report::{Suggestion, Summary};

    /// A report with one differing unit holding each kind of row difference.
    pub(crate) fn sample() -> Report {
        let unit = |label: &str, s: i64, t: i64, status: Status| UnitReport {
            label: label.into(),
            relation: format!("public.{label}"),
            start: Some("2024-01-01 00:00:00+00".into()),
            end: Some("2024-01-02 00:00:00+00".into()),
            start_value: Some(1_704_067_200_000_000),
            end_value: Some(1_704_153_600_000_000),
            source_rows: s,
            target_rows: t,
            difference: t - s,
            status,
            estimated: false,
            source_digest: None,
            target_digest: None,
            rows: Vec::new(),
            rows_truncated: false,
            source_compression: None,
            target_compression: None,
        };
        let mut bad = unit("m_1", 3, 2, Status::Differ);
        let v = |x: &str| Some(x.to_string());
        bad.rows = vec![
            RowDiff {
                kind: RowDiffKind::Missing,
                key: vec![v("1")],
                source: Some(vec![v("1"), v("a|b")]),
                target: None,
                changed_columns: vec![],
            },
            RowDiff {
                kind: RowDiffKind::Changed,
                key: vec![v("2")],
                source: Some(vec![v("2"), v("")]),
                target: Some(vec![v("2"), None]),
                changed_columns: vec!["label".into()],
            },
        ];
        let mut good = unit("m_0", 5, 5, Status::Equal);
        good.start_value = Some(1_703_980_800_000_000);
        let mut r = Report {
            schema_version: 1,
            command: CommandKind::Checksum,
            mode: "checksum".into(),
            digest: Some("typed".into()),
            tolerance: None,
            source: "postgres://u:***@s:5432/db?sslmode=prefer".into(),
            target: "postgres://u:***@t:5432/db?sslmode=prefer".into(),
            from: None,
            until: None,
            started_at: "2024-03-01T00:00:00Z".into(),
            elapsed_seconds: 0.5,
            summary: Summary {
                status: Status::Equal,
                tables: 0,
                units: 0,
                units_differing: 0,
                source_rows: 0,
                target_rows: 0,
                rows_listed: 0,
            },
            tables: vec![TableReport {
                table: "public.m".into(),
                time_column: "ts".into(),
                time_type: "timestamptz".into(),
                kind: "partitioned".into(),
                status: Status::Equal,
                source_rows: 0,
                target_rows: 0,
                units_total: 0,
                units_differing: 0,
                columns: vec!["id".into(), "label".into()],
                key_columns: vec!["id".into()],
                units: vec![good, bad],
                notes: vec![],
                suggestion: None::<Suggestion>,
            }],
            notes: vec![],
        };
        r.finish();
        r
    }

    #[test]
    fn mismatches_first_and_rows_listed() {
        let r = sample();
        assert_eq!(r.exit_code(), 1);
        assert_eq!(r.summary.units_differing, 1);
        assert_eq!(r.summary.rows_listed, 2);
        let text = render(&r);
        let m1 = text.find("m_1").unwrap();
        let m0 = text.find("m_0").unwrap();
        assert!(m1 < m0, "{text}");
        assert!(
            text.contains("missing on target  id=\"1\", label=\"a|b\""),
            "{text}"
        );
        assert!(
            text.contains("changed            id=\"2\": label: \"\" -> NULL"),
            "{text}"
        );
        assert!(text.contains("summary: DIFFERENCES FOUND"), "{text}");
    }

    #[test]
    fn json_schema_fields() {
        let v: serde_json::Value =
            serde_json::from_str(&crate::report::json::render(&sample()).unwrap()).unwrap();
        assert_eq!(v["schema_version"], 1);
        assert_eq!(v["command"], "checksum");
        assert_eq!(v["summary"]["status"], "differ");
        let unit = &v["tables"][0]["units"][1];
        assert_eq!(unit["label"], "m_1");
        assert_eq!(unit["difference"], -1);
        assert_eq!(unit["rows"][0]["kind"], "missing");
        assert_eq!(unit["rows"][1]["target"][1], serde_json::Value::Null);
        assert_eq!(unit["rows"][1]["changed_columns"][0], "label");
    }
}
