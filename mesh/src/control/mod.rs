//! The control API: `meshd` serves it on a Unix socket, `meshctl` calls it.

pub mod client;
pub mod proto;
pub mod server;
