//! How a device presents itself and paces its links.

use embassy_time::Duration;

use crate::time::Backoff;

/// How a device presents itself, paces its links and reconnects. The notification window is not
/// here: it is the event queue's length in [`State`](crate::State), so that everything the server
/// may send ahead of the application has a place.
#[derive(Clone, Copy)]
pub struct Config<'a> {
    pub client_name: &'a str,
    /// Sent in the init as it is. A gateway with logins ignores it and challenges instead: see
    /// `token`.
    pub credential: Option<&'a [u8]>,
    /// The client's 32-byte token (from `rivulet credential`), to answer a gateway's login
    /// challenge; it never leaves the device. Without it (or without the `login` feature) a
    /// challenged init is dropped, counted in `inits_refused`, and tried again later.
    #[cfg(feature = "login")]
    pub token: Option<&'a [u8; crate::login::TOKEN_LEN]>,
    /// Receive only events registered by this server.
    pub server_id: Option<u64>,
    /// Receive events only once the server stored them durably.
    pub persisted: bool,
    /// Ping after this long without receiving; drop the link after twice as long. The server
    /// takes the device's value. Zero turns it off.
    pub keepalive: Duration,
    /// How long the server has to answer the init, a subscription or a ping.
    pub request_timeout: Duration,
    /// How long one attempt to open a transport ([`Connect::connect`](crate::Connect::connect))
    /// may take: waiting for the network, resolving, dialing.
    pub connect_timeout: Duration,
    pub backoff: Backoff,
    /// Seeds the reconnect jitter. Give each device its own (from the board's RNG, or a unique
    /// id), so devices that lost the same gateway do not all come back in the same instant.
    pub seed: u64,
}

impl<'a> Config<'a> {
    pub const fn new(client_name: &'a str) -> Self {
        Config {
            client_name,
            credential: None,
            #[cfg(feature = "login")]
            token: None,
            server_id: None,
            persisted: false,
            keepalive: Duration::from_secs(20),
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            backoff: Backoff::new(),
            seed: 0,
        }
    }
}

impl core::fmt::Debug for Config<'_> {
    // The credential stays out of logs.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Config")
            .field("client_name", &self.client_name)
            .field("credential", &self.credential.map(|c| c.len()))
            .field("login", &cfg!(feature = "login"))
            .field("server_id", &self.server_id)
            .field("persisted", &self.persisted)
            .field("keepalive", &self.keepalive)
            .field("request_timeout", &self.request_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("backoff", &self.backoff)
            .finish_non_exhaustive()
    }
}

/// The core machine's duration from embassy's.
pub(crate) fn core_duration(d: Duration) -> rivulet_core::time::Duration {
    rivulet_core::time::Duration::from_micros(d.as_micros())
}
