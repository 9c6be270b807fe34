//! `dualwrite-validator`: proves the target holds what the source holds.
