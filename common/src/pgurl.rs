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
                // Accepted by libpq and harmless to ignore here.
                "sslnegotiation" | "target_session_attrs" | "gssencmode" | "channel_binding" => {}
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
