//! The report for a terminal: per table, a table of units with mismatches first, the
//! differing rows under their unit, and a summary line.

use std::fmt::Write;

use super::{CommandKind, Report, RowDiff, RowDiffKind, Status, TableReport, UnitReport};

/// Equal units listed per table before the rest are summarised in one line.
const MAX_EQUAL_LISTED: usize = 40;

fn value(v: &Option<String>) -> String {
    match v {
        Some(s) => format!("{s:?}"),
        None => "NULL".into(),
    }
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
        RowDiffKind::Missing => format!("missing on target  {key}: {}", row(&r.source)),
        RowDiffKind::Extra => format!("extra on target    {key}: {}", row(&r.target)),
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
        units.sort_by_key(|u| u.status);
        let shown: Vec<&UnitReport> = units
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
            .collect();
        let hidden = units.len() - shown.len();
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
        for (u, c) in shown.iter().zip(&cells) {
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
