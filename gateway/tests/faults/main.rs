//! Fault injection against the real `rivulet gateway` process (issue 6, "Robustness").
//!
//! Each test starts the binary with its metrics endpoint, runs normal clients beside the fault
//! ([`Steady`]: a producer registering numbered events at a fixed pace and a subscriber checking
//! every number), injects the fault over raw TCP or with misbehaving clients, and asserts:
//!
//! - the normal clients got every event published during the fault, in order, exactly once, on
//!   the link they started with (no drop, no reconnect), and the store holds every acknowledged
//!   registration once, in order;
//! - the subscriber kept receiving at the producer's rate throughout: at every tick of the
//!   producer it lacked at most [`STEADY_BEHIND`] of the events the gateway had acknowledged (a
//!   count, not a time), and the clients run on after the fault until that many more than it has
//!   are acknowledged, so that a short fault that stopped it fails too;
//! - the gateway handled the fault as docs/GATEWAY.md says: only the faulty connections ended,
//!   with the reason where there is one, counted in `--metrics`, and its memory did not follow;
//! - the gateway stops cleanly on SIGTERM afterwards and logged no panic.
//!
//! No assertion is about time: the waits are bounded by [`PATIENCE`] only to turn a hang into a
//! failure. The tests print what they measured (`-- --nocapture`); docs/RELIABILITY.md, "Fault
//! injection", has the figures. kill -9 mid-stream is covered by `crash.rs`, not repeated here.

#[path = "../common/mod.rs"]
mod common;
mod gateway;
mod raw;
mod steady;

mod connections;
mod flow;
mod input;
mod load;
mod memory;
mod messages;
mod names;
mod queries;
mod random;
mod store;
