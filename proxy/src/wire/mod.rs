//! # `wire`: bytes on sockets
//!
//! Owns the PostgreSQL protocol as bytes: framing and the few messages the proxy decodes or
//! writes itself (`protocol`), reading one message into a reused buffer (`read`), stream halves
//! and TLS (`tls`), client authentication and the SCRAM exchange (`auth`), opening an
//! authenticated session on a backend (`backend`), and cancel keys (`cancel`).
//!
//! May use: `config`, `metrics`. Knows nothing of statements, dual-writing or sessions.

pub mod auth;
pub mod backend;
pub mod cancel;
pub mod protocol;
pub mod read;
pub mod tls;
