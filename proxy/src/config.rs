//! Configuration: the TOML file (every key overridable by `DUALWRITE__SECTION__KEY`), checked
//! and resolved into [`Settings`] with secrets read and TLS material loaded.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use dualwrite_common::secret::{self, Secret};
use dualwrite_common::PgUrl;
use serde::Deserialize;

use crate::auth::ScramVerifier;

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

fn default_shadow_queue() -> usize {
    1024
}

fn default_shadow_batch_wait() -> String {
    "3ms".into()
}

/// The longest `shadow_batch_wait` accepted.
const MAX_SHADOW_BATCH_WAIT: Duration = Duration::from_secs(1);

fn default_max_lag() -> usize {
    16 * 1024 * 1024
}
fn default_reconnect() -> String {
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

fn default_max_backlog() -> u64 {
    crate::journal::DEFAULT_MAX_BACKLOG
}

fn default_journal_dir() -> String {
    "dualwrite-journal".into()
}
fn default_fsync_interval() -> String {
    "10ms".into()
}

fn default_listen() -> String {
    "127.0.0.1:6432".into()
}
fn default_admin_listen() -> String {
    "127.0.0.1:9187".into()
}
fn default_max_clients() -> usize {
    1000
}
fn default_shutdown_timeout() -> String {
    "30s".into()
}
fn default_connect_timeout() -> String {
    "10s".into()
}
fn default_max_message() -> usize {
    crate::protocol::DEFAULT_MAX_MESSAGE_LEN
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

fn default_auth_method() -> AuthMethod {
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

/// A config problem, naming the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config: {0}")]
    Load(String),
    #[error("config key `{key}`: {message}")]
    Key { key: String, message: String },
    #[error("config: {0}")]
    Secret(#[from] secret::SecretError),
}

fn key_err(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Key {
        key: key.to_string(),
        message: message.into(),
    }
}

/// A backend as the proxy uses it.
#[derive(Debug, Clone)]
pub struct Backend {
    pub side: Side,
    /// Server address, TLS settings and the proxy's own login (checks, status).
    pub url: PgUrl,
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

/// One client login the proxy accepts, with the passwords it uses on each backend.
#[derive(Debug, Clone)]
pub struct User {
    pub name: String,
    pub password: Option<Secret>,
    pub source_password: Option<Secret>,
    pub target_password: Option<Secret>,
    pub scram: Option<ScramVerifier>,
}

impl User {
    pub fn backend_password(&self, side: Side) -> Option<&Secret> {
        match side {
            Side::Source => self.source_password.as_ref(),
            Side::Target => self.target_password.as_ref(),
        }
        .or(self.password.as_ref())
    }
}

/// Resolved, validated settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub admin_listen: Option<SocketAddr>,
    pub mode: Mode,
    pub primary: Side,
    pub source: Backend,
    pub target: Option<Backend>,
    pub auth_method: AuthMethod,
    pub users: HashMap<String, Arc<User>>,
    pub tls_mode: TlsMode,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Channel binding data of the proxy's certificate (SCRAM-SHA-256-PLUS over TLS).
    pub tls_end_point: Option<Arc<[u8]>>,
    pub max_client_connections: usize,
    pub shutdown_timeout: Duration,
    pub connect_timeout: Duration,
    pub max_message_bytes: usize,
    pub shadow_reads: f64,
    pub shadow_log_params: bool,
    pub shadow_queue: usize,
    pub shadow_batch_wait: Duration,
    pub max_lag_bytes: usize,
    pub on_lag: OnLag,
    pub reconnect_backoff: Duration,
    pub commit_order: CommitOrderMode,
    pub journal_dir: PathBuf,
    pub fsync_interval: Duration,
    pub max_backlog_bytes: u64,
    pub config_path: Option<PathBuf>,
}

/// The file with `DUALWRITE__*` environment overrides, not resolved yet.
fn read_file(path: &Path) -> Result<config::Config, ConfigError> {
    if !path.exists() {
        return Err(ConfigError::Load(format!(
            "config file {} does not exist",
            path.display()
        )));
    }
    config::Config::builder()
        .add_source(config::File::from(path).format(config::FileFormat::Toml))
        .add_source(env_source())
        .build()
        .map_err(|e| ConfigError::Load(format!("{}: {e}", path.display())))
}

impl Settings {
    /// Load a file, apply `DUALWRITE__*` environment overrides, and resolve.
    pub fn load(path: &Path) -> Result<Settings, ConfigError> {
        let built = read_file(path)?;
        let mut s = Self::from_built(built)?;
        s.config_path = Some(path.to_path_buf());
        Ok(s)
    }

    /// Only `admin_listen` of a file (with environment overrides), for the commands that talk to
    /// a running proxy (`status`, `set`, `cutover`): they need no backend passwords, so
    /// `password_env` variables unset in their shell are not an error.
    pub fn load_admin_listen(path: &Path) -> Result<Option<SocketAddr>, ConfigError> {
        let built = read_file(path)?;
        let text = match built.get_string("admin_listen") {
            Ok(t) => t,
            Err(config::ConfigError::NotFound(_)) => default_admin_listen(),
            Err(e) => return Err(key_err("admin_listen", e.to_string())),
        };
        if text.is_empty() {
            return Ok(None);
        }
        text.parse()
            .map(Some)
            .map_err(|_| key_err("admin_listen", format!("{text:?} is not host:port")))
    }

    /// Resolve TOML text (tests and embedded defaults); environment overrides apply too.
    pub fn from_toml(text: &str) -> Result<Settings, ConfigError> {
        let built = config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Toml))
            .add_source(env_source())
            .build()
            .map_err(|e| ConfigError::Load(e.to_string()))?;
        Self::from_built(built)
    }

    fn from_built(built: config::Config) -> Result<Settings, ConfigError> {
        let file: FileConfig = built
            .try_deserialize()
            .map_err(|e| ConfigError::Load(e.to_string()))?;
        Self::resolve(file)
    }

    /// Check every key and turn the file into settings.
    pub fn resolve(file: FileConfig) -> Result<Settings, ConfigError> {
        let listen = file
            .listen
            .parse()
            .map_err(|_| key_err("listen", format!("{:?} is not host:port", file.listen)))?;
        let admin_listen = if file.admin_listen.is_empty() {
            None
        } else {
            Some(file.admin_listen.parse().map_err(|_| {
                key_err(
                    "admin_listen",
                    format!("{:?} is not host:port", file.admin_listen),
                )
            })?)
        };
        if file.mode == Mode::DualWrite && file.target.is_none() {
            return Err(key_err(
                "mode",
                "is \"dual-write\" but there is no [target] section",
            ));
        }
        if !(0.0..=1.0).contains(&file.shadow_reads) {
            return Err(key_err("shadow_reads", "must be between 0.0 and 1.0"));
        }
        if file.shadow_reads > 0.0 && file.target.is_none() {
            return Err(key_err(
                "shadow_reads",
                "needs a [target] to shadow reads on",
            ));
        }
        if file.journal.max_backlog_bytes < 64 * 1024 {
            return Err(key_err(
                "journal.max_backlog_bytes",
                "must be at least 65536",
            ));
        }
        if file.secondary.max_lag_bytes < 64 * 1024 {
            return Err(key_err("secondary.max_lag_bytes", "must be at least 65536"));
        }
        if file.journal.dir.is_empty() {
            return Err(key_err("journal.dir", "must not be empty"));
        }
        let source = resolve_backend("source", Side::Source, &file.source)?;
        let target = file
            .target
            .as_ref()
            .map(|t| resolve_backend("target", Side::Target, t))
            .transpose()?;
        if file.primary == Side::Target && target.is_none() {
            return Err(key_err(
                "primary",
                "is \"target\" but there is no [target] section",
            ));
        }
        let mut users = HashMap::new();
        for (i, u) in file.auth.users.iter().enumerate() {
            let key = format!("auth.users[{i}]");
            if u.name.is_empty() {
                return Err(key_err(&format!("{key}.name"), "must not be empty"));
            }
            let password = secret::resolve(
                &format!("{key}.password"),
                "password",
                u.password.as_deref(),
                u.password_env.as_deref(),
                u.password_file.as_deref(),
            )?;
            let source_password = secret::resolve(
                &format!("{key}.source_password"),
                "source_password",
                u.source_password.as_deref(),
                u.source_password_env.as_deref(),
                u.source_password_file.as_deref(),
            )?;
            let target_password = secret::resolve(
                &format!("{key}.target_password"),
                "target_password",
                u.target_password.as_deref(),
                u.target_password_env.as_deref(),
                u.target_password_file.as_deref(),
            )?;
            if file.auth.method != AuthMethod::Trust && password.is_none() {
                return Err(key_err(
                    &format!("{key}.password"),
                    format!(
                        "user {:?} needs a password for auth.method {:?}",
                        u.name, file.auth.method
                    ),
                ));
            }
            let scram = match (file.auth.method, &password) {
                (AuthMethod::ScramSha256, Some(p)) => Some(ScramVerifier::new(p)),
                _ => None,
            };
            let user = User {
                name: u.name.clone(),
                password,
                source_password,
                target_password,
                scram,
            };
            if users.insert(u.name.clone(), Arc::new(user)).is_some() {
                return Err(key_err(
                    &format!("{key}.name"),
                    format!("duplicate user {:?}", u.name),
                ));
            }
        }
        if file.auth.method != AuthMethod::Trust && users.is_empty() {
            return Err(key_err(
                "auth.users",
                "no users: with md5 or scram-sha-256 at least one user is needed",
            ));
        }
        let tls = match file.tls.mode {
            TlsMode::Disable => None,
            _ => Some(
                crate::tls::client_tls(
                    file.tls.cert.as_deref().ok_or_else(|| {
                        key_err("tls.cert", "is required unless tls.mode = \"disable\"")
                    })?,
                    file.tls.key.as_deref().ok_or_else(|| {
                        key_err("tls.key", "is required unless tls.mode = \"disable\"")
                    })?,
                )
                .map_err(|e| key_err("tls", e.to_string()))?,
            ),
        };
        if file.max_client_connections == 0 {
            return Err(key_err("max_client_connections", "must be at least 1"));
        }
        if file.max_message_bytes < 1024 {
            return Err(key_err("max_message_bytes", "must be at least 1024"));
        }
        Ok(Settings {
            listen,
            admin_listen,
            mode: file.mode,
            primary: file.primary,
            source,
            target,
            auth_method: file.auth.method,
            users,
            tls_mode: file.tls.mode,
            tls_end_point: tls.as_ref().and_then(|t| t.end_point.clone()),
            tls: tls.map(|t| t.config),
            max_client_connections: file.max_client_connections,
            shutdown_timeout: duration("shutdown_timeout", &file.shutdown_timeout)?,
            connect_timeout: duration("connect_timeout", &file.connect_timeout)?,
            max_message_bytes: file.max_message_bytes,
            shadow_reads: file.shadow_reads,
            shadow_log_params: file.shadow_log_params,
            shadow_queue: file.shadow_queue.max(1),
            shadow_batch_wait: match duration("shadow_batch_wait", &file.shadow_batch_wait)? {
                d if d > MAX_SHADOW_BATCH_WAIT => {
                    return Err(key_err("shadow_batch_wait", "must be at most 1s"))
                }
                d => d,
            },
            max_lag_bytes: file.secondary.max_lag_bytes,
            on_lag: file.secondary.on_lag,
            commit_order: file.secondary.commit_order,
            reconnect_backoff: duration(
                "secondary.reconnect_backoff",
                &file.secondary.reconnect_backoff,
            )?,
            journal_dir: PathBuf::from(&file.journal.dir),
            fsync_interval: duration("journal.fsync_interval", &file.journal.fsync_interval)?,
            max_backlog_bytes: file.journal.max_backlog_bytes,
            config_path: None,
        })
    }

    /// The backend that receives the writes as well (dual-write), if any.
    pub fn secondary_backend(&self) -> Option<&Backend> {
        match self.primary {
            Side::Source => self.target.as_ref(),
            Side::Target => Some(&self.source),
        }
    }

    /// The backend currently serving clients.
    pub fn primary_backend(&self) -> &Backend {
        match self.primary {
            Side::Source => &self.source,
            Side::Target => self
                .target
                .as_ref()
                .expect("checked at load: primary=target needs [target]"),
        }
    }
}

fn env_source() -> config::Environment {
    config::Environment::with_prefix("DUALWRITE")
        .prefix_separator("__")
        .separator("__")
        .try_parsing(true)
}

fn duration(key: &str, text: &str) -> Result<Duration, ConfigError> {
    humantime::parse_duration(text).map_err(|e| {
        key_err(
            key,
            format!("{text:?} is not a duration like \"10s\" ({e})"),
        )
    })
}

fn resolve_backend(section: &str, side: Side, b: &BackendConfig) -> Result<Backend, ConfigError> {
    let url_text = secret::resolve(
        &format!("{section}.url"),
        "url",
        b.url.as_deref(),
        b.url_env.as_deref(),
        b.url_file.as_deref(),
    )?
    .ok_or_else(|| key_err(&format!("{section}.url"), "is required"))?;
    let mut url: PgUrl =
        url_text
            .expose()
            .parse()
            .map_err(|e: dualwrite_common::pgurl::UrlError| {
                key_err(&format!("{section}.url"), e.to_string())
            })?;
    if let Some(p) = secret::resolve(
        &format!("{section}.password"),
        "password",
        b.password.as_deref(),
        b.password_env.as_deref(),
        b.password_file.as_deref(),
    )? {
        url.password = Some(p);
    }
    let tls = dualwrite_common::tls::client_config(&url)
        .map_err(|e| key_err(&format!("{section}.url"), e.to_string()))?;
    Ok(Backend { side, url, tls })
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
listen = "127.0.0.1:0"
admin_listen = ""
[source]
url = "postgres://postgres:secret@127.0.0.1:5432/app?sslmode=disable"
[auth]
method = "scram-sha-256"
users = [{ name = "app", password = "app-secret" }, { name = "report", password = "r1", target_password = "r2" }]
"#;

    #[test]
    fn loads_the_documented_shape() {
        let s = Settings::from_toml(BASE).unwrap();
        assert_eq!(s.mode, Mode::PrimaryOnly);
        assert_eq!(s.primary, Side::Source);
        let report = &s.users["report"];
        assert_eq!(
            report.backend_password(Side::Source).unwrap().expose(),
            "r1"
        );
        assert_eq!(
            report.backend_password(Side::Target).unwrap().expose(),
            "r2"
        );
        assert!(!format!("{s:?}").contains("secret"));
    }

    #[test]
    fn names_the_bad_key() {
        let err = Settings::from_toml(&format!("{BASE}\nlisen = \"x\""))
            .unwrap_err()
            .to_string();
        assert!(err.contains("lisen"), "{err}");
        let err = Settings::from_toml(&BASE.replace("127.0.0.1:0", "nonsense"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("`listen`"), "{err}");
        let err = Settings::from_toml(&BASE.replace("sslmode=disable", "sslmode=sometimes"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("source.url") && !err.contains("secret"),
            "{err}"
        );
        let err = Settings::from_toml(&BASE.replace("scram-sha-256", "rot13"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("rot13"), "{err}");
        let err = Settings::from_toml(&format!("{BASE}\nprimary = \"target\""))
            .unwrap_err()
            .to_string();
        assert!(err.contains("primary"), "{err}");
    }

    #[test]
    fn shadow_batch_wait_is_a_short_duration() {
        let with = |v: &str| {
            BASE.replace(
                "admin_listen = \"\"",
                &format!("admin_listen = \"\"\nshadow_batch_wait = \"{v}\""),
            )
        };
        assert_eq!(
            Settings::from_toml(BASE).unwrap().shadow_batch_wait,
            Duration::from_millis(3)
        );
        assert_eq!(
            Settings::from_toml(&with("0s")).unwrap().shadow_batch_wait,
            Duration::ZERO
        );
        for bad in ["2s", "soon"] {
            let err = Settings::from_toml(&with(bad)).unwrap_err().to_string();
            assert!(err.contains("shadow_batch_wait"), "{err}");
        }
    }
}
