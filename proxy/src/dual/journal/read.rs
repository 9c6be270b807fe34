//! Reading the journal back: every whole record, and where a torn tail begins.

use super::*;

/// Read every complete, valid record. A torn last frame is reported, not returned.
pub fn read_records(dir: &Path) -> Result<(Vec<Record>, ReadReport), JournalError> {
    let path = log_path(dir);
    let mut data = Vec::new();
    match std::fs::File::open(&path) {
        Ok(mut f) => {
            f.read_to_end(&mut data).map_err(io_err(&path))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok((Vec::new(), ReadReport::default()))
        }
        Err(e) => return Err(io_err(&path)(e)),
    }
    let (records, report) = parse(&data).map_err(|(offset, reason)| JournalError::Corrupt {
        path: path.display().to_string(),
        offset,
        reason,
    })?;
    Ok((records, report))
}

/// Parse frames; `Err((offset, reason))` for corruption before the end.
pub(super) fn parse(data: &[u8]) -> Result<(Vec<Record>, ReadReport), (u64, String)> {
    let mut records = Vec::new();
    let mut pos = 0usize;
    while pos < data.len() {
        let bad =
            |reason: String, end: usize| -> Result<(Vec<Record>, ReadReport), (u64, String)> {
                if end >= data.len() {
                    // Nothing valid can follow: a torn tail.
                    Ok((Vec::new(), ReadReport::default()))
                } else {
                    Err((pos as u64, reason))
                }
            };
        if data.len() - pos < HEADER {
            break;
        }
        if &data[pos..pos + 4] != MAGIC {
            bad("bad magic".into(), pos + HEADER)?;
            break;
        }
        let len = u32::from_be_bytes([data[pos + 4], data[pos + 5], data[pos + 6], data[pos + 7]])
            as usize;
        let crc =
            u32::from_be_bytes([data[pos + 8], data[pos + 9], data[pos + 10], data[pos + 11]]);
        if len > MAX_RECORD {
            bad(format!("record length {len}"), data.len())?;
            break;
        }
        let end = pos + HEADER + len;
        if end > data.len() {
            break;
        }
        let payload = &data[pos + HEADER..end];
        if crc32fast::hash(payload) != crc {
            bad("checksum mismatch".into(), end)?;
            break;
        }
        match serde_json::from_slice::<Record>(payload) {
            Ok(r) => records.push(r),
            Err(e) => {
                bad(format!("undecodable record: {e}"), end)?;
                break;
            }
        }
        pos = end;
    }
    let report = ReadReport {
        torn_tail_bytes: (data.len() - pos) as u64,
        valid_len: pos as u64,
    };
    Ok((records, report))
}
