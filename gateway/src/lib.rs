//! The Rivulet gateway: a broker for Rivulet clients with an embedded event store, and the
//! commands of the `rivulet` CLI.
//!
//! - [`config`]: settings from defaults, a TOML file and flags, a section per front-end.
//! - [`access`]: who may do what, whatever the protocol: the configured clients, their ACLs,
//!   principals and the checks.
//! - [`store`]: the [`store::EventStore`] trait and its redb backend.
//! - [`broker`]: the protocol-neutral broker: ids, group commits, fan-out, the latest table,
//!   queries, calls across front-ends, status.
//! - [`frontend`]: one module per protocol the gateway speaks; [`frontend::native`] is Rivulet's.
//! - [`gateway`]: `rivulet gateway`, which starts the broker and its front-ends.
//! - [`files`]: the files the gateway holds (`rivulet send-file`, `files`, `fetch-file`).
//! - [`metrics`]: the Prometheus endpoint (`--metrics ADDR`).
//! - [`cli`]: `rivulet pub`, `sub`, `query` and `status`.

pub mod access;
pub mod bench;
pub mod broker;
pub mod cli;
pub mod config;
pub mod federation;
pub mod files;
pub mod frontend;
pub mod gateway;
pub mod limits;
pub mod logging;
pub mod memory;
pub mod metrics;
pub mod out;
pub mod store;
