//! Key material derived from the configuration when it is loaded: SCRAM verifiers from
//! users' passwords, and the TLS server configuration from the certificate and key files.
//! Plain data; the exchanges that use it live in `wire`.

use std::sync::Arc;

use dualwrite_common::Secret;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};

/// Iterations of PBKDF2 for the verifiers the proxy derives (PostgreSQL's default).
pub const SCRAM_ITERATIONS: u32 = 4096;

/// SCRAM-SHA-256 keys derived once from a user's password (PBKDF2 is slow on purpose).
#[derive(Clone)]
pub struct ScramVerifier {
    pub(crate) salt: [u8; 16],
    pub(crate) stored_key: [u8; 32],
    pub(crate) server_key: [u8; 32],
}

impl std::fmt::Debug for ScramVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ScramVerifier(***)")
    }
}

/// HMAC-SHA-256, as SCRAM uses it.
pub(crate) fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts any key length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

impl ScramVerifier {
    /// Keys for `password` with a fresh random salt.
    pub fn new(password: &Secret) -> Self {
        let mut salt = [0u8; 16];
        rand::rng().fill_bytes(&mut salt);
        Self::with_salt(password.expose(), salt)
    }

    pub(crate) fn with_salt(password: &str, salt: [u8; 16]) -> Self {
        let mut salted = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), &salt, SCRAM_ITERATIONS, &mut salted);
        let client_key = hmac(&salted, b"Client Key");
        ScramVerifier {
            salt,
            stored_key: Sha256::digest(client_key).into(),
            server_key: hmac(&salted, b"Server Key"),
        }
    }

    /// A verifier no proof can satisfy, for unknown users, so that a probe cannot tell
    /// "no such user" from "wrong password" (Postgres does the same).
    pub(crate) fn mock(user: &str) -> Self {
        let salt: [u8; 16] = Sha256::digest(user.as_bytes())[..16]
            .try_into()
            .expect("16 bytes of a 32-byte digest");
        let mut stored_key = [0u8; 32];
        rand::rng().fill_bytes(&mut stored_key);
        ScramVerifier {
            salt,
            stored_key,
            server_key: [0; 32],
        }
    }
}

/// The ALPN protocol name of the PostgreSQL protocol.
pub const POSTGRESQL_ALPN: &[u8] = b"postgresql";

/// TLS toward clients: the server configuration, and the `tls-server-end-point` channel
/// binding data of its certificate when it has one (for SCRAM-SHA-256-PLUS).
#[derive(Debug, Clone)]
pub struct ClientTls {
    pub config: Arc<rustls::ServerConfig>,
    pub end_point: Option<Arc<[u8]>>,
}

/// Server-side TLS from PEM files.
pub fn client_tls(cert: &str, key: &str) -> Result<ClientTls, dualwrite_common::tls::TlsError> {
    let certs = dualwrite_common::tls::load_certs("tls.cert", std::path::Path::new(cert))?;
    let end_point = certs
        .first()
        .and_then(|c| dualwrite_common::tls::server_end_point(c))
        .map(Arc::from);
    Ok(ClientTls {
        config: server_config(cert, key)?,
        end_point,
    })
}

/// Server-side TLS configuration from PEM files.
pub fn server_config(
    cert: &str,
    key: &str,
) -> Result<Arc<rustls::ServerConfig>, dualwrite_common::tls::TlsError> {
    let certs = dualwrite_common::tls::load_certs("tls.cert", std::path::Path::new(cert))?;
    let key = dualwrite_common::tls::load_key("tls.key", std::path::Path::new(key))?;
    let mut config = rustls::ServerConfig::builder_with_provider(dualwrite_common::tls::provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    // As PostgreSQL 17+: a client that offers ALPN must offer "postgresql"; direct TLS
    // (`sslnegotiation=direct`) requires it.
    config.alpn_protocols = vec![POSTGRESQL_ALPN.to_vec()];
    Ok(Arc::new(config))
}
