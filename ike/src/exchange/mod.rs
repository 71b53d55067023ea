//! The four IKEv2 exchanges (RFC 7296 section 1), one module each.
//!
//! Each exchange has a build and a process step for both roles (initiator: build the
//! request, then process the response; responder: process the request, then build the
//! response), in the manner of strongSwan's task modules, so that the SA state machine
//! in [`crate::sa`] only queues exchanges and routes messages to them.

pub mod child;
pub mod create_child_sa;
pub mod ike_auth;
pub mod ike_sa_init;
pub mod informational;
