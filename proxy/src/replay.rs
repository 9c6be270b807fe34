//! Interim replay (replaced by the full one).
#[derive(Debug)]
pub struct ReplaySummary { pub applied: u64, pub remaining: u64 }
#[derive(Debug, thiserror::Error)]
pub enum ReplayError { #[error("not available")] NotAvailable }
pub enum ReplayEvent {}
pub async fn replay(_s: &crate::config::Settings, _r: &mut (dyn FnMut(ReplayEvent) + Send)) -> Result<ReplaySummary, ReplayError> { Err(ReplayError::NotAvailable) }
