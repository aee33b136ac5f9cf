//! Rivulet on embassy: the device side. `no_std`, no allocation, every byte sized at compile time.
//!
//! The protocol is `rivulet-core`'s client machine; this crate runs it in the embassy way. The
//! application provides a [`State`] and two link buffers, and [`new`] splits them into:
//!
//! - a [`Runner`], to spawn in a task of its own. It owns the machine, the transport and the
//!   buffers, keeps a link to the gateway up (reconnecting with jittered backoff on embassy-time,
//!   resuming the session) and never returns;
//! - a [`Device`], the handle the application shares by reference across its tasks: register
//!   events (kept in the outbox until acknowledged, across reconnects, online or offline),
//!   subscribe, take notified events and the server's requests, answer those, watch the link.
//!
//! Layers, each a module: [`connect`] (transports: [`Serial`] over a UART, and with the `net`
//! feature [`TcpConnector`] over embassy-net), [`time`] (the core driver's clock and the backoff),
//! the shared [`State`] with its queues, the [`Runner`] loop, and the [`Device`] handle.
//!
//! Events are never dropped and memory stays fixed: the device announces its event queue's
//! length as its window, and the acknowledgement of each event goes out only once the
//! application took it from the queue, so a slow reader holds the server back while the link
//! keeps answering pings.
//!
//! A device over TCP in ten lines (in firmware, the runner goes in its own task instead of the
//! `join`; `Runner<'static, TcpConnector<'static>>` is its type):
//!
//! ```no_run
//! use embassy_futures::join::join;
//! use embassy_net::{Ipv4Address, Stack};
//! use rivulet_core::model::EventPayloadRef;
//! use rivulet_embassy::{Config, Device, Error, State, TcpConnector};
//!
//! async fn thermostat(stack: Stack<'_>) {
//!     let ([mut socket_rx, mut socket_tx], [mut rx, mut tx]) = ([[0; 1024]; 2], [[0; 1024]; 2]);
//!     let gateway = (Ipv4Address::new(192, 168, 1, 10), 7780);
//!     let tcp = TcpConnector::new(stack, gateway, &mut socket_rx, &mut socket_tx);
//!     let state: State = State::new();
//!     let (device, mut runner) = rivulet_embassy::new(&state, Config::new("thermostat"), tcp, &mut rx, &mut tx);
//!     join(runner.run(), app(&device)).await;
//! }
//!
//! async fn app(device: &Device<'_>) -> Result<(), Error> {
//!     device.subscribe("command/thermostat/*").await?; // sent again with every init
//!     device.register("sensor/room1/temp", None, Some(EventPayloadRef::Json("21.5"))).await?;
//!     loop {
//!         let command = device.next_event().await; // acknowledged now that it is taken
//!         let _ = (command.event_type, command.payload);
//!     }
//! }
//! ```
//!
//! # RAM
//!
//! Measured with `core::mem::size_of` for thumbv7em-none-eabihf, the way docs/PROTOCOL.md §6
//! describes (compile-time probes in a throw-away crate), default capacities:
//!
//! | What | Bytes |
//! |---|---:|
//! | `State` (`EVENTS` = 4, `REQUESTS` = 2) | **3104** |
//! | ├ event queue: 40 + 432 per [`Event`] (64-byte type, 256-byte payload) | 1768 |
//! | ├ request queue: 40 + 304 per [`Request`] (256-byte payload) | 648 |
//! | └ call slot (one command, copied in), signals, status watch | 688 |
//! | `Runner<TcpConnector>` (the core `Client`: 3040 of it) | **3376** |
//! | `Runner<Serial<U>>` (plus the UART `U`) | **3352** |
//! | the future of `Runner::run` (a link's `Driver` and what it waits on) | **728** (serial too) |
//! | `Device` / `StatusWatcher` / `LinkStatus` | 20 / 16 / 112 |
//!
//! On top of that come the caller's link buffers (`rx`, `tx`; 1 KiB each is a good size) and,
//! over TCP, the socket's buffers. A device over TCP with 1 KiB for each of those four needs
//! 3104 + 3376 + 728 + 4096 = 11304 bytes, about 11 KiB, besides embassy-net's own stack. Each
//! further event in the queue costs 432 bytes, each request 304. `adapters/embassy/README.md`
//! has the table too.
//!
//! # Features
//!
//! `net` (default): [`TcpConnector`]. `dns`: `TcpConnector::to_host`. `defmt` / `log`: where
//! log lines go. `Cargo.toml` says more.
#![cfg_attr(not(test), no_std)]
#![deny(unsafe_code)]
#![warn(missing_debug_implementations)]

#[macro_use]
mod fmt;
#[cfg(feature = "login")]
pub mod login;
#[cfg(feature = "ota")]
pub mod ota;
#[cfg(any(feature = "login", feature = "ota"))]
mod sha;

mod config;
pub mod connect;
mod device;
mod runner;
mod state;
mod status;
pub mod time;

use embassy_sync::blocking_mutex::raw::RawMutex;
use embassy_sync::channel::SendDynamicReceiver;
use rivulet_core::session::{Client, ClientConfig};
use rivulet_core::wire::{FrameWriter, LinkDecoder};

pub use config::Config;
pub use connect::{Connect, Framing, Serial};
#[cfg(feature = "net")]
pub use connect::{TcpConnectError, TcpConnector};
pub use device::{Device, Error, Event, Request, RequestFrom, StatusWatcher, ToEventType};
pub use rivulet_core::model::{PAYLOAD_BYTES, TYPE_BYTES};
pub use runner::{REQUEST_QUEUE_FULL, REQUEST_TOO_LARGE, Runner};
pub use state::{ANSWER_BYTES, REASON_BYTES, REQUEST_BYTES, STATUS_WATCHERS, State};
pub use status::LinkStatus;
pub use time::{Backoff, EmbassyClock};

/// Splits `state` into the application's [`Device`] handle and the [`Runner`] to spawn, with the
/// core client's default capacities (a 1 KiB outbox, 4 requests in flight, 8 event types each
/// way, 128 bytes of subscription patterns); [`new_with_capacities`] chooses others.
///
/// `rx` and `tx` carry every link; each bounds the largest packet that way (the init tells the
/// server what `rx` takes). A registration or an answer larger than `tx` never leaves: give
/// `tx` at least 512 bytes, which holds the largest event this crate builds.
pub fn new<'d, C: Connect, M: RawMutex + Sync + Send, const EVENTS: usize, const REQUESTS: usize>(
    state: &'d State<M, EVENTS, REQUESTS>,
    config: Config<'d>,
    connector: C,
    rx: &'d mut [u8],
    tx: &'d mut [u8],
) -> (Device<'d, M>, Runner<'d, C, M, EVENTS, REQUESTS>) {
    new_with_capacities(state, config, connector, rx, tx)
}

/// [`new`] with the core client's capacities chosen: `OUTBOX` bytes of registrations waiting
/// for acknowledgement, `INFLIGHT` requests awaiting answers, `ALIASES` event types declared each
/// way, `SUBS` bytes of subscription patterns (a pattern takes 1 + its packed length). Name them
/// with a turbofish: `new_with_capacities::<_, _, _, _, 4096, 4, 16, 256>(...)`.
pub fn new_with_capacities<
    'd,
    C: Connect,
    M: RawMutex + Sync + Send,
    const EVENTS: usize,
    const REQUESTS: usize,
    const OUTBOX: usize,
    const INFLIGHT: usize,
    const ALIASES: usize,
    const SUBS: usize,
>(
    state: &'d State<M, EVENTS, REQUESTS>,
    config: Config<'d>,
    connector: C,
    rx: &'d mut [u8],
    tx: &'d mut [u8],
) -> (Device<'d, M>, Runner<'d, C, M, EVENTS, REQUESTS, OUTBOX, INFLIGHT, ALIASES, SUBS>) {
    const { assert!(EVENTS > 0 && EVENTS <= u16::MAX as usize, "EVENTS is the window: 1 to 65535") };
    let mut client = ClientConfig::new(config.client_name);
    client.credential = config.credential;
    client.server_id = config.server_id;
    client.persisted = config.persisted;
    client.keepalive = config::core_duration(config.keepalive);
    client.request_timeout = config::core_duration(config.request_timeout);
    client.window = u16::try_from(EVENTS).unwrap_or(u16::MAX);
    client.max_packet = u32::try_from(C::FRAMING.max_body_len(rx.len())).unwrap_or(u32::MAX);
    // An event's ack waits until the application took it from the queue.
    client.hold_acks = true;
    let device = Device {
        shared: &state.shared,
        events: SendDynamicReceiver::from(state.events.receiver()),
        requests: SendDynamicReceiver::from(state.requests.receiver()),
    };
    let runner = Runner {
        endpoint: runner::Endpoint {
            state,
            client: Client::new(client, [0; OUTBOX]),
            link: 0,
            status: LinkStatus::INITIAL,
            published: LinkStatus::INITIAL,
            #[cfg(feature = "login")]
            token: config.token,
        },
        connector,
        decoder: LinkDecoder::new(C::FRAMING, rx),
        writer: FrameWriter::new(tx, C::FRAMING),
        backoff: config.backoff,
        jitter: time::Jitter::new(config.seed),
        connect_timeout: config.connect_timeout,
    };
    (device, runner)
}
