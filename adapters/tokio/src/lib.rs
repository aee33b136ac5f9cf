//! Rivulet on tokio. The protocol lives in `rivulet-core`; this crate runs its machines in tokio
//! tasks and gives them async handles:
//!
//! - [`client`]: a Rivulet client: register, subscribe, query, requests, notified events as a
//!   stream, reconnect with jittered backoff and session resume.
//! - [`server`]: a Rivulet server (hat's eventer server): admission, registrations handed to a
//!   store, queries, requests both ways, notifications to matching clients, status, shutdown.
//! - [`fanout`]: events to subscribers in publish order, cutting off one that falls behind; a
//!   server makes its own or shares a gateway's with its other protocol front-ends.
//! - [`hat`]: a hat-event Eventer client (chatter + SBS), for hat's own servers and the
//!   gateway's hat front-end.
//! - [`kelvin`]: a Kelvin stream client (the SDK's `KelvinStream`), for Rust Kelvin apps.
//! - [`packet`]: plain cs.packetstream calls, wire-compatible with the Python `PacketConnection`.
//! - [`model`]: owned forms of the core's events, types and queries (`rivulet_core::owned`,
//!   re-exported: the model a client speaks, without a second dependency to name).
//! - `tls` (feature `tls`): TLS for both, on rustls with the ring backend.
//!
//! Links run over TCP ([`connect`], [`listen`]) or over any tokio byte stream: a client takes a
//! [`Connect`] that opens one on every (re)connect ([`connect_via`]), a server an [`Accept`] that
//! makes one of each accepted TCP connection ([`Server::from_listener_with`]).
//!
//! Each handle owns a task that holds the connection, the machine and the driver; the handle
//! sends it commands over a bounded channel and awaits answers. A publisher that registers fast
//! keeps several registrations in flight with [`Client::submit`] instead of awaiting each
//! [`Client::register`]: the task takes them in bursts and writes them together.
//!
//! A client (the README shows the same):
//!
//! ```no_run
//! use rivulet_tokio::model::{Payload, RegisterEvent};
//! use rivulet_tokio::{ClientOptions, connect};
//!
//! # async fn run() -> Result<(), rivulet_tokio::ClientError> {
//! let (client, mut events) = connect("127.0.0.1:7780", ClientOptions::new("thermostat")).await?;
//! client.subscribe("command/thermostat/*").await?;
//! let temp = RegisterEvent::new("sensor/room1/temp", Some(Payload::Json("21.5".into())));
//! let seq = client.register(temp).await?; // kept in the outbox across reconnects
//! client.registered(seq).await?; // stored by the server, exactly once
//! while let Some(command) = events.next().await {
//!     println!("{} {:?}", command.event_type, command.payload);
//! }
//! # Ok(()) }
//! ```

pub mod client;
pub mod fanout;
pub mod hat;
pub mod kelvin;
mod link;
pub use rivulet_core::owned as model;
pub mod packet;
pub mod server;
#[cfg(feature = "tls")]
pub mod tls;

pub use client::{
    Client, ClientError, ClientOptions, ClientState, Connect, Events, Submitted, connect, connect_via,
    connect_via_with_handler, connect_with_handler,
};
pub use link::{Backoff, Jitter, TokioClock};
pub use packet::{CallError, PacketConfig, PacketConnection, PacketHandler, PacketReply, PacketRequest};
pub use server::{Accept, Admission, ClientInfo, Registration, Server, ServerHandler, ServerOptions, listen};
