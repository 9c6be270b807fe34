//! `postgres://` URLs: host, port, login, database and libpq's TLS settings.
//!
//! `tokio-postgres` does not accept `sslmode=verify-ca|verify-full`, so the URL is parsed here
//! once and both the proxy's raw connections and `tokio-postgres` clients are built from it.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use crate::secret::Secret;

/// libpq's `sslmode`, with libpq's meaning.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SslMode {
    Disable,
    Allow,
    #[default]
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    /// Whether a server that refuses TLS must be refused.
    pub fn requires_tls(self) -> bool {
        matches!(
            self,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull
        )
    }

    /// Whether TLS is attempted at all.
    pub fn attempts_tls(self) -> bool {
        !matches!(self, SslMode::Disable | SslMode::Allow)
    }
}

impl FromStr for SslMode {
    type Err = UrlError;
    fn from_str(s: &str) -> Result<Self, UrlError> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => return Err(UrlError::Invalid(format!("unknown sslmode {other:?}"))),
        })
    }
}

/// Where the server listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Host {
    Tcp(String),
    /// A Unix-socket directory (`host=/var/run/postgresql`).
    Unix(PathBuf),
}

/// A parsed connection URL. Its `Display` hides the password.
#[derive(Clone, PartialEq, Eq)]
pub struct PgUrl {
    pub host: Host,
    pub port: u16,
    pub user: String,
    pub password: Option<Secret>,
    pub dbname: String,
    pub sslmode: SslMode,
    pub sslrootcert: Option<PathBuf>,
    pub sslcert: Option<PathBuf>,
    pub sslkey: Option<PathBuf>,
    pub application_name: Option<String>,
    pub connect_timeout: Option<std::time::Duration>,
    /// How a silent server is noticed (libpq's `keepalives*` and `tcp_user_timeout`).
    pub liveness: Liveness,
    /// libpq's `channel_binding`: SCRAM bound to the server's TLS certificate.
    pub channel_binding: ChannelBinding,
}

/// libpq's `channel_binding`: whether SCRAM authentication is bound to the TLS connection
/// (SCRAM-SHA-256-PLUS, `tls-server-end-point`), which defeats a man in the middle that holds
/// a certificate the client would accept.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ChannelBinding {
    Disable,
    /// Bind when the connection uses TLS and the server offers it (libpq's default).
    #[default]
    Prefer,
    /// Refuse a server that does not authenticate with channel binding.
    Require,
}

/// TCP settings that make a connection to a server that went silent (host down, network cut,
/// packets dropped without a reset) fail instead of waiting for ever: keepalive probes while
/// waiting for an answer, and `TCP_USER_TIMEOUT` for data the server never acknowledges.
/// Set from libpq's URL parameters `keepalives`, `keepalives_idle`, `keepalives_interval`,
/// `keepalives_count` (seconds, seconds, count) and `tcp_user_timeout` (milliseconds, 0 = the
/// system's default). The defaults give up on a silent server after about 30 s; the system's
/// own (libpq's defaults) take two hours to probe an idle connection and about 15 minutes to
/// give up on unacknowledged data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Liveness {
    pub keepalives: bool,
    pub idle: std::time::Duration,
    pub interval: std::time::Duration,
    pub count: u32,
    /// `None`: the system's default.
    pub user_timeout: Option<std::time::Duration>,
}

impl Default for Liveness {
    fn default() -> Self {
        Liveness {
            keepalives: true,
            idle: std::time::Duration::from_secs(15),
            interval: std::time::Duration::from_secs(5),
            count: 3,
            user_timeout: Some(std::time::Duration::from_secs(30)),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UrlError {
    #[error("invalid connection URL: {0}")]
    Invalid(String),
}

impl FromStr for PgUrl {
    type Err = UrlError;

    fn from_str(text: &str) -> Result<Self, UrlError> {
        // Never echo the URL itself in an error: it may hold a password.
        let url = url::Url::parse(text.trim())
            .map_err(|e| UrlError::Invalid(format!("not a postgres:// URL ({e})")))?;
        if url.scheme() != "postgres" && url.scheme() != "postgresql" {
            return Err(UrlError::Invalid(format!(
                "scheme must be postgres:// or postgresql://, not {}://",
                url.scheme()
            )));
        }
        let decode = |s: &str| {
            url::form_urlencoded::parse(format!("x={s}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        };
        let user = if url.username().is_empty() {
            std::env::var("USER").unwrap_or_else(|_| "postgres".to_string())
        } else {
            decode(url.username())
        };
        let password = url.password().map(|p| Secret::new(decode(p)));
        let mut host = match url.host_str() {
            Some(h) if !h.is_empty() => {
                Host::Tcp(h.trim_start_matches('[').trim_end_matches(']').to_string())
            }
            _ => Host::Tcp("localhost".to_string()),
        };
        let mut port = url.port().unwrap_or(5432);
        let path = url.path().trim_start_matches('/');
        let mut dbname = if path.is_empty() {
            user.clone()
        } else {
            decode(path)
        };
        let mut parsed = PgUrl {
            host: Host::Tcp(String::new()),
            port: 0,
            user,
            password,
            dbname: String::new(),
            sslmode: SslMode::default(),
            sslrootcert: None,
            sslcert: None,
            sslkey: None,
            application_name: None,
            connect_timeout: None,
            liveness: Liveness::default(),
            channel_binding: ChannelBinding::default(),
        };
        for (key, value) in url.query_pairs() {
            let value = value.into_owned();
            match key.as_ref() {
                "sslmode" => parsed.sslmode = value.parse()?,
                "sslrootcert" => parsed.sslrootcert = Some(value.into()),
                "sslcert" => parsed.sslcert = Some(value.into()),
                "sslkey" => parsed.sslkey = Some(value.into()),
                "application_name" => parsed.application_name = Some(value),
                "dbname" => dbname = value,
                "user" => parsed.user = value,
                "password" => parsed.password = Some(Secret::new(value)),
                "port" => {
                    port = value
                        .parse()
                        .map_err(|_| UrlError::Invalid(format!("bad port {value:?}")))?
                }
                "host" if value.starts_with('/') => host = Host::Unix(value.into()),
                "host" => host = Host::Tcp(value),
                "connect_timeout" => {
                    let secs: u64 = value
                        .parse()
                        .map_err(|_| UrlError::Invalid(format!("bad connect_timeout {value:?}")))?;
                    parsed.connect_timeout = Some(std::time::Duration::from_secs(secs));
                }
                "keepalives" => {
                    parsed.liveness.keepalives = match value.as_str() {
                        "1" => true,
                        "0" => false,
                        _ => {
                            return Err(UrlError::Invalid(format!(
                                "bad keepalives {value:?} (0 or 1)"
                            )))
                        }
                    }
                }
                "keepalives_idle" => {
                    parsed.liveness.idle = std::time::Duration::from_secs(positive(&key, &value)?)
                }
                "keepalives_interval" => {
                    parsed.liveness.interval =
                        std::time::Duration::from_secs(positive(&key, &value)?)
                }
                "keepalives_count" => {
                    parsed.liveness.count = u32::try_from(positive(&key, &value)?)
                        .map_err(|_| UrlError::Invalid(format!("bad keepalives_count {value:?}")))?
                }
                "tcp_user_timeout" => {
                    let ms: u64 = value.parse().map_err(|_| {
                        UrlError::Invalid(format!("bad tcp_user_timeout {value:?} (milliseconds)"))
                    })?;
                    parsed.liveness.user_timeout =
                        (ms > 0).then(|| std::time::Duration::from_millis(ms));
                }
                // Accepted by libpq and harmless to ignore here.
                "channel_binding" => {
                    parsed.channel_binding = match value.as_str() {
                        "disable" => ChannelBinding::Disable,
                        "prefer" => ChannelBinding::Prefer,
                        "require" => ChannelBinding::Require,
                        _ => {
                            return Err(UrlError::Invalid(format!(
                                "bad channel_binding {value:?} (disable, prefer or require)"
                            )))
                        }
                    }
                }
                "sslnegotiation" | "target_session_attrs" | "gssencmode" => {}
                other => {
                    return Err(UrlError::Invalid(format!(
                        "unsupported URL parameter {other:?}"
                    )))
                }
            }
        }
        parsed.host = host;
        parsed.port = port;
        parsed.dbname = dbname;
        Ok(parsed)
    }
}

/// A whole number of at least 1 for URL parameter `key`.
fn positive(key: &str, value: &str) -> Result<u64, UrlError> {
    match value.parse::<u64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(UrlError::Invalid(format!(
            "bad {key} {value:?} (a whole number, at least 1)"
        ))),
    }
}

impl PgUrl {
    /// `host:port` (or the socket path) for messages; never the password.
    pub fn endpoint(&self) -> String {
        match &self.host {
            Host::Tcp(h) if h.contains(':') => format!("[{h}]:{}", self.port),
            Host::Tcp(h) => format!("{h}:{}", self.port),
            Host::Unix(dir) => format!("{}/.s.PGSQL.{}", dir.display(), self.port),
        }
    }

    /// Host name used for TLS verification (`verify-full`).
    pub fn tls_host(&self) -> &str {
        match &self.host {
            Host::Tcp(h) => h,
            Host::Unix(_) => "localhost",
        }
    }

    /// The same server and settings with another login and database.
    pub fn with_login(&self, user: &str, password: Option<Secret>, dbname: &str) -> PgUrl {
        let mut url = self.clone();
        url.user = user.to_string();
        url.password = password;
        url.dbname = dbname.to_string();
        url
    }

    /// A libpq URL with the password included, for handing to `psql`/`pg_dump` via the
    /// environment (`PGPASSWORD`) rather than the command line: see [`PgUrl::libpq_env`].
    pub fn libpq_env(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![
            (
                "PGHOST",
                match &self.host {
                    Host::Tcp(h) => h.clone(),
                    Host::Unix(d) => d.display().to_string(),
                },
            ),
            ("PGPORT", self.port.to_string()),
            ("PGUSER", self.user.clone()),
            ("PGDATABASE", self.dbname.clone()),
            ("PGSSLMODE", ssl_mode_name(self.sslmode).to_string()),
        ];
        if let Some(p) = &self.password {
            env.push(("PGPASSWORD", p.expose().to_string()));
        }
        if let Some(p) = &self.sslrootcert {
            env.push(("PGSSLROOTCERT", p.display().to_string()));
        }
        if let Some(p) = &self.sslcert {
            env.push(("PGSSLCERT", p.display().to_string()));
        }
        if let Some(p) = &self.sslkey {
            env.push(("PGSSLKEY", p.display().to_string()));
        }
        if let Some(a) = &self.application_name {
            env.push(("PGAPPNAME", a.clone()));
        }
        env
    }
}

fn ssl_mode_name(mode: SslMode) -> &'static str {
    match mode {
        SslMode::Disable => "disable",
        SslMode::Allow => "allow",
        SslMode::Prefer => "prefer",
        SslMode::Require => "require",
        SslMode::VerifyCa => "verify-ca",
        SslMode::VerifyFull => "verify-full",
    }
}

impl fmt::Display for PgUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "postgres://{}{}@{}/{}?sslmode={}",
            self.user,
            if self.password.is_some() { ":***" } else { "" },
            self.endpoint(),
            self.dbname,
            ssl_mode_name(self.sslmode)
        )
    }
}

impl fmt::Debug for PgUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn parses_full_url() {
        let u: PgUrl = "postgres://tsdbadmin:s%40cret@db.example.com:5433/app?sslmode=verify-full&sslrootcert=ca.pem"
            .parse()
            .unwrap();
        assert_eq!(u.host, Host::Tcp("db.example.com".into()));
        assert_eq!(u.port, 5433);
        assert_eq!(u.user, "tsdbadmin");
        assert_eq!(u.password.as_ref().unwrap().expose(), "s@cret");
        assert_eq!(u.dbname, "app");
        assert_eq!(u.sslmode, SslMode::VerifyFull);
        assert_eq!(u.sslrootcert, Some(PathBuf::from("ca.pem")));
        let shown = u.to_string();
        assert!(
            !shown.contains("s@cret") && !shown.contains("s%40cret"),
            "{shown}"
        );
    }

    #[test]
    fn liveness_parameters() {
        let u: PgUrl = "postgres://u@h/db".parse().unwrap();
        assert_eq!(u.liveness, Liveness::default());
        let u: PgUrl = "postgres://u@h/db?keepalives_idle=2&keepalives_interval=3&keepalives_count=4&tcp_user_timeout=1500"
            .parse()
            .unwrap();
        assert_eq!(
            u.liveness,
            Liveness {
                keepalives: true,
                idle: Duration::from_secs(2),
                interval: Duration::from_secs(3),
                count: 4,
                user_timeout: Some(Duration::from_millis(1500)),
            }
        );
        let u: PgUrl = "postgres://u@h/db?keepalives=0&tcp_user_timeout=0"
            .parse()
            .unwrap();
        assert!(!u.liveness.keepalives);
        assert_eq!(u.liveness.user_timeout, None);
        for bad in [
            "keepalives=yes",
            "keepalives_idle=0",
            "keepalives_interval=-1",
            "keepalives_count=x",
            "tcp_user_timeout=1s",
        ] {
            let err = format!("postgres://u@h/db?{bad}")
                .parse::<PgUrl>()
                .unwrap_err();
            let name = bad.split('=').next().unwrap();
            assert!(err.to_string().contains(name), "{bad}: {err}");
        }
    }

    #[test]
    fn channel_binding_parameter() {
        let cb = |q: &str| {
            format!("postgres://u@h/db{q}")
                .parse::<PgUrl>()
                .map(|u| u.channel_binding)
        };
        assert_eq!(cb("").unwrap(), ChannelBinding::Prefer);
        assert_eq!(
            cb("?channel_binding=disable").unwrap(),
            ChannelBinding::Disable
        );
        assert_eq!(
            cb("?channel_binding=require").unwrap(),
            ChannelBinding::Require
        );
        let err = cb("?channel_binding=always").unwrap_err();
        assert!(err.to_string().contains("channel_binding"), "{err}");
    }

    #[test]
    fn defaults_and_errors() {
        let u: PgUrl = "postgresql://postgres@127.0.0.1/".parse().unwrap();
        assert_eq!(u.port, 5432);
        assert_eq!(u.dbname, "postgres");
        assert_eq!(u.sslmode, SslMode::Prefer);
        let u: PgUrl = "postgres://postgres@[::1]:6000/x?host=/tmp"
            .parse()
            .unwrap();
        assert_eq!(u.host, Host::Unix("/tmp".into()));
        let err = "mysql://root:pw@h/db".parse::<PgUrl>().unwrap_err();
        assert!(!err.to_string().contains("pw"));
        assert!("postgres://h/db?sslmode=maybe".parse::<PgUrl>().is_err());
        assert!("postgres://h/db?bogus=1".parse::<PgUrl>().is_err());
    }
}
