//! Journaled wire messages for humans: `journal show` and the log.

use super::*;

/// The statements in journaled wire messages, for humans: Query text, Parse text and Bind
/// parameters (text as is, binary as hex), COPY data summarized.
pub fn describe(messages: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    let mut pos = 0;
    let mut parsed: std::collections::HashMap<String, String> = Default::default();
    let text = |b: &[u8]| {
        String::from_utf8_lossy(b.split(|c| *c == 0).next().unwrap_or_default()).into_owned()
    };
    let mut copy_bytes = 0usize;
    while pos + 5 <= messages.len() {
        let tag = messages[pos];
        let len = u32::from_be_bytes([
            messages[pos + 1],
            messages[pos + 2],
            messages[pos + 3],
            messages[pos + 4],
        ]) as usize;
        if len < 4 || pos + 1 + len > messages.len() {
            out.push("<truncated message>".into());
            break;
        }
        let body = &messages[pos + 5..pos + 1 + len];
        match tag {
            b'Q' => out.push(text(body)),
            b'P' => {
                let name = text(body);
                let rest = &body[(name.len() + 1).min(body.len())..];
                parsed.insert(name, text(rest));
            }
            b'B' => {
                let portal = text(body);
                let rest = &body[(portal.len() + 1).min(body.len())..];
                let stmt = text(rest);
                let params = bind_params(&rest[(stmt.len() + 1).min(rest.len())..]);
                let sql = parsed
                    .get(&stmt)
                    .cloned()
                    .unwrap_or_else(|| format!("<statement {stmt:?}>"));
                if params.is_empty() {
                    out.push(sql);
                } else {
                    out.push(format!("{sql}  -- parameters: {}", params.join(", ")));
                }
            }
            b'd' => copy_bytes += body.len(),
            b'c' => {
                out.push(format!("<COPY data: {copy_bytes} bytes>"));
                copy_bytes = 0;
            }
            b'f' => out.push("<COPY failed>".into()),
            _ => {}
        }
        pos += 1 + len;
    }
    out
}

/// A terminal table of records for `journal show`.
pub fn render(records: &[Record], applied: u64) -> String {
    let mut out = format!(
        "{:>6}  {:<24}  {:<10}  {:>7}  {:<20}  {:<8}  {}\n",
        "seq", "time (UTC)", "kind", "session", "user@db", "applied", "error / first statement"
    );
    for r in records {
        let time = chrono::DateTime::<chrono::Utc>::from_timestamp_micros(r.time_micros)
            .map(|t| t.format("%Y-%m-%d %H:%M:%S%.3f").to_string())
            .unwrap_or_default();
        let kind = match r.kind {
            RecordKind::Missed if r.in_doubt => "in-doubt",
            RecordKind::Missed => "missed",
            RecordKind::Divergence => "divergence",
        };
        let applied = match r.kind {
            RecordKind::Missed if r.seq <= applied => "yes",
            RecordKind::Missed => "no",
            RecordKind::Divergence => "-",
        };
        let first: String = describe(&r.messages)
            .into_iter()
            .next()
            .unwrap_or_default()
            .chars()
            .take(60)
            .collect();
        out.push_str(&format!(
            "{:>6}  {:<24}  {:<10}  {:>7}  {:<20}  {:<8}  {} | {}\n",
            r.seq,
            time,
            kind,
            r.session,
            format!("{}@{}", r.user, r.database),
            applied,
            r.error,
            first
        ));
    }
    let missed = records
        .iter()
        .filter(|r| r.kind == RecordKind::Missed)
        .count();
    let pending = records
        .iter()
        .filter(|r| r.kind == RecordKind::Missed && r.seq > applied)
        .count();
    out.push_str(&format!(
        "{} record(s): {missed} missed ({pending} not yet applied), {} divergence(s)",
        records.len(),
        records.len() - missed
    ));
    out
}

pub(super) fn bind_params(b: &[u8]) -> Vec<String> {
    let rd16 = |b: &[u8], p: usize| b.get(p..p + 2).map(|s| i16::from_be_bytes([s[0], s[1]]));
    let mut p = 0;
    let Some(nfmt) = rd16(b, p) else {
        return vec![];
    };
    p += 2;
    let mut formats = Vec::new();
    for _ in 0..nfmt.max(0) {
        formats.push(rd16(b, p).unwrap_or(0));
        p += 2;
    }
    let Some(nparams) = rd16(b, p) else {
        return vec![];
    };
    p += 2;
    let mut out = Vec::new();
    for i in 0..nparams.max(0) as usize {
        let Some(len) = b
            .get(p..p + 4)
            .map(|s| i32::from_be_bytes([s[0], s[1], s[2], s[3]]))
        else {
            break;
        };
        p += 4;
        if len < 0 {
            out.push("NULL".into());
            continue;
        }
        let Some(v) = b.get(p..p + len as usize) else {
            break;
        };
        p += len as usize;
        let fmt = match formats.len() {
            0 => 0,
            1 => formats[0],
            _ => formats.get(i).copied().unwrap_or(0),
        };
        if fmt == 0 {
            out.push(format!("'{}'", String::from_utf8_lossy(v)));
        } else {
            out.push(format!(
                "\\x{}",
                v.iter().map(|c| format!("{c:02x}")).collect::<String>()
            ));
        }
    }
    out
}
