//! `dualwrite-backfill`: schema clone and time-series backfill below the consistency time T.
