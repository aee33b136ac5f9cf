//! Rivulet's core: the packet layer, the event model and sans-IO session machines, in
//! `no_std` without allocation. Layers, each a module, in order of dependence:
//!
//! 1. [`wire`]: cs.packetstream packets, their stream framing and a COBS+CRC serial framing.
//! 2. [`model`]: hat-event's events, types, wildcard subscriptions and queries.
//! 3. [`session`]: the Rivulet messages carried in packets, and the client and server
//!    machines (time passed in; no I/O).
//! 4. [`driver`]: one async loop that runs a machine over any `embedded_io_async` byte stream.
//!
//! With the `alloc` feature, [`owned`] adds heap-backed forms of the model and the subscription
//! index: the one std-side model that the tokio adapter, the gateway, its store and its protocol
//! front-ends share.
//!
//! Beside the session, [`login`] computes and checks the gateway login's proof, over a SHA-256
//! the caller brings, and [`packetstream`] speaks cs.packetstream's plain request/response protocol
//! (the Python `PacketConnection`) over the same packet layer and driver. [`files`] moves files
//! and firmware images in hashed chunks as application requests. [`hat`] speaks
//! hat-event's own Eventer protocol (chatter framing, SBS, the `HatEventer` messages and the
//! conversation keepalive) as a sans-IO codec, so Rivulet can talk to hat clients and servers.
//!
//! All memory is fixed by the caller: capacities through const generics, buffers it lends (the
//! link buffers, the client's outbox storage); docs/PROTOCOL.md lists what each structure costs.
//!
//! A device in a few lines (the README shows the same):
//!
//! ```no_run
//! use embedded_io_async::{Read, Write};
//! use rivulet_core::driver::{Clock, Driver, DriverError};
//! use rivulet_core::model::{EventPayloadRef, EventType};
//! use rivulet_core::session::{Client, ClientConfig, ClientEvent};
//! use rivulet_core::wire::{FrameWriter, Framing, StreamDecoder};
//!
//! async fn run<T: Read + Write>(socket: T, clock: &impl Clock) -> Result<(), DriverError<T::Error>> {
//!     let (mut rx, mut tx) = ([0u8; 1024], [0u8; 1024]);
//!     // The outbox keeps registrations until acknowledged; its storage is the caller's too.
//!     let mut client: Client<'_> = Client::new(ClientConfig::new("device-1"), [0; 1024]);
//!     let temp = EventType::<64>::parse_path("sensor/room1/temp").expect("a valid type");
//!     client.register(temp.as_ref(), None, Some(EventPayloadRef::Json("21.5"))).expect("outbox has room");
//!     client.subscribe(EventType::<64>::parse_path("command/*").expect("a valid pattern").as_ref()).expect("room");
//!     client.link_up(clock.now());
//!     let mut driver = Driver::new(socket, StreamDecoder::new(&mut rx), FrameWriter::new(&mut tx, Framing::Stream));
//!     loop {
//!         match driver.step(&mut client, clock).await? {
//!             Some(ClientEvent::Event(event)) => { /* a command arrived: event.event_type, event.payload */ }
//!             Some(ClientEvent::LinkEnded(_)) => return Ok(()), // reconnect: link_down, new socket, link_up
//!             _ => {}
//!         }
//!     }
//! }
//! ```
#![cfg_attr(not(any(test, feature = "std")), no_std)]
#![deny(unsafe_code)]
#![warn(missing_debug_implementations)]

#[cfg(feature = "alloc")]
extern crate alloc;

#[macro_use]
mod fmt;

pub mod chaski;
pub mod driver;
pub mod files;
pub mod hat;
#[cfg(any(feature = "kelvin", feature = "streamsea", feature = "chaski"))]
pub mod json;
pub mod kelvin;
pub mod login;
pub mod model;
#[cfg(feature = "alloc")]
pub mod owned;
pub mod packetstream;
pub mod session;
#[cfg(feature = "streamsea")]
pub mod streamsea;
pub mod time;
pub mod wire;
