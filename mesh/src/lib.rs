//! The ikemesh daemon (`meshd`) and its command-line client (`meshctl`).
//!
//! This crate owns all IO: the TOML configuration, the membership list, one supervisor
//! per peer (UDP sockets feeding the sans-IO state machines of `ike`, child SAs handed
//! to `xfrm`, SPA knocks and pinholes from `policy`, certificates from `ca`), the
//! `use` to `require` rollout state machine, the state directory, and the control API on
//! a Unix socket that `meshctl` speaks.
//!
//! Dependencies point one way: `mesh` uses `ike`, `xfrm`, `ca` and `policy`, and none of
//! them uses `mesh`.

pub mod cli;
pub mod config;
pub mod control;
pub mod ctl;
pub mod daemon;
pub mod rollout;
pub mod supervisor;
