//! Authentication: clients to the proxy (trust, md5, SCRAM-SHA-256 server side) and the proxy
//! to each backend (cleartext, md5, SCRAM-SHA-256 client side, as libpq does).

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use bytes::BytesMut;
use dualwrite_common::Secret;
use md5::Md5;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::config::keys::{hmac, ScramVerifier, SCRAM_ITERATIONS};
use crate::wire::protocol::{self, frontend, ProxyError};
use crate::wire::read::{read_message, MessageError};
use crate::wire::tls::{Reader, Writer};
use tokio::io::AsyncWriteExt;

const AUTH_OK: i32 = 0;
const AUTH_MD5: i32 = 5;
const AUTH_SASL: i32 = 10;
const AUTH_SASL_CONTINUE: i32 = 11;
const AUTH_SASL_FINAL: i32 = 12;

/// How a client's login attempt ended.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("password authentication failed for user \"{0}\"")]
    Failed(String),
    #[error("{0}")]
    Protocol(String),
    #[error(transparent)]
    Message(#[from] MessageError),
}

impl AuthError {
    pub fn to_client(&self) -> ProxyError {
        match self {
            AuthError::Failed(_) => ProxyError::fatal("28P01", self.to_string()),
            AuthError::Protocol(m) => ProxyError::fatal("08P01", m.clone()),
            AuthError::Message(e) => e.to_client(),
        }
    }
}

async fn send(w: &mut Writer, out: &mut BytesMut) -> Result<(), MessageError> {
    w.write_all(out).await.map_err(MessageError::Io)?;
    w.flush().await.map_err(MessageError::Io)?;
    out.clear();
    Ok(())
}

async fn read_password(r: &mut Reader, buf: &mut BytesMut) -> Result<bytes::Bytes, AuthError> {
    let (tag, body) = read_message(r, buf, 64 * 1024).await?;
    if tag != frontend::PASSWORD {
        return Err(AuthError::Protocol(format!(
            "expected password response, got message type {:?}",
            tag as char
        )));
    }
    Ok(body)
}

/// Authenticate a client with MD5: `md5(md5(password || user) || salt)`.
pub async fn md5(
    r: &mut Reader,
    w: &mut Writer,
    buf: &mut BytesMut,
    user: &str,
    password: Option<&Secret>,
) -> Result<(), AuthError> {
    let mut salt = [0u8; 4];
    rand::rng().fill_bytes(&mut salt);
    let mut out = BytesMut::new();
    protocol::authentication(&mut out, AUTH_MD5, &salt);
    send(w, &mut out).await?;
    let body = read_password(r, buf).await?;
    let given = body.strip_suffix(b"\0").unwrap_or(&body);
    let Some(password) = password else {
        return Err(AuthError::Failed(user.to_string()));
    };
    let inner = format!(
        "{:x}",
        Md5::digest(format!("{}{}", password.expose(), user))
    );
    let mut outer = Md5::new();
    outer.update(inner.as_bytes());
    outer.update(salt);
    let expected = format!("md5{:x}", outer.finalize());
    if constant_time_eq(given, expected.as_bytes()) {
        Ok(())
    } else {
        Err(AuthError::Failed(user.to_string()))
    }
}

/// Authenticate a client with SCRAM-SHA-256 (RFC 5802/7677). Over TLS, `end_point` is the
/// proxy certificate's `tls-server-end-point` data: SCRAM-SHA-256-PLUS is offered too, binding
/// the authentication to this TLS connection (libpq's `channel_binding=require`), as
/// PostgreSQL does.
pub async fn scram(
    r: &mut Reader,
    w: &mut Writer,
    buf: &mut BytesMut,
    user: &str,
    verifier: Option<&ScramVerifier>,
    end_point: Option<&[u8]>,
) -> Result<(), AuthError> {
    let mock;
    let (verifier, known) = match verifier {
        Some(v) => (v, true),
        None => {
            mock = ScramVerifier::mock(user);
            (&mock, false)
        }
    };
    let mut out = BytesMut::new();
    let mechanisms: &[u8] = if end_point.is_some() {
        b"SCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0\0"
    } else {
        b"SCRAM-SHA-256\0\0"
    };
    protocol::authentication(&mut out, AUTH_SASL, mechanisms);
    send(w, &mut out).await?;

    // SASLInitialResponse: mechanism, int32 length, client-first-message.
    let body = read_password(r, buf).await?;
    let (mechanism, rest) = protocol::cstr(&body)
        .ok_or_else(|| AuthError::Protocol("malformed SASL initial response".into()))?;
    let binding = match (mechanism, end_point) {
        (b"SCRAM-SHA-256", _) => None,
        (b"SCRAM-SHA-256-PLUS", Some(data)) => Some(data),
        _ => {
            return Err(AuthError::Protocol(format!(
                "unsupported SASL mechanism {:?}",
                String::from_utf8_lossy(mechanism)
            )))
        }
    };
    if rest.len() < 4 {
        return Err(AuthError::Protocol(
            "malformed SASL initial response".into(),
        ));
    }
    let client_first = std::str::from_utf8(&rest[4..])
        .map_err(|_| AuthError::Protocol("SCRAM message is not UTF-8".into()))?;
    let (gs2_header, client_first_bare, flag) = split_gs2(client_first)?;
    match (flag, binding) {
        (Gs2::Binding("tls-server-end-point"), Some(_)) => {}
        (Gs2::Binding(kind), Some(_)) => {
            return Err(AuthError::Protocol(format!(
                "unsupported SCRAM channel binding type {kind:?}"
            )))
        }
        (Gs2::Binding(_), None) => {
            return Err(AuthError::Protocol(
                "SCRAM-SHA-256 was selected, but the message asks for channel binding".into(),
            ))
        }
        (Gs2::No | Gs2::Yes, Some(_)) => {
            return Err(AuthError::Protocol(
                "SCRAM-SHA-256-PLUS was selected, but the message has no channel binding".into(),
            ))
        }
        // "y": the client could bind but thinks the server cannot. This one can: a
        // downgrade, refused as RFC 5802 says.
        (Gs2::Yes, None) if end_point.is_some() => {
            return Err(AuthError::Protocol(
                "SCRAM channel binding negotiation error: the client supports channel binding \
                 but thinks the server does not; this server does"
                    .into(),
            ))
        }
        (Gs2::No | Gs2::Yes, None) => {}
    }
    // The client-final-message's `c=`: the gs2 header, then the channel binding data.
    let mut expected_c = gs2_header.as_bytes().to_vec();
    if let Some(data) = binding {
        expected_c.extend_from_slice(data);
    }
    let client_nonce = attribute(client_first_bare, 'r')
        .ok_or_else(|| AuthError::Protocol("SCRAM client-first-message has no nonce".into()))?;

    let mut nonce_bytes = [0u8; 18];
    rand::rng().fill_bytes(&mut nonce_bytes);
    let nonce = format!("{client_nonce}{}", B64.encode(nonce_bytes));
    let server_first = format!(
        "r={nonce},s={},i={SCRAM_ITERATIONS}",
        B64.encode(verifier.salt)
    );
    protocol::authentication(&mut out, AUTH_SASL_CONTINUE, server_first.as_bytes());
    send(w, &mut out).await?;

    let body = read_password(r, buf).await?;
    let client_final = std::str::from_utf8(&body)
        .map_err(|_| AuthError::Protocol("SCRAM message is not UTF-8".into()))?;
    let (without_proof, proof) = client_final
        .rsplit_once(",p=")
        .ok_or_else(|| AuthError::Protocol("SCRAM client-final-message has no proof".into()))?;
    if attribute(without_proof, 'c') != Some(B64.encode(&expected_c).as_str())
        || attribute(without_proof, 'r') != Some(nonce.as_str())
    {
        return Err(AuthError::Protocol(
            "SCRAM channel binding or nonce mismatch".into(),
        ));
    }
    let proof = B64
        .decode(proof)
        .map_err(|_| AuthError::Protocol("SCRAM proof is not base64".into()))?;
    let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
    let client_signature = hmac(&verifier.stored_key, auth_message.as_bytes());
    if proof.len() != 32 {
        return Err(AuthError::Failed(user.to_string()));
    }
    let client_key: Vec<u8> = proof
        .iter()
        .zip(client_signature)
        .map(|(a, b)| a ^ b)
        .collect();
    let computed: [u8; 32] = Sha256::digest(&client_key).into();
    if !known || !constant_time_eq(&computed, &verifier.stored_key) {
        return Err(AuthError::Failed(user.to_string()));
    }
    let server_signature = hmac(&verifier.server_key, auth_message.as_bytes());
    protocol::authentication(
        &mut out,
        AUTH_SASL_FINAL,
        format!("v={}", B64.encode(server_signature)).as_bytes(),
    );
    send(w, &mut out).await?;
    Ok(())
}

/// The channel binding flag of a gs2 header.
#[derive(Debug, PartialEq, Eq)]
enum Gs2<'a> {
    /// `n`: the client does not support channel binding.
    No,
    /// `y`: the client supports it but thinks the server does not.
    Yes,
    /// `p=TYPE`: the client binds to the channel with TYPE.
    Binding(&'a str),
}

/// The gs2 header (`n,,`, `y,,` or `p=TYPE,,`), the bare message after it, and the flag.
fn split_gs2(msg: &str) -> Result<(&str, &str, Gs2<'_>), AuthError> {
    let bad = || AuthError::Protocol("malformed SCRAM client-first-message".into());
    let mut parts = msg.splitn(3, ',');
    let cb = parts.next().ok_or_else(bad)?;
    let authzid = parts.next().ok_or_else(bad)?;
    let bare = parts.next().ok_or_else(bad)?;
    let flag = match cb {
        "n" => Gs2::No,
        "y" => Gs2::Yes,
        c => match c.strip_prefix("p=") {
            Some(kind) if !kind.is_empty() => Gs2::Binding(kind),
            _ => return Err(bad()),
        },
    };
    let header_len = cb.len() + authzid.len() + 2;
    Ok((&msg[..header_len], bare, flag))
}

fn attribute(msg: &str, name: char) -> Option<&str> {
    msg.split(',').find_map(|kv| {
        let mut chars = kv.chars();
        (chars.next() == Some(name) && chars.next() == Some('=')).then(|| &kv[2..])
    })
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// AuthenticationOk.
pub fn ok(out: &mut BytesMut) {
    protocol::authentication(out, AUTH_OK, &[]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7677_vector() {
        // RFC 7677 section 3: user "user", password "pencil".
        let salt: [u8; 16] = B64
            .decode("W22ZaJ0SNY7soEsUEjb6gQ==")
            .unwrap()
            .try_into()
            .unwrap();
        let v = ScramVerifier::with_salt("pencil", salt);
        let client_first_bare = "n=user,r=rOprNGfwEbeRWgbNEkqO";
        let server_first = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        let without_proof = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let auth = format!("{client_first_bare},{server_first},{without_proof}");
        let server_sig = hmac(&v.server_key, auth.as_bytes());
        assert_eq!(
            B64.encode(server_sig),
            "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
        let proof = B64
            .decode("dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
            .unwrap();
        let sig = hmac(&v.stored_key, auth.as_bytes());
        let key: Vec<u8> = proof.iter().zip(sig).map(|(a, b)| a ^ b).collect();
        let computed: [u8; 32] = Sha256::digest(&key).into();
        assert_eq!(computed, v.stored_key);
    }

    #[test]
    fn gs2_parsing() {
        assert_eq!(
            split_gs2("n,,n=,r=abc").unwrap(),
            ("n,,", "n=,r=abc", Gs2::No)
        );
        assert_eq!(
            split_gs2("y,,n=,r=abc").unwrap(),
            ("y,,", "n=,r=abc", Gs2::Yes)
        );
        assert_eq!(
            split_gs2("p=tls-server-end-point,,n=,r=a").unwrap(),
            (
                "p=tls-server-end-point,,",
                "n=,r=a",
                Gs2::Binding("tls-server-end-point")
            )
        );
        assert!(split_gs2("p=,,n=,r=a").is_err());
        assert!(split_gs2("garbage").is_err());
        assert_eq!(attribute("n=,r=abc", 'r'), Some("abc"));
    }
}
