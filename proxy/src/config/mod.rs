//! Configuration: the TOML file (every key overridable by `DUALWRITE__SECTION__KEY`), checked
//! and resolved into [`Settings`] with secrets read and TLS material loaded.
//!
//! # Layer
//! The bottom of the proxy: plain data every layer reads. It imports nothing of the proxy.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use dualwrite_common::secret::{self, Secret};
use dualwrite_common::PgUrl;
use serde::Deserialize;

use keys::ScramVerifier;

mod file;

pub use file::*;

pub mod keys;

/// The default bound on journal records held in memory while the journal cannot be written.
pub const DEFAULT_MAX_BACKLOG: u64 = 64 << 20;

/// Postgres' bound on any message (`PQ_LARGE_MESSAGE_LIMIT`), the default `max_message_bytes`.
pub const DEFAULT_MAX_MESSAGE_LEN: usize = 0x3fff_ffff;

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
                keys::client_tls(
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
mod tests;
