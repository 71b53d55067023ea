//! IKEv2 (RFC 7296) for ikemesh, sans-IO.
//!
//! This crate is the protocol and nothing else: it never opens a socket, reads a clock
//! or draws randomness on its own. The caller (the `mesh` daemon, or a test) passes
//! datagrams and `Instant`s in and polls datagrams to send, timer deadlines and events
//! out, so every protocol test runs in memory and deterministically, without root.
//!
//! Layout, with names taken from RFC 7296 so the code can be read beside it:
//!
//! - [`wire`]: one module per payload type, each with a zero-copy `Packet` view
//!   (`new_checked`, named field ranges) and a plain `Repr` (`parse`, `emit`).
//! - [`crypto`]: the transforms behind small traits (`Prf`, `Aead`, `KeyExchange`,
//!   `Signer`, `Verifier`): DH groups, PRFs, SK protection, `prf+`, key derivation.
//! - [`config`] and [`event`]: what an IKE SA is told (its configuration) and what it
//!   tells (events, the child SAs it made); leaf modules the others share.
//! - [`error`]: why things fail ([`Error`]), and the one mapping from an error to the
//!   Notify we send.
//! - [`exchange`]: one module per exchange (`IKE_SA_INIT`, `IKE_AUTH`,
//!   `CREATE_CHILD_SA`, `INFORMATIONAL`), each with build/process for both roles, and
//!   the child SA negotiation `IKE_AUTH` and `CREATE_CHILD_SA` share. They import
//!   nothing from [`sa`].
//! - [`proposal`]: what we offer and how a responder chooses (section 2.7).
//! - [`sa`]: the IKE SA state machine that drives the exchanges: message IDs,
//!   retransmissions, the responder's cache, rekey collisions, and timers.
//! - [`endpoint`]: all IKE SAs of one socket: routing by SPI, new responder SAs behind
//!   the cookie gate, half-open limits.
//!
//! `ike` depends on no other ikemesh crate: certificate checks and policy decisions are
//! traits defined here and implemented by `ca` and `mesh`.

pub mod config;
pub mod cookie;
pub mod crypto;
pub mod endpoint;
pub mod error;
pub mod event;
pub mod exchange;
pub mod proposal;
pub mod sa;
pub mod wire;

pub use error::Error;
