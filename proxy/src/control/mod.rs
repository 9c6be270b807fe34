//! # `control`: the running proxy as a whole
//!
//! Owns the listener, the composition of `Shared` and ordered shutdown (`server`), the admin
//! HTTP API (`admin`) and the CLI's client of it (`admin_client`), cutover (`cutover`), and the
//! live state persisted next to the journal (`state`).
//!
//! May use every other layer; nothing uses it but `lib.rs` and `main.rs`.

pub mod admin;
pub mod admin_client;
pub mod cutover;
pub mod server;
pub mod state;
