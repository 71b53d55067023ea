//! Who may talk, and how: the mesh policy model, Single Packet Authorization (SPA),
//! and the nftables pinholes that keep the IKE ports dark.
//!
//! The policy model names the members and their addresses, the protected networks,
//! what is excluded from protection, and a level per peer (`off`, `use`, `require`); a
//! pure function renders it to the XFRM policies the `xfrm` crate installs and to the
//! firewall rules. SPA packets are sealed with AES-256-GCM under a key derived with HKDF
//! from the mesh's SPA secret, carry the sender's address inside the seal, and are
//! checked against a time window and a replay cache; a valid one opens a short-lived
//! pinhole for its sender on the IKE ports in a nftables table of ikemesh's own.

pub mod gate;
pub mod knock;
pub mod model;
pub mod nft;
pub mod render;
pub mod spa;

pub use gate::SpaGate;
pub use knock::{Knocker, Step};
pub use model::{
    Exclusion, Level, Member, MeshPolicy, ModelError, Network, PortRange, Problem, Protocol,
};
pub use nft::{NftError, Pinhole, PinholeConfig, Pinholes};
pub use render::{FirewallPlan, Peer, Rendered, diff, render};
