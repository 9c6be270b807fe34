//! rustls client configuration for libpq's `sslmode` values.
//!
//! - `verify-full`: certificate chain against `sslrootcert` (or the system roots) and host name.
//! - `verify-ca`: the chain, not the host name.
//! - `require`/`prefer`/`allow`: as in libpq, the connection is encrypted; when `sslrootcert`
//!   is given the chain is verified as with `verify-ca`, otherwise the server is not
//!   authenticated (handshake signatures are still checked). Use `verify-full` in production.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

use crate::pgurl::{PgUrl, SslMode};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("{what} {path} holds no usable PEM {kind}")]
    Empty {
        what: &'static str,
        path: String,
        kind: &'static str,
    },
    #[error("no trusted root certificates: set sslrootcert")]
    NoRoots,
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The crypto provider used everywhere (ring: no C toolchain beyond gcc needed).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Load every certificate of a PEM file.
pub fn load_certs(
    what: &'static str,
    path: &std::path::Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let shown = path.display().to_string();
    let data = std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: shown.clone(),
        source,
    })?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut data.as_slice())
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(TlsError::Empty {
            what,
            path: shown,
            kind: "certificate",
        });
    }
    Ok(certs)
}

/// Load the first private key of a PEM file.
pub fn load_key(
    what: &'static str,
    path: &std::path::Path,
) -> Result<PrivateKeyDer<'static>, TlsError> {
    let shown = path.display().to_string();
    let data = std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: shown.clone(),
        source,
    })?;
    rustls_pemfile::private_key(&mut data.as_slice())
        .ok()
        .flatten()
        .ok_or(TlsError::Empty {
            what,
            path: shown,
            kind: "private key",
        })
}

fn roots(url: &PgUrl) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    match &url.sslrootcert {
        Some(path) => {
            for cert in load_certs("sslrootcert", path)? {
                store.add(cert)?;
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = store.add(cert);
            }
        }
    }
    if store.is_empty() {
        return Err(TlsError::NoRoots);
    }
    Ok(store)
}

/// Client TLS configuration for a backend URL, or `None` for `sslmode=disable|allow`.
pub fn client_config(url: &PgUrl) -> Result<Option<Arc<ClientConfig>>, TlsError> {
    let provider = provider();
    let verifier: Arc<dyn ServerCertVerifier> = match url.sslmode {
        SslMode::Disable | SslMode::Allow => return Ok(None),
        SslMode::VerifyFull => {
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots(url)?), provider.clone())
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?
        }
        SslMode::VerifyCa => Arc::new(ChainOnly(
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots(url)?), provider.clone())
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?,
        )),
        SslMode::Prefer | SslMode::Require if url.sslrootcert.is_some() => Arc::new(ChainOnly(
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots(url)?), provider.clone())
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?,
        )),
        SslMode::Prefer | SslMode::Require => Arc::new(EncryptOnly(provider.clone())),
    };
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let config = match (&url.sslcert, &url.sslkey) {
        (Some(cert), Some(key)) => {
            builder.with_client_auth_cert(load_certs("sslcert", cert)?, load_key("sslkey", key)?)?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(Some(Arc::new(config)))
}

/// `verify-ca`: the chain must verify; the certificate need not name the host.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// libpq's `sslmode=require` without a root certificate: encrypted, server not authenticated.
#[derive(Debug)]
struct EncryptOnly(Arc<CryptoProvider>);

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The server name presented for SNI and checked by `verify-full`.
pub fn server_name(url: &PgUrl) -> Result<ServerName<'static>, rustls::Error> {
    ServerName::try_from(url.tls_host().to_string()).map_err(|_| {
        rustls::Error::General(format!("invalid TLS server name {:?}", url.tls_host()))
    })
}
