//! Rivulet's core: the packet layer, the event model and sans-IO session machines, in
//! `no_std` without allocation. Layers, each a module, in order of dependence:
//!
//! 1. [`wire`]: cs.packetstream packets, their stream framing and a COBS+CRC serial framing.
//! 2. [`model`]: hat-event's events, types, wildcard subscriptions and queries.
//! 3. [`session`]: the Rivulet messages carried in packets, and the client and server
//!    machines (time passed in; no I/O).
//! 4. [`driver`]: one async loop that runs a machine over any `embedded_io_async` byte stream.
//!
//! All memory is fixed at compile time through const generics; docs/PROTOCOL.md lists what each
//! structure costs.
#![cfg_attr(not(any(test, feature = "std")), no_std)]
#![deny(unsafe_code)]
#![warn(missing_debug_implementations)]

#[macro_use]
mod fmt;

pub mod driver;
pub mod model;
pub mod session;
pub mod time;
pub mod wire;
