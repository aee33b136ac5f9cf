//! Chaski (chaski-confluent 0.1a5) on the wire, for a gateway's Chaski link (docs/CHASKI.md):
//! its TCP framing ([`frame`], no allocation) and, with the `chaski` feature, its messages in the
//! JSON codec that Chaski nodes are given in place of pickle ([`message`]).

pub mod frame;
#[cfg(feature = "chaski")]
pub mod message;
