//! The Rivulet gateway: a broker for Rivulet clients with an embedded event store, and the
//! commands of the `rivulet` CLI.
//!
//! - [`store`]: the [`store::EventStore`] trait and its redb backend.
//! - [`broker`]: ids, group commits, notifications, the latest table and queries.
//! - [`gateway`]: `rivulet gateway`, which wires them to a listening server.
//! - [`cli`]: `rivulet pub`, `sub`, `query` and `status`.

pub mod broker;
pub mod cli;
pub mod gateway;
pub mod store;
