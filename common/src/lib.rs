//! Postgres helpers shared by the dualwrite binaries.
//!
//! # Layout
//! - `pgurl`: parse a `postgres://` URL into host, port, login, database and TLS settings.
//! - `tls`: rustls client configuration for every libpq `sslmode`.
//! - `connect`: open a `tokio-postgres` client from a [`pgurl::PgUrl`].
//! - `secret`: passwords that never print, read inline, from the environment or from a file.
//! - `ident`: quoting of identifiers and literals, qualified table names.
//! - `catalog`: discovery of time-series tables (hypertables, range partitions, named tables) and their chunks.

pub mod catalog;
pub mod connect;
pub mod ident;
pub mod pgtls;
pub mod pgurl;
pub mod secret;
pub mod tls;

pub use connect::connect;
pub use pgurl::{PgUrl, SslMode};
pub use secret::Secret;
