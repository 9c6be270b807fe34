//! The report as one self-contained HTML page (inline CSS and script, no external assets):
//! per table a heat strip of units over time coloured by status, the differing units and rows.

use std::fmt::Write;

use super::{Report, RowDiffKind, Status, TableReport, UnitReport};

/// Escape text for HTML content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn class(s: Status) -> &'static str {
    match s {
        Status::Equal => "equal",
        Status::WithinTolerance => "tolerance",
        Status::Differ => "differ",
    }
}

const STYLE: &str = "
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#1d1d1f;background:#fff}
h1{font-size:20px;margin:0 0 4px} h2{font-size:16px;margin:28px 0 6px}
.meta{color:#555;margin:0 0 2px}
.banner{padding:10px 14px;border-radius:6px;font-weight:600;margin:14px 0}
.banner.equal{background:#e3f5e8;color:#145c2c}.banner.differ{background:#fde4e4;color:#8a1111}
.banner.tolerance{background:#fff4d6;color:#7a5500}
.strip{position:relative;height:34px;background:#f0f0f0;border-radius:4px;overflow:hidden;margin:6px 0 2px}
.cell{position:absolute;top:0;bottom:0;border-right:1px solid #fff;box-sizing:border-box;min-width:3px}
.cell.equal{background:#2e9d4f}.cell.differ{background:#d62728}.cell.tolerance{background:#e0a800}
.mark{position:absolute;top:-2px;bottom:-2px;width:3px;margin-left:-1px;background:#1d1d1f}
.axis{display:flex;justify-content:space-between;color:#666;font-size:12px}
.legend span{display:inline-block;width:12px;height:12px;margin:0 4px 0 12px;vertical-align:middle}
table{border-collapse:collapse;margin:8px 0;font-size:13px}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}
td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.differ td{background:#fff0f0} .st-differ{color:#b00;font-weight:600}
.rows td{font-family:ui-monospace,monospace;font-size:12px;white-space:pre-wrap;max-width:28em;overflow-wrap:anywhere}
.null,.empty{color:#888}
.k-missing{color:#b00}.k-extra{color:#7a3fb0}.k-changed{color:#b36b00}
.note{color:#555;font-style:italic}
";

const CHECK_SCRIPT: &str = "
(function(){var n=0;document.querySelectorAll('.cell.differ').forEach(function(c){var r=c.getBoundingClientRect();if(r.width>0&&r.height>0){n++;}});
var e=document.getElementById('render-check');if(e){e.textContent='rendered: '+n+' differing units visible';e.setAttribute('data-visible-differing',String(n));}})();
";

fn range(u: &UnitReport) -> String {
    format!(
        "{} .. {}",
        u.start.as_deref().unwrap_or("-inf"),
        u.end.as_deref().unwrap_or("+inf")
    )
}

fn strip(out: &mut String, t: &TableReport) {
    let bounded: Vec<&UnitReport> = t
        .units
        .iter()
        .filter(|u| u.start_value.is_some() && u.end_value.is_some())
        .collect();
    let unbounded: Vec<&UnitReport> = t
        .units
        .iter()
        .filter(|u| u.start_value.is_none() || u.end_value.is_none())
        .collect();
    let lo = bounded
        .iter()
        .filter_map(|u| u.start_value)
        .min()
        .unwrap_or(0);
    let hi = bounded
        .iter()
        .filter_map(|u| u.end_value)
        .max()
        .unwrap_or(1);
    let span = (hi - lo).max(1) as f64;
    // Unbounded units (default partitions) get a fixed slot at the right end.
    let share = if unbounded.is_empty() { 100.0 } else { 92.0 };
    let _ = writeln!(
        out,
        "<div class=\"strip\" data-table=\"{}\">",
        escape(&t.table)
    );
    let title = |u: &UnitReport| {
        escape(&format!(
            "{} [{}]: source {}, target {}, {}",
            u.label,
            range(u),
            u.source_rows,
            u.target_rows,
            u.status.word()
        ))
    };
    for u in &bounded {
        let (a, b) = (u.start_value.unwrap_or(lo), u.end_value.unwrap_or(hi));
        let left = (a - lo) as f64 / span * share;
        let width = ((b - a) as f64 / span * share).max(0.25);
        let _ = writeln!(
            out,
            "<div class=\"cell {}\" style=\"left:{left:.3}%;width:{width:.3}%\" title=\"{}\" data-unit=\"{}\"></div>",
            class(u.status),
            title(u),
            escape(&u.label)
        );
    }
    let n = unbounded.len().max(1) as f64;
    for (i, u) in unbounded.iter().enumerate() {
        let width = (100.0 - share) / n;
        let left = share + width * i as f64;
        let _ = writeln!(
            out,
            "<div class=\"cell {}\" style=\"left:{left:.3}%;width:{width:.3}%\" title=\"{}\" data-unit=\"{}\"></div>",
            class(u.status),
            title(u),
            escape(&u.label)
        );
    }
    if let Some(c) = t.suggestion.as_ref().and_then(|g| g.candidate_value) {
        if c >= lo && c <= hi {
            let left = (c - lo) as f64 / span * share;
            let _ = writeln!(
                out,
                "<div class=\"mark\" style=\"left:{left:.3}%\" title=\"candidate T\"></div>"
            );
        }
    }
    let _ = writeln!(out, "</div>");
    let first = bounded
        .iter()
        .filter_map(|u| u.start.clone())
        .next()
        .unwrap_or_default();
    let last = bounded
        .iter()
        .filter_map(|u| u.end.clone())
        .next_back()
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "<div class=\"axis\"><span>{}</span><span>{}</span></div>",
        escape(&first),
        escape(&if unbounded.is_empty() {
            last
        } else {
            format!("{last} | default / unbounded")
        })
    );
}

fn value(v: &Option<String>) -> String {
    match v {
        Some(s) if s.is_empty() => "<i class=\"empty\">''</i>".into(),
        Some(s) => escape(s),
        None => "<i class=\"null\">NULL</i>".into(),
    }
}

fn rows_table(out: &mut String, t: &TableReport) {
    let rows: Vec<(&UnitReport, &super::RowDiff)> = t
        .units
        .iter()
        .flat_map(|u| u.rows.iter().map(move |r| (u, r)))
        .collect();
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "<h3>Differing rows</h3><table class=\"rows\"><tr><th>unit</th><th>kind</th><th>side</th>"
    );
    for c in &t.columns {
        let _ = write!(out, "<th>{}</th>", escape(c));
    }
    let _ = writeln!(out, "</tr>");
    for (u, r) in rows {
        let kind = match r.kind {
            RowDiffKind::Missing => "missing on target",
            RowDiffKind::Extra => "extra on target",
            RowDiffKind::Changed => "changed",
        };
        let kclass = match r.kind {
            RowDiffKind::Missing => "k-missing",
            RowDiffKind::Extra => "k-extra",
            RowDiffKind::Changed => "k-changed",
        };
        for (side, vals) in [("source", &r.source), ("target", &r.target)] {
            let Some(vals) = vals else { continue };
            let _ = write!(
                out,
                "<tr><td>{}</td><td class=\"{kclass}\">{kind}</td><td>{side}</td>",
                escape(&u.label)
            );
            for (c, v) in t.columns.iter().zip(vals) {
                let mark = if r.changed_columns.contains(c) {
                    " style=\"background:#ffe3b3\""
                } else {
                    ""
                };
                let _ = write!(out, "<td{mark}>{}</td>", value(v));
            }
            let _ = writeln!(out, "</tr>");
        }
    }
    let _ = writeln!(out, "</table>");
}

fn units_table(out: &mut String, units: &[&UnitReport]) {
    let _ = writeln!(out, "<table><tr><th>unit</th><th>range</th><th>source rows</th><th>target rows</th><th>difference</th><th>status</th></tr>");
    for u in units {
        let _ = writeln!(
            out,
            "<tr class=\"{}\"><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{:+}</td><td class=\"st-{}\">{}</td></tr>",
            class(u.status),
            escape(&u.label),
            escape(&range(u)),
            u.source_rows,
            u.target_rows,
            u.difference,
            class(u.status),
            u.status.word()
        );
    }
    let _ = writeln!(out, "</table>");
}

/// A complete HTML document.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>dualwrite-validator {}</title><style>{STYLE}</style></head><body>", escape(&report.mode));
    let _ = writeln!(
        out,
        "<h1>dualwrite-validator: {}</h1>",
        escape(&report.mode)
    );
    let _ = writeln!(
        out,
        "<p class=\"meta\">source {}</p><p class=\"meta\">target {}</p>",
        escape(&report.source),
        escape(&report.target)
    );
    if report.from.is_some() || report.until.is_some() {
        let _ = writeln!(
            out,
            "<p class=\"meta\">range [{}, {})</p>",
            escape(report.from.as_deref().unwrap_or("-inf")),
            escape(report.until.as_deref().unwrap_or("+inf"))
        );
    }
    let _ = writeln!(
        out,
        "<p class=\"meta\">started {} · {:.2}s</p>",
        escape(&report.started_at),
        report.elapsed_seconds
    );
    if let Some(tol) = report.tolerance {
        let _ = writeln!(out, "<p class=\"note\">Counts are catalog estimates after ANALYZE; a difference within {:.1}% is shown as within tolerance.</p>", tol * 100.0);
    }
    let s = &report.summary;
    let _ = writeln!(
        out,
        "<div class=\"banner {}\" id=\"summary\">{}: {} tables, {} units, {} differ; source {} rows, target {} rows ({:+})</div>",
        class(s.status),
        match s.status {
            Status::Equal => "Equal",
            Status::WithinTolerance => "Equal within tolerance (estimate)",
            Status::Differ => "Differences found",
        },
        s.tables, s.units, s.units_differing, s.source_rows, s.target_rows, s.target_rows - s.source_rows
    );
    let _ = writeln!(out, "<p class=\"legend\">Each strip is one table, units laid out over time:<span style=\"background:#2e9d4f\"></span>equal<span style=\"background:#d62728\"></span>differs<span style=\"background:#e0a800\"></span>within tolerance</p>");
    let _ = writeln!(out, "<p id=\"render-check\" class=\"note\"></p>");
    for n in &report.notes {
        let _ = writeln!(out, "<p class=\"note\">{}</p>", escape(n));
    }
    let mut tables: Vec<&TableReport> = report.tables.iter().collect();
    tables.sort_by_key(|t| t.status);
    for t in tables {
        let _ = writeln!(
            out,
            "<section class=\"table {}\"><h2>{} <small>({}, time column {}) · {} units, {} differ</small></h2>",
            class(t.status),
            escape(&t.table),
            escape(&t.kind),
            escape(&t.time_column),
            t.units_total,
            t.units_differing
        );
        if let Some(sg) = &t.suggestion {
            let _ = writeln!(
                out,
                "<p><b>Candidate T: {}</b> (confidence {}, bucket {}). {}</p>",
                escape(sg.candidate.as_deref().unwrap_or("none")),
                escape(&sg.confidence),
                escape(&sg.bucket),
                escape(&sg.reason)
            );
        }
        strip(&mut out, t);
        for n in &t.notes {
            let _ = writeln!(out, "<p class=\"note\">{}</p>", escape(n));
        }
        let differing: Vec<&UnitReport> = t
            .units
            .iter()
            .filter(|u| u.status != Status::Equal)
            .collect();
        if !differing.is_empty() {
            let _ = writeln!(out, "<h3>Units that differ</h3>");
            units_table(&mut out, &differing);
        }
        rows_table(&mut out, t);
        let all: Vec<&UnitReport> = t.units.iter().collect();
        let _ = writeln!(out, "<details><summary>All {} units</summary>", all.len());
        units_table(&mut out, &all);
        let _ = writeln!(out, "</details></section>");
    }
    let _ = writeln!(out, "<script>{CHECK_SCRIPT}</script></body></html>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_contained_page() {
        let html = render(&crate::report::text::tests::sample());
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(html.contains("class=\"cell differ\""));
        assert!(html.contains("data-unit=\"m_1\""));
        assert!(html.contains("a|b"));
        assert!(html.contains("<i class=\"null\">NULL</i>"));
        for needle in ["<link", "src=", "href=", "url("] {
            assert!(!html.contains(needle), "{needle}");
        }
    }

    #[test]
    fn escapes() {
        assert_eq!(
            escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
