//! Knowing when a client is sending COPY data in the extended protocol.
//!
//! libpq and tokio-postgres send `Bind, Execute, Sync` for `COPY ... FROM STDIN` before any
//! data; the server ignores Sync and Flush while it is in copy-in mode, so that Sync gets no
//! ReadyForQuery of its own. The relay marks such Syncs so its one-answer-per-Sync accounting
//! stays right.

use std::collections::HashSet;

use crate::wire::protocol::{cstr, frontend as f};

#[derive(Default)]
pub struct CopyTracker {
    /// Prepared statements that are `COPY ... FROM STDIN`.
    statements: HashSet<String>,
    /// Portals bound to such statements.
    portals: HashSet<String>,
    /// An Execute of a COPY-FROM portal was sent and no CopyDone/CopyFail yet.
    active: bool,
}

/// Whether `sql` starts with COPY (after whitespace and comments); only then is it classified.
fn starts_with_copy(sql: &[u8]) -> bool {
    let mut s = sql;
    loop {
        while let Some((c, rest)) = s.split_first() {
            if c.is_ascii_whitespace() || *c == b'(' {
                s = rest;
            } else {
                break;
            }
        }
        if s.starts_with(b"--") {
            s = s
                .iter()
                .position(|c| *c == b'\n')
                .map(|i| &s[i..])
                .unwrap_or(&[]);
        } else if s.starts_with(b"/*") {
            s = s
                .windows(2)
                .position(|w| w == b"*/")
                .map(|i| &s[i + 2..])
                .unwrap_or(&[]);
        } else {
            break;
        }
    }
    s.len() >= 4 && s[..4].eq_ignore_ascii_case(b"copy")
}

impl CopyTracker {
    pub fn active(&self) -> bool {
        self.active
    }

    /// Feed a whole client frame's tag and body.
    pub fn message(&mut self, tag: u8, body: &[u8]) {
        match tag {
            f::PARSE => {
                if let Some((name, rest)) = cstr(body) {
                    let name = String::from_utf8_lossy(name).into_owned();
                    let text = cstr(rest).map(|(t, _)| t).unwrap_or(rest);
                    if starts_with_copy(text)
                        && crate::dual::classify::classify(&String::from_utf8_lossy(text))
                            .copy_from_stdin
                    {
                        self.statements.insert(name);
                    } else if !self.statements.is_empty() {
                        self.statements.remove(&name);
                    }
                }
            }
            f::BIND if !self.statements.is_empty() || !self.portals.is_empty() => {
                if let Some((portal, rest)) = cstr(body) {
                    let stmt = cstr(rest).map(|(s, _)| s).unwrap_or_default();
                    let portal = String::from_utf8_lossy(portal).into_owned();
                    if self
                        .statements
                        .contains(String::from_utf8_lossy(stmt).as_ref())
                    {
                        self.portals.insert(portal);
                    } else {
                        self.portals.remove(&portal);
                    }
                }
            }
            f::EXECUTE if !self.portals.is_empty() => {
                let portal = cstr(body)
                    .map(|(p, _)| String::from_utf8_lossy(p).into_owned())
                    .unwrap_or_default();
                if self.portals.contains(&portal) {
                    self.active = true;
                }
            }
            f::COPY_DONE | f::COPY_FAIL => self.active = false,
            f::COPY_DATA | f::SYNC | f::FLUSH => {}
            // Anything else means the COPY never started (the server refused it).
            _ => self.active = false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_prefix() {
        assert!(starts_with_copy(b"  /* x */ -- y\n COPY t FROM STDIN"));
        assert!(starts_with_copy(b"copy t from stdin"));
        assert!(!starts_with_copy(b"SELECT 'copy'"));
    }
}
