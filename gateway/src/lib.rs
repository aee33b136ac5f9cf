//! The Rivulet gateway: a broker for Rivulet clients with an embedded event store, and the
//! commands of the `rivulet` CLI.
//!
//! - [`config`]: settings from defaults, a TOML file and flags.
//! - [`auth`]: client logins (challenge-response) and per-client ACLs.
//! - [`store`]: the [`store::EventStore`] trait and its redb backend.
//! - [`broker`]: ids, group commits, notifications, the latest table and queries.
//! - [`gateway`]: `rivulet gateway`, which wires them to a listening server.
//! - [`metrics`]: the Prometheus endpoint (`--metrics ADDR`).
//! - [`cli`]: `rivulet pub`, `sub`, `query` and `status`.

pub mod auth;
pub mod bench;
pub mod broker;
pub mod cli;
pub mod config;
pub mod gateway;
pub mod metrics;
pub mod out;
pub mod store;
