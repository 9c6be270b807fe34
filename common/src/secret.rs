//! Secrets that cannot leak through `Debug`, `Display` or a log line.

use std::fmt;
use std::path::Path;

/// A password or other credential. Formatting it prints `***`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself; call only where it is sent to its destination.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Why a secret could not be resolved. Names the variable or file, never the value.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("{what}: environment variable {var} is not set")]
    MissingEnv { what: String, var: String },
    #[error("{what}: cannot read password file {path}: {source}")]
    File {
        what: String,
        path: String,
        source: std::io::Error,
    },
    #[error("{what}: give only one of `{key}`, `{key}_env`, `{key}_file`")]
    Ambiguous { what: String, key: String },
}

/// Resolve a secret given inline, by environment variable name, or by file path.
/// `what` names the config key for error messages (e.g. `auth.users[app].password`).
/// A file's trailing newline is removed, as with Docker secrets.
pub fn resolve(
    what: &str,
    key: &str,
    inline: Option<&str>,
    env: Option<&str>,
    file: Option<&str>,
) -> Result<Option<Secret>, SecretError> {
    let given = [inline.is_some(), env.is_some(), file.is_some()];
    if given.iter().filter(|g| **g).count() > 1 {
        return Err(SecretError::Ambiguous {
            what: what.to_string(),
            key: key.to_string(),
        });
    }
    if let Some(v) = inline {
        return Ok(Some(Secret::new(v)));
    }
    if let Some(var) = env {
        return std::env::var(var)
            .map(|v| Some(Secret::new(v)))
            .map_err(|_| SecretError::MissingEnv {
                what: what.to_string(),
                var: var.to_string(),
            });
    }
    if let Some(path) = file {
        let text =
            std::fs::read_to_string(Path::new(path)).map_err(|source| SecretError::File {
                what: what.to_string(),
                path: path.to_string(),
                source,
            })?;
        return Ok(Some(Secret::new(text.trim_end_matches(['\n', '\r']))));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s} {s:?}"), "*** ***");
    }

    #[test]
    fn resolves_each_source() {
        assert_eq!(
            resolve("k", "password", Some("a"), None, None).unwrap(),
            Some(Secret::new("a"))
        );
        std::env::set_var("DW_SECRET_TEST", "b");
        assert_eq!(
            resolve("k", "password", None, Some("DW_SECRET_TEST"), None).unwrap(),
            Some(Secret::new("b"))
        );
        let dir = std::env::temp_dir().join(format!("dw-secret-{}", std::process::id()));
        std::fs::write(&dir, "c\n").unwrap();
        assert_eq!(
            resolve("k", "password", None, None, Some(dir.to_str().unwrap())).unwrap(),
            Some(Secret::new("c"))
        );
        std::fs::remove_file(&dir).unwrap();
        assert!(resolve("k", "password", Some("a"), Some("X"), None).is_err());
        let err = resolve("k", "password", None, Some("DW_SECRET_UNSET_VAR"), None).unwrap_err();
        assert!(err.to_string().contains("DW_SECRET_UNSET_VAR"));
    }
}
