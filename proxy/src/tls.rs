//! TLS toward clients, and the stream halves every connection is split into.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};

/// One direction of a client or backend connection, plain or TLS, TCP or Unix socket.
pub type Reader = Box<dyn AsyncRead + Send + Unpin>;
pub type Writer = Box<dyn AsyncWrite + Send + Unpin>;

/// Split any stream into boxed halves.
pub fn split<S>(stream: S) -> (Reader, Writer)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (r, w) = tokio::io::split(stream);
    (Box::new(r), Box::new(w))
}

/// The ALPN protocol name of the PostgreSQL protocol.
pub const POSTGRESQL_ALPN: &[u8] = b"postgresql";

/// The first byte of a TLS handshake record: a client starting TLS directly
/// (`sslnegotiation=direct`, PostgreSQL 17+) instead of with an SSLRequest.
pub const TLS_HANDSHAKE: u8 = 0x16;

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
        .and_then(|c| server_end_point(c))
        .map(Arc::from);
    Ok(ClientTls {
        config: server_config(cert, key)?,
        end_point,
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
