//! # `session`: one client, from startup to its last message
//!
//! Owns a client connection: startup, TLS and authentication (`client`), the relay of frames
//! between client and primary (`relay`), the session's secondary backend, which applies its
//! writes in the commit order and runs its sampled reads (`secondary`), the gate sessions pass
//! between transactions for cutovers and live changes (`gate`), and the state all sessions
//! share (`shared`).
//!
//! May use: `shadow`, `dual`, `wire`, `config`, `metrics`. Never the control plane, which
//! builds `Shared` and starts sessions.

pub mod client;
pub mod gate;
pub mod relay;
pub mod secondary;
pub mod shared;

pub use client::handle;
pub use shared::Shared;
