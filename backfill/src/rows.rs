//! Counting rows in a COPY stream as it passes, chunk by chunk, without buffering it: for
//! live progress and throttling. The exact count comes from the target when the COPY ends.

/// A row counter for one COPY stream.
#[derive(Debug)]
pub enum RowCounter {
    /// Text format: one row per newline (newlines inside values are escaped as `\n`).
    Text,
    /// Binary format: walks tuple headers and field lengths, skipping field data.
    Binary(BinaryRows),
}

impl RowCounter {
    /// A counter for the format.
    pub fn new(binary: bool) -> RowCounter {
        if binary {
            RowCounter::Binary(BinaryRows::default())
        } else {
            RowCounter::Text
        }
    }

    /// Rows that start in `chunk`.
    pub fn feed(&mut self, chunk: &[u8]) -> u64 {
        match self {
            RowCounter::Text => chunk.iter().filter(|&&b| b == b'\n').count() as u64,
            RowCounter::Binary(b) => b.feed(chunk),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Signature (11 bytes) and flags (4 bytes) still to skip.
    Signature(usize),
    /// Reading the header extension's length.
    ExtensionLength,
    /// Skipping this many bytes (header extension or field data).
    Skip(u64),
    /// Reading a tuple's field count (-1 ends the data).
    FieldCount,
    /// Reading a field's length (-1 is NULL).
    FieldLength,
    /// The trailer was seen.
    Done,
}

/// State of a binary COPY stream walk (see the COPY documentation, "Binary Format").
#[derive(Debug)]
pub struct BinaryRows {
    state: State,
    int: [u8; 4],
    have: usize,
    fields_left: u16,
}

impl Default for BinaryRows {
    fn default() -> Self {
        BinaryRows {
            state: State::Signature(15),
            int: [0; 4],
            have: 0,
            fields_left: 0,
        }
    }
}

impl BinaryRows {
    /// Read a big-endian integer of `width` bytes that may straddle chunks.
    fn take_int(&mut self, data: &mut &[u8], width: usize) -> Option<i32> {
        let n = (width - self.have).min(data.len());
        self.int[self.have..self.have + n].copy_from_slice(&data[..n]);
        self.have += n;
        *data = &data[n..];
        if self.have < width {
            return None;
        }
        self.have = 0;
        Some(if width == 2 {
            i32::from(i16::from_be_bytes([self.int[0], self.int[1]]))
        } else {
            i32::from_be_bytes(self.int)
        })
    }

    fn after_field(&self) -> State {
        if self.fields_left > 0 {
            State::FieldLength
        } else {
            State::FieldCount
        }
    }

    /// Rows whose header is in `data`.
    pub fn feed(&mut self, mut data: &[u8]) -> u64 {
        let mut rows = 0;
        while !data.is_empty() {
            match self.state {
                State::Signature(n) => {
                    let k = n.min(data.len());
                    data = &data[k..];
                    self.state = if k == n {
                        State::ExtensionLength
                    } else {
                        State::Signature(n - k)
                    };
                }
                State::Skip(n) => {
                    let k = (n.min(data.len() as u64)) as usize;
                    data = &data[k..];
                    self.state = if k as u64 == n {
                        self.after_field()
                    } else {
                        State::Skip(n - k as u64)
                    };
                }
                State::ExtensionLength => {
                    if let Some(len) = self.take_int(&mut data, 4) {
                        self.fields_left = 0;
                        self.state = State::Skip(len.max(0) as u64);
                    }
                }
                State::FieldCount => {
                    if let Some(count) = self.take_int(&mut data, 2) {
                        if count < 0 {
                            self.state = State::Done;
                        } else {
                            rows += 1;
                            self.fields_left = count as u16;
                            self.state = self.after_field();
                        }
                    }
                }
                State::FieldLength => {
                    if let Some(len) = self.take_int(&mut data, 4) {
                        self.fields_left -= 1;
                        self.state = if len > 0 {
                            State::Skip(len as u64)
                        } else {
                            self.after_field()
                        };
                    }
                }
                State::Done => break,
            }
        }
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(rows: &[&[Option<&[u8]>]]) -> Vec<u8> {
        let mut out = b"PGCOPY\n\xff\r\n\0".to_vec();
        out.extend_from_slice(&0u32.to_be_bytes());
        out.extend_from_slice(&3u32.to_be_bytes());
        out.extend_from_slice(b"ext");
        for r in rows {
            out.extend_from_slice(&(r.len() as i16).to_be_bytes());
            for f in *r {
                match f {
                    None => out.extend_from_slice(&(-1i32).to_be_bytes()),
                    Some(v) => {
                        out.extend_from_slice(&(v.len() as i32).to_be_bytes());
                        out.extend_from_slice(v);
                    }
                }
            }
        }
        out.extend_from_slice(&(-1i16).to_be_bytes());
        out
    }

    #[test]
    fn counts_binary_rows_in_any_chunking() {
        let data = stream(&[
            &[Some(b"abc"), None, Some(b"")],
            &[Some(b"\xff\xff\xff\xff\x00\x01")],
            &[],
            &[None, Some(b"x")],
        ]);
        for size in [1, 2, 3, 5, 7, 64, data.len()] {
            let mut c = RowCounter::new(true);
            let n: u64 = data.chunks(size).map(|ch| c.feed(ch)).sum();
            assert_eq!(n, 4, "chunk size {size}");
        }
    }

    #[test]
    fn counts_text_rows() {
        let mut c = RowCounter::new(false);
        assert_eq!(c.feed(b"1\ta\\nb\n2\t\\N\n"), 2);
    }
}
