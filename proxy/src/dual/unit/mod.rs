//! Turning a client's message stream into the units the secondary replays.
//!
//! A unit is what one ReadyForQuery answers: a simple Query, an extended-protocol batch up to
//! its Sync, or a FunctionCall. Each statement is classified once (at Query, or at Parse for a
//! prepared statement, reused by every Bind/Execute). Only what can change data or session
//! state goes into a unit's secondary steps; pure reads stay on the primary.

use std::collections::HashMap;

use bytes::{Bytes, BytesMut};

use crate::dual::classify::{self, Route, TxControl};
use crate::wire::protocol::{self, cstr, frontend as f};

/// One thing to send to the secondary.
#[derive(Debug, Clone)]
pub enum Step {
    /// A frame sent as is (Query, Execute, Close, Sync, FunctionCall).
    Raw(Bytes),
    /// A named statement the secondary should have (every named statement is prepared on both
    /// sides, so it can be executed after a cutover); sent unless it already has it.
    Parse {
        statement: String,
        generation: u64,
        parse: Bytes,
    },
    /// A Bind; the worker first sends `parse` if the secondary does not have statement
    /// `statement` at generation `generation` yet.
    Bind {
        statement: String,
        generation: u64,
        parse: Bytes,
        bind: Bytes,
    },
}

impl Step {
    pub fn len(&self) -> usize {
        match self {
            Step::Raw(b) => b.len(),
            Step::Parse { parse, .. } => parse.len(),
            Step::Bind { parse, bind, .. } => parse.len() + bind.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What the secondary gets for one unit.
#[derive(Debug, Clone, Default)]
pub struct Unit {
    pub steps: Vec<Step>,
    /// For each result the secondary will produce (one per statement of a Query, one per
    /// sent Execute), the index of the matching result in the primary's answer.
    pub results: Vec<usize>,
    /// The unit is exactly one transaction-control statement of this kind.
    pub tx: Option<TxControl>,
    /// No transaction control inside: a replay may wrap it in its own transaction.
    pub wrap_ok: bool,
    pub session_state: bool,
    /// A statement may change data or schema (see `Classification::effect`): a transaction
    /// without one has nothing to apply or journal on the secondary.
    pub effect: bool,
    /// Another statement may run in the unit's implicit transaction (see
    /// `Classification::appendable`): appended to a simple Query's text, or executed before an
    /// extended batch's Sync. Every statement of the unit must allow it.
    pub appendable: bool,
    pub tables: Vec<String>,
    pub nondeterministic: Vec<&'static str>,
    /// The unit starts a COPY FROM STDIN on the secondary.
    pub copy_in: bool,
    /// For a COPY: commits acknowledged when it was sent to the primary (its rows run on the
    /// secondary once every one of them is applied there; see `order`).
    pub seen: u64,
    /// First statement text, for logs and warnings.
    pub text: String,
    pub bytes: usize,
    /// A sampled read, run on the secondary only to compare answers (see `shadow`).
    pub shadow: bool,
    /// This unit is answered by the same primary answer (one Sync) as the unit before it: the
    /// sampled reads of a batch that also held writes (see [`Builder::push`] at Sync).
    pub shares_answer: bool,
    /// The unit after this one shares its primary answer.
    pub answer_shared: bool,
}

/// An item on a session's secondary queue.
#[derive(Debug)]
pub enum Item {
    /// A whole unit, applied once the primary has answered it.
    Unit(Unit),
    /// COPY data for the unit whose COPY started (streamed, not gated).
    CopyData(Bytes),
    /// CopyDone/CopyFail from the client: closes the COPY unit; gated on the primary's answer.
    CopyEnd(Bytes),
}

#[derive(Debug, Clone)]
struct Statement {
    generation: u64,
    parse: Bytes,
    text: String,
    class: classify::Classification,
}

/// A read batch being considered for shadowing, up to its Sync.
#[derive(Default)]
struct ShadowDraft {
    /// Whether this batch was sampled (decided at its first read Bind).
    picked: Option<bool>,
    /// Something in the batch can't be shadowed faithfully.
    spoiled: bool,
    /// The portal bound last in this batch (the sample runs it as the unnamed portal).
    bound: Option<String>,
    /// That portal's first Execute is in the sample: later ones (its next chunks) are not.
    executed: bool,
    unit: Unit,
}

/// Per-session classification state for the extended protocol.
#[derive(Default)]
pub struct Builder {
    statements: HashMap<String, Statement>,
    /// Portal name -> statement name, for portals bound on the secondary.
    portals: HashMap<String, Option<String>>,
    generation: u64,
    current: Unit,
    executes: usize,
    in_copy: bool,
    /// Fraction of reads to shadow (set by the relay from the live settings).
    pub shadow_rate: f64,
    rng: u64,
    draft: ShadowDraft,
}

fn text_of(body: &[u8]) -> String {
    let end = body.iter().position(|b| *b == 0).unwrap_or(body.len());
    String::from_utf8_lossy(&body[..end]).into_owned()
}

/// The first step of an extended-protocol unit: such a unit can be wrapped in a transaction
/// of the replay's own unless a statement in it is transaction control.
fn begin_extended(unit: &mut Unit) {
    if unit.steps.is_empty() && unit.text.is_empty() {
        unit.wrap_ok = true;
        unit.appendable = true;
    }
}

fn absorb(unit: &mut Unit, class: &classify::Classification, text: &str) {
    if unit.text.is_empty() {
        unit.text = text.chars().take(200).collect();
    }
    unit.session_state |= class.session_state;
    unit.effect |= class.effect;
    for t in &class.tables {
        if !unit.tables.contains(t) {
            unit.tables.push(t.clone());
        }
    }
    for n in &class.nondeterministic {
        if !unit.nondeterministic.contains(n) {
            unit.nondeterministic.push(n);
        }
    }
    if class.tx != TxControl::None {
        unit.wrap_ok = false;
    }
}

impl Builder {
    /// Feed one whole client frame (`tag`, the frame with its header). Returns items to queue
    /// for the secondary, and whether the frame ended a unit (Query, Sync, FunctionCall).
    pub fn push(&mut self, tag: u8, frame: &Bytes, out: &mut Vec<Item>) -> bool {
        let body = &frame[5..];
        if self.in_copy {
            match tag {
                f::COPY_DATA => {
                    out.push(Item::CopyData(frame.clone()));
                    return false;
                }
                f::COPY_DONE | f::COPY_FAIL => {
                    self.in_copy = false;
                    out.push(Item::CopyEnd(frame.clone()));
                    // A simple-query COPY's unit ends with its ReadyForQuery; an extended one
                    // continues to its Sync (which closes an empty unit).
                    return false;
                }
                // Ignored by the server during COPY; the unit goes on.
                f::FLUSH => return false,
                f::SYNC => {}
                // The COPY never started (the server refused it): back to normal.
                _ => self.in_copy = false,
            }
        }
        match tag {
            f::QUERY => {
                let text = text_of(body);
                let class = classify::classify(&text);
                self.reset_unit();
                if class.route == Route::Both {
                    let mut unit = Unit {
                        wrap_ok: true,
                        ..Unit::default()
                    };
                    absorb(&mut unit, &class, &text);
                    unit.tx = single_tx(&class);
                    unit.appendable = class.appendable;
                    unit.results = (0..class.statements).collect();
                    unit.steps.push(Step::Raw(frame.clone()));
                    unit.bytes = frame.len();
                    unit.copy_in = class.copy_from_stdin;
                    self.in_copy = class.copy_from_stdin;
                    out.push(Item::Unit(unit));
                } else if class.statements > 0 && class.shadowable && self.sample() {
                    out.push(Item::Unit(Unit {
                        steps: vec![Step::Raw(frame.clone())],
                        results: (0..class.statements).collect(),
                        text,
                        bytes: frame.len(),
                        shadow: true,
                        nondeterministic: class.nondeterministic,
                        ..Unit::default()
                    }));
                }
                true
            }
            f::FUNCTION_CALL => {
                self.reset_unit();
                let unit = Unit {
                    steps: vec![Step::Raw(frame.clone())],
                    bytes: frame.len(),
                    text: "<function call>".into(),
                    effect: true,
                    ..Unit::default()
                };
                out.push(Item::Unit(unit));
                true
            }
            f::PARSE => {
                let Some((name, rest)) = cstr(body) else {
                    return false;
                };
                let text = text_of(rest);
                let name = String::from_utf8_lossy(name).into_owned();
                self.generation += 1;
                let class = classify::classify(&text);
                if !name.is_empty() {
                    self.begin_extended();
                    interleaved(&mut self.draft);
                    self.current.steps.push(Step::Parse {
                        statement: name.clone(),
                        generation: self.generation,
                        parse: frame.clone(),
                    });
                    self.current.bytes += frame.len();
                    if self.current.text.is_empty() {
                        self.current.text = text.chars().take(200).collect();
                    }
                }
                self.statements.insert(
                    name,
                    Statement {
                        generation: self.generation,
                        parse: frame.clone(),
                        text,
                        class,
                    },
                );
                false
            }
            f::BIND => {
                let Some((portal, rest)) = cstr(body) else {
                    return false;
                };
                let Some((stmt, _)) = cstr(rest) else {
                    return false;
                };
                let portal = String::from_utf8_lossy(portal).into_owned();
                let stmt = String::from_utf8_lossy(stmt).into_owned();
                match self.statements.get(&stmt) {
                    Some(s) if s.class.route == Route::Both => {
                        interleaved(&mut self.draft);
                        let current = &mut self.current;
                        if current.steps.is_empty() {
                            // Kept at Sync if this is the unit's only statement.
                            current.tx = single_tx(&s.class);
                        }
                        begin_extended(current);
                        absorb(current, &s.class, &s.text);
                        current.appendable &= s.class.appendable;
                        current.steps.push(Step::Bind {
                            statement: stmt.clone(),
                            generation: s.generation,
                            parse: s.parse.clone(),
                            bind: frame.clone(),
                        });
                        current.bytes += s.parse.len() + frame.len();
                        self.portals.insert(portal, Some(stmt));
                    }
                    known => {
                        let read = known.cloned();
                        self.shadow_bind(read, &stmt, &portal, frame);
                        self.portals.insert(portal, None);
                    }
                }
                false
            }
            f::EXECUTE => {
                let portal = cstr(body)
                    .map(|(p, _)| String::from_utf8_lossy(p).into_owned())
                    .unwrap_or_default();
                let index = self.executes;
                self.executes += 1;
                if !matches!(self.portals.get(&portal), Some(Some(_))) {
                    self.shadow_execute(&portal, frame, index);
                }
                if let Some(Some(stmt)) = self.portals.get(&portal) {
                    let copy_in = self
                        .statements
                        .get(stmt)
                        .is_some_and(|s| s.class.copy_from_stdin);
                    interleaved(&mut self.draft);
                    self.current.steps.push(Step::Raw(frame.clone()));
                    self.current.bytes += frame.len();
                    self.current.results.push(index);
                    if copy_in {
                        // The COPY starts now: send what we have, stream the data.
                        self.current.copy_in = true;
                        self.current.tx = None;
                        let unit = std::mem::take(&mut self.current);
                        out.push(Item::Unit(unit));
                        self.in_copy = true;
                    }
                }
                false
            }
            f::CLOSE => {
                if let Some((&kind, rest)) = body.split_first() {
                    let name = cstr(rest)
                        .map(|(n, _)| String::from_utf8_lossy(n).into_owned())
                        .unwrap_or_default();
                    let on_secondary = if kind == b'S' {
                        self.statements
                            .remove(&name)
                            .is_some_and(|s| s.class.route == Route::Both)
                    } else {
                        matches!(self.portals.remove(&name), Some(Some(_)))
                    };
                    if on_secondary {
                        self.begin_extended();
                        interleaved(&mut self.draft);
                        self.current.steps.push(Step::Raw(frame.clone()));
                        self.current.bytes += frame.len();
                    }
                }
                false
            }
            f::SYNC => {
                let mut unit = std::mem::take(&mut self.current);
                let draft = std::mem::take(&mut self.draft);
                self.executes = 0;
                let sample = (draft.picked == Some(true)
                    && !draft.spoiled
                    && !draft.unit.results.is_empty())
                .then(|| {
                    let mut shadow = draft.unit;
                    shadow.steps.push(Step::Raw(frame.clone()));
                    shadow.bytes += frame.len();
                    shadow.shadow = true;
                    shadow
                });
                if unit.steps.is_empty() {
                    if let Some(shadow) = sample {
                        out.push(Item::Unit(shadow));
                    }
                    return true;
                }
                unit.steps.push(Step::Raw(frame.clone()));
                unit.bytes += frame.len();
                if !(unit.results.len() == 1 && unit.steps.len() == 3) {
                    // Only Bind + Execute + Sync of one statement is transaction control alone
                    // (the statement's kind was noted at its Bind: a later Parse in the batch
                    // may have replaced the unnamed statement since).
                    unit.tx = None;
                }
                // Sampled reads that came after every write of the batch (a driver sending
                // BEGIN with a transaction's first query, or a named statement's Parse with
                // its first execution) are a sample of their own, run after the writes and
                // compared against the same answer.
                let sample = sample.filter(|_| !unit.copy_in && !self.in_copy);
                unit.answer_shared = sample.is_some();
                out.push(Item::Unit(unit));
                if let Some(mut shadow) = sample {
                    shadow.shares_answer = true;
                    out.push(Item::Unit(shadow));
                }
                true
            }
            _ => false,
        }
    }

    /// Named statements and their generations (what a backend session of this client has).
    pub fn named_statements(&self) -> HashMap<String, u64> {
        self.statements
            .iter()
            .filter(|(name, _)| !name.is_empty())
            .map(|(name, s)| (name.clone(), s.generation))
            .collect()
    }

    fn begin_extended(&mut self) {
        begin_extended(&mut self.current);
    }

    fn reset_unit(&mut self) {
        self.current = Unit::default();
        self.executes = 0;
        self.draft = ShadowDraft::default();
    }

    /// Whether to shadow this read (xorshift; seeded once per session).
    fn sample(&mut self) -> bool {
        if self.shadow_rate <= 0.0 {
            return false;
        }
        if self.shadow_rate >= 1.0 {
            return true;
        }
        if self.rng == 0 {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1);
            self.rng = (t ^ (self as *const Builder as u64).rotate_left(32)) | 1;
        }
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        ((self.rng >> 11) as f64 / (1u64 << 53) as f64) < self.shadow_rate
    }

    /// A Bind of a statement that stays on the primary: part of a shadow sample if picked.
    fn shadow_bind(&mut self, read: Option<Statement>, stmt: &str, portal: &str, frame: &Bytes) {
        if self.shadow_rate <= 0.0 && self.draft.picked.is_none() {
            return;
        }
        if self.draft.picked.is_none() {
            let pick = self.sample();
            self.draft.picked = Some(pick);
        }
        if self.draft.picked != Some(true) {
            return;
        }
        match read {
            Some(s) if s.class.shadowable => {
                let d = &mut self.draft;
                if d.unit.text.is_empty() {
                    d.unit.text = s.text.chars().take(2000).collect();
                }
                for n in &s.class.nondeterministic {
                    if !d.unit.nondeterministic.contains(n) {
                        d.unit.nondeterministic.push(n);
                    }
                }
                // A named portal (a driver reading in chunks) runs as the unnamed one on the
                // secondary: nothing of the sample outlives its batch there.
                let named = frame.get(5..).and_then(|b| b.iter().position(|c| *c == 0));
                let bind = match named {
                    Some(end) if end > 0 => {
                        // From the portal name's NUL on: an empty name, then the rest.
                        let mut b = BytesMut::with_capacity(frame.len());
                        protocol::frontend_message(&mut b, f::BIND, &frame[5 + end..]);
                        b.freeze()
                    }
                    _ => frame.clone(),
                };
                d.unit.bytes += s.parse.len() + bind.len();
                d.unit.steps.push(Step::Bind {
                    statement: stmt.to_string(),
                    generation: s.generation,
                    parse: s.parse.clone(),
                    bind,
                });
                d.bound = Some(portal.to_string());
                d.executed = false;
            }
            _ => self.draft.spoiled = true,
        }
    }

    /// An Execute of a portal that stays on the primary.
    fn shadow_execute(&mut self, portal: &str, frame: &Bytes, index: usize) {
        let d = &mut self.draft;
        if d.picked != Some(true) || d.spoiled {
            return;
        }
        // Only the portal bound last in this batch, run as the unnamed portal. A row limit N
        // becomes N + 1 on the secondary: when it has no more than N rows, its whole result
        // is known and the primary's N rows are compared with it (see `shadow::compare`).
        if d.bound.as_deref() != Some(portal) {
            d.spoiled = true;
            return;
        }
        // Its next chunks in the same batch (node-postgres's `rows`: Execute and Flush until
        // the portal completes, then Sync) are not compared: the secondary's portal is one
        // row further on, each chunk would hold other rows.
        if d.executed {
            return;
        }
        d.executed = true;
        let limit = frame
            .get(frame.len() - 4..)
            .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            .unwrap_or(0);
        let limit = if limit > 0 {
            limit.saturating_add(1)
        } else {
            limit
        };
        let mut body = vec![0u8];
        body.extend_from_slice(&limit.to_be_bytes());
        let mut e = BytesMut::with_capacity(body.len() + 5);
        protocol::frontend_message(&mut e, f::EXECUTE, &body);
        d.unit.steps.push(Step::Raw(e.freeze()));
        d.unit.bytes += body.len() + 5;
        d.unit.results.push(index);
    }
}

/// A step for the secondary (a write) comes in the batch: the reads before it can't be run
/// apart from it, so they are not compared; reads after the batch's last write still can be.
fn interleaved(draft: &mut ShadowDraft) {
    if draft.picked == Some(true) {
        draft.unit = Unit::default();
        draft.bound = None;
        draft.executed = false;
        draft.spoiled = false;
    }
}

fn single_tx(class: &classify::Classification) -> Option<TxControl> {
    (class.statements == 1 && !matches!(class.tx, TxControl::None | TxControl::Mixed))
        .then_some(class.tx)
}

#[cfg(test)]
mod tests;
