//! The configuration file as written: its sections, keys and defaults, before checking.

use super::*;

/// The file as written. Unknown keys are errors that name the key.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default = "default_listen")]
    pub listen: String,
    #[serde(default = "default_admin_listen")]
    pub admin_listen: String,
    #[serde(default)]
    pub mode: Mode,
    #[serde(default)]
    pub primary: Side,
    pub source: BackendConfig,
    pub target: Option<BackendConfig>,
    #[serde(default)]
    pub auth: AuthConfig,
    #[serde(default)]
    pub tls: TlsConfig,
    #[serde(default = "default_max_clients")]
    pub max_client_connections: usize,
    #[serde(default = "default_shutdown_timeout")]
    pub shutdown_timeout: String,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: String,
    #[serde(default = "default_max_message")]
    pub max_message_bytes: usize,
    /// Fraction of reads also run on the secondary and compared (0.0 to 1.0).
    #[serde(default)]
    pub shadow_reads: f64,
    /// Show parameter values in shadow mismatch logs (they may hold personal data).
    #[serde(default)]
    pub shadow_log_params: bool,
    /// Shadow reads waiting to run; past it, samples are dropped (and counted).
    #[serde(default = "default_shadow_queue")]
    pub shadow_queue: usize,
    /// How long a shadow sample that finds its shared secondary session idle waits for others
    /// to go out with it.
    #[serde(default = "default_shadow_batch_wait")]
    pub shadow_batch_wait: String,
    #[serde(default)]
    pub secondary: SecondaryConfig,
    #[serde(default)]
    pub journal: JournalConfig,
}

/// How the secondary is fed in `dual-write` mode.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecondaryConfig {
    /// Bytes of client messages a session may have queued for its secondary.
    #[serde(default = "default_max_lag")]
    pub max_lag_bytes: usize,
    /// At the bound: `backpressure` (the client waits; nothing is lost) or `journal`
    /// (journal the session's writes and detach its secondary).
    #[serde(default)]
    pub on_lag: OnLag,
    /// First wait before reconnecting a lost secondary; doubles up to 30s.
    #[serde(default = "default_reconnect")]
    pub reconnect_backoff: String,
    /// How the primary's commit order is learned: `wal` (the WAL position read inside each
    /// committing transaction: exact) or `ack` (the order of the primary's acknowledgements).
    #[serde(default)]
    pub commit_order: CommitOrderMode,
}

impl Default for SecondaryConfig {
    fn default() -> Self {
        SecondaryConfig {
            max_lag_bytes: default_max_lag(),
            on_lag: OnLag::default(),
            reconnect_backoff: default_reconnect(),
            commit_order: CommitOrderMode::default(),
        }
    }
}

pub(super) fn default_shadow_queue() -> usize {
    1024
}

pub(super) fn default_shadow_batch_wait() -> String {
    "3ms".into()
}

/// The longest `shadow_batch_wait` accepted.
pub(super) const MAX_SHADOW_BATCH_WAIT: Duration = Duration::from_secs(1);

pub(super) fn default_max_lag() -> usize {
    16 * 1024 * 1024
}
pub(super) fn default_reconnect() -> String {
    "500ms".into()
}

/// `[secondary] commit_order`: see `order`.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum CommitOrderMode {
    #[default]
    Wal,
    Ack,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum OnLag {
    #[default]
    Backpressure,
    Journal,
}

/// Where statements the secondary missed are kept.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JournalConfig {
    #[serde(default = "default_journal_dir")]
    pub dir: String,
    /// Appends are fsync'd together at most this often (group commit).
    #[serde(default = "default_fsync_interval")]
    pub fsync_interval: String,
    /// Bytes of records held in memory while the journal's disk refuses writes (full, I/O
    /// errors); past it sessions wait for the disk rather than lose a record.
    #[serde(default = "default_max_backlog")]
    pub max_backlog_bytes: u64,
}

impl Default for JournalConfig {
    fn default() -> Self {
        JournalConfig {
            dir: default_journal_dir(),
            fsync_interval: default_fsync_interval(),
            max_backlog_bytes: default_max_backlog(),
        }
    }
}

pub(super) fn default_max_backlog() -> u64 {
    DEFAULT_MAX_BACKLOG
}

pub(super) fn default_journal_dir() -> String {
    "dualwrite-journal".into()
}
pub(super) fn default_fsync_interval() -> String {
    "10ms".into()
}

pub(super) fn default_listen() -> String {
    "127.0.0.1:6432".into()
}
pub(super) fn default_admin_listen() -> String {
    "127.0.0.1:9187".into()
}
pub(super) fn default_max_clients() -> usize {
    1000
}
pub(super) fn default_shutdown_timeout() -> String {
    "30s".into()
}
pub(super) fn default_connect_timeout() -> String {
    "10s".into()
}
pub(super) fn default_max_message() -> usize {
    DEFAULT_MAX_MESSAGE_LEN
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// One backend, the primary: plain pass-through.
    #[default]
    PrimaryOnly,
    /// Writes go to the primary and the secondary.
    DualWrite,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Side {
    #[default]
    Source,
    Target,
}

impl Side {
    pub fn name(self) -> &'static str {
        match self {
            Side::Source => "source",
            Side::Target => "target",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    pub url: Option<String>,
    pub url_env: Option<String>,
    pub url_file: Option<String>,
    /// Overrides the URL's password.
    pub password: Option<String>,
    pub password_env: Option<String>,
    pub password_file: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    #[serde(default = "default_auth_method")]
    pub method: AuthMethod,
    #[serde(default)]
    pub users: Vec<UserConfig>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            method: default_auth_method(),
            users: Vec::new(),
        }
    }
}

pub(super) fn default_auth_method() -> AuthMethod {
    AuthMethod::ScramSha256
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum AuthMethod {
    Trust,
    Md5,
    #[serde(rename = "scram-sha-256")]
    ScramSha256,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub name: String,
    pub password: Option<String>,
    pub password_env: Option<String>,
    pub password_file: Option<String>,
    pub source_password: Option<String>,
    pub source_password_env: Option<String>,
    pub source_password_file: Option<String>,
    pub target_password: Option<String>,
    pub target_password_env: Option<String>,
    pub target_password_file: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    #[serde(default)]
    pub mode: TlsMode,
    pub cert: Option<String>,
    pub key: Option<String>,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum TlsMode {
    #[default]
    Disable,
    Allow,
    Require,
}
