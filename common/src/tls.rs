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

/// The `tls-server-end-point` channel binding data of a DER certificate (RFC 5929 4.1): its
/// hash under the hash function of its signature algorithm, SHA-256 for MD5 and SHA-1. `None`
/// for an algorithm without one hash function (RSASSA-PSS, Ed25519): no channel binding is
/// offered then.
pub fn server_end_point(der: &[u8]) -> Option<Vec<u8>> {
    use sha2::Digest;
    // Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm AlgorithmIdentifier, .. }
    let (cert, _) = der_item(der, 0x30)?;
    let (_tbs, rest) = der_item(cert, 0x30)?;
    let (algorithm, _) = der_item(rest, 0x30)?;
    let (oid, _) = der_item(algorithm, 0x06)?;
    const RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01];
    const ECDSA_SHA2: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03];
    const ECDSA_SHA1: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x01];
    let bits = match oid {
        // md5WithRSAEncryption, sha1WithRSAEncryption, sha256WithRSAEncryption
        [p @ .., 0x04 | 0x05 | 0x0b] if p == RSA => 256,
        [p @ .., 0x0c] if p == RSA => 384,
        [p @ .., 0x0d] if p == RSA => 512,
        o if o == ECDSA_SHA1 => 256,
        [p @ .., 0x02] if p == ECDSA_SHA2 => 256,
        [p @ .., 0x03] if p == ECDSA_SHA2 => 384,
        [p @ .., 0x04] if p == ECDSA_SHA2 => 512,
        _ => return None,
    };
    Some(match bits {
        256 => sha2::Sha256::digest(der).to_vec(),
        384 => sha2::Sha384::digest(der).to_vec(),
        _ => sha2::Sha512::digest(der).to_vec(),
    })
}

/// One DER item with tag `tag` at the start of `input`: its contents and what follows.
fn der_item(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&t, rest) = input.split_first()?;
    if t != tag {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |l, b| (l << 8) | *b as usize);
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| rest.split_at(len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest;

    /// A certificate-shaped DER: SEQUENCE { SEQUENCE {} (tbs), SEQUENCE { OID }, BIT STRING }.
    fn cert_with(oid: &[u8]) -> Vec<u8> {
        let mut alg = vec![0x06, oid.len() as u8];
        alg.extend_from_slice(oid);
        let mut body = vec![0x30, 0x00, 0x30, alg.len() as u8];
        body.extend_from_slice(&alg);
        body.extend_from_slice(&[0x03, 0x02, 0x00, 0xff]);
        let mut der = vec![0x30, body.len() as u8];
        der.extend_from_slice(&body);
        der
    }

    #[test]
    fn end_point_hash_follows_the_signature_algorithm() {
        let sha256_rsa = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b];
        let sha1_rsa = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x05];
        let sha512_rsa = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d];
        let ecdsa_sha384 = [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03];
        for (oid, bits) in [
            (&sha256_rsa[..], 256),
            (&sha1_rsa[..], 256),
            (&sha512_rsa[..], 512),
            (&ecdsa_sha384[..], 384),
        ] {
            let der = cert_with(oid);
            let want = match bits {
                256 => sha2::Sha256::digest(&der).to_vec(),
                384 => sha2::Sha384::digest(&der).to_vec(),
                _ => sha2::Sha512::digest(&der).to_vec(),
            };
            assert_eq!(server_end_point(&der), Some(want), "{oid:02x?}");
        }
        // Ed25519 and RSASSA-PSS have no single hash: no channel binding.
        assert_eq!(server_end_point(&cert_with(&[0x2b, 0x65, 0x70])), None);
        let pss = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a];
        assert_eq!(server_end_point(&cert_with(&pss)), None);
        // Not a certificate.
        assert_eq!(server_end_point(b"garbage"), None);
        assert_eq!(
            server_end_point(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]),
            None
        );
    }
}
