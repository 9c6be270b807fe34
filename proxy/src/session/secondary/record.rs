//! Outcomes compared, and what the secondary missed journaled (with its marker when in doubt).

use super::*;

impl Worker {
    pub(super) async fn compare(&mut self, u: &Unit, primary: &Outcome, secondary: &Outcome) {
        for (i, &pi) in u.results.iter().enumerate() {
            let (Some(p), Some(s)) = (primary.results.get(pi), secondary.results.get(i)) else {
                continue;
            };
            if !p.same_write(s) {
                self.shared.dual.divergences.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("dualwrite_divergences_total").increment(1);
                let (pd, sd) = (p.describe(), s.describe());
                warn!(primary = %pd, secondary = %sd, statement = %u.text, "write divergence");
                let record = self.record(
                    RecordKind::Divergence,
                    std::slice::from_ref(u),
                    "results differ",
                );
                let record = Record {
                    primary_result: Some(pd),
                    secondary_result: Some(sd),
                    ..record
                };
                self.append(record).await;
            }
        }
    }

    pub(super) fn warn_nondeterministic(&self, u: &Unit) {
        if u.nondeterministic.is_empty() {
            return;
        }
        for func in &u.nondeterministic {
            metrics::counter!("dualwrite_nondeterministic_statements_total", "function" => *func)
                .increment(1);
        }
        if self.shared.dual.first_sighting(&u.text) {
            warn!(functions = ?u.nondeterministic, statement = %u.text,
                "write calls non-deterministic functions: each database computes its own value");
        }
    }

    /// A unit whose primary answer never came (the primary connection ended first): it may or
    /// may not have been applied there, so it is reported, not replayed.
    pub(super) async fn outcome_unknown(&mut self, u: &Unit) {
        let record = self.record(
            RecordKind::Divergence,
            std::slice::from_ref(u),
            "the primary's answer was lost (connection ended); not replayed",
        );
        self.append(record).await;
    }

    pub(super) fn record(&self, kind: RecordKind, units: &[Unit], error: &str) -> Record {
        let mut messages = Vec::new();
        let mut parsed = std::collections::HashSet::new();
        let mut tables = Vec::new();
        let mut wrap = true;
        for u in units {
            // Transaction control around the journaled statements is the replayer's job.
            if units.len() > 1 && matches!(u.tx, Some(TxControl::Begin) | Some(TxControl::Commit)) {
                continue;
            }
            wrap &= u.wrap_ok;
            for t in &u.tables {
                if !tables.contains(t) {
                    tables.push(t.clone());
                }
            }
            for step in &u.steps {
                match step {
                    Step::Raw(b) => messages.extend_from_slice(b),
                    Step::Parse {
                        statement,
                        generation,
                        parse,
                    } => {
                        if parsed.insert((statement.clone(), *generation)) {
                            messages.extend_from_slice(parse);
                        }
                    }
                    Step::Bind {
                        statement,
                        generation,
                        parse,
                        bind,
                    } => {
                        if statement.is_empty() || parsed.insert((statement.clone(), *generation)) {
                            messages.extend_from_slice(parse);
                        }
                        messages.extend_from_slice(bind);
                    }
                }
            }
        }
        Record {
            seq: 0,
            time_micros: 0,
            kind,
            session: self.info.id,
            user: self.info.user.clone(),
            database: self.info.database.clone(),
            prelude: self.prelude.clone(),
            messages,
            wrap,
            in_doubt: false,
            marker: None,
            side: Some(self.backend.side.name().to_string()),
            tables,
            error: error.to_string(),
            primary_result: None,
            secondary_result: None,
        }
    }

    pub(super) async fn journal_units(&mut self, units: &[Unit], reason: &str) {
        self.journal_in_doubt(units, reason, false).await
    }

    /// Journal units the secondary missed; `in_doubt` when it may have applied them after all.
    pub(super) async fn journal_in_doubt(&mut self, units: &[Unit], reason: &str, in_doubt: bool) {
        self.journal_marked(units, reason, in_doubt, None).await
    }

    /// [`Worker::journal_in_doubt`] for units that wrote `marker`: it tells replay whether
    /// they committed.
    pub(super) async fn journal_marked(
        &mut self,
        units: &[Unit],
        reason: &str,
        in_doubt: bool,
        marker: Option<Marker>,
    ) {
        // Statements only prepared, never executed, change nothing: not worth a record.
        let prepare_only = |u: &Unit| {
            u.steps.iter().all(|s| match s {
                Step::Parse { .. } => true,
                Step::Raw(b) => b.first() == Some(&f::SYNC),
                Step::Bind { .. } => false,
            })
        };
        if units.iter().all(prepare_only) {
            return;
        }
        let mut record = self.record(RecordKind::Missed, units, reason);
        if record.messages.is_empty() {
            return;
        }
        if in_doubt {
            metrics::counter!("dualwrite_journal_in_doubt_total").increment(1);
            warn!(statement = %units.last().map(|u| u.text.as_str()).unwrap_or(""),
                "secondary connection lost before the answer to a commit: journaled as in doubt");
            record.in_doubt = true;
            record.marker = marker;
            self.kept_in_doubt = true;
        }
        self.shared.dual.detach(reason);
        self.append(record).await;
    }

    pub(super) async fn append(&mut self, record: Record) {
        append(self.shared.clone(), record).await
    }
}
