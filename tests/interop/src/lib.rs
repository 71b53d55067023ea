//! Interoperability harness: strongSwan's IKE daemon, charon, as a peer in the test bed.
//!
//! - [`pki`]: a throw-away CA and end-entity certificates (Ed25519 or ECDSA P-256, PEM)
//!   made with strongSwan's own `pki` tool, so they are independent of ikemesh's `ca`
//!   crate.
//! - [`charon`]: [`Charon`], one charon daemon running in a [`Host`](ikemesh_testbed::Host)
//!   (a network namespace) with everything private to it — strongswan.conf, swanctl.conf,
//!   certificates and keys, the vici socket, the PID file and the log — in a temporary
//!   folder it owns. Connections are loaded with `swanctl`; SAs are initiated, listed,
//!   rekeyed and terminated over charon's vici socket.
//! - [`peer`]: [`IkePeer`], ikemesh's own IKE (the `ike-peer` binary of this crate: one
//!   IKE SA over UDP with certificate files) in a host, driven through its stdin and its
//!   event lines.
//! - [`sa`]: what charon reports about its IKE and child SAs (what `swanctl --list-sas`
//!   shows), as types.
//! - [`load`]: the pair-rate benchmark's load generator: many IKE SAs, each from its own
//!   identity and address, against one `meshd`.
//!
//! ESP needs Debian's stock kernel: run tests that install child SAs through
//! [`ikemesh_testbed::vm::guest_test`]. IKE alone also works on the build hosts' kernel
//! (charon then fails to install the child SA, and says so in its log).
//!
//! The strongSwan packages are installed by `tests/vm/vm setup`.

pub mod charon;
pub mod charon_rate;
pub mod load;
pub mod peer;
pub mod pki;
pub mod sa;
mod vici;

pub use charon::{Charon, CharonConfig, ChildConfig, Connection, Mode};
pub use peer::{IkePeer, PeerOptions};
pub use pki::{Identity, KeyType, TestCa};
pub use sa::{ChildSa, IkeSa};

use std::io;
use std::time::Instant;

/// The lines a test case prints as its report, each with the time since the case began.
#[derive(Debug)]
pub struct Report {
    started: Instant,
    /// The lines so far.
    pub lines: Vec<String>,
}

impl Report {
    /// A report starting now.
    pub fn new() -> Self {
        Self { started: Instant::now(), lines: Vec::new() }
    }

    /// Adds a line.
    pub fn line(&mut self, text: impl std::fmt::Display) {
        self.lines.push(format!("  {:5.1} s  {text}", self.started.elapsed().as_secs_f64()));
    }
}

impl Default for Report {
    fn default() -> Self {
        Self::new()
    }
}

/// An `io::Error` carrying a message.
pub(crate) fn error(msg: impl Into<String>) -> io::Error {
    io::Error::other(msg.into())
}
