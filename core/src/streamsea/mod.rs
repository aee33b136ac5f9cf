//! stream-sea (stream-sea-client 0.7.0 and the seed's wire spec): streams of JSON messages
//! with versioned schemas, a REST API for the schemas and a websocket for subscriptions.
//!
//! - [`ws`]: the websocket's JSON messages: what a client sends (authenticate, subscribe) read
//!   into [`ws::ClientMessage`], the conversation rules (ids from 1, one more each time,
//!   authentication first and once) in [`ws::Conversation`], and the server's replies and
//!   deliveries written as the client checks them.
//! - [`schema`]: a stream's schema (`{"name","version","fields"}`), read and written as the
//!   client writes it, and the check of a JSON payload against it.
//! - [`rest`]: the other REST bodies: the versions vector and a publish.
//!
//! Everything needs `alloc` and serde_json (feature `streamsea`): messages and schemas are JSON
//! of any size. Nothing panics on input; every bad message or schema is an error that says
//! what is wrong. docs/STREAMSEA.md has the rules and where the client and the spec disagree.

pub mod rest;
pub mod schema;
pub mod ws;
