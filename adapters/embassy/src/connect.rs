//! Transports: what the runner opens for each link. A [`Connect`] gives a byte stream and says
//! how packets are framed on it; [`Serial`] carries every link over one UART, and (feature `net`)
//! [`TcpConnector`] dials a fresh embassy-net `TcpSocket` per link.

use embedded_io_async::{Read, Write};
pub use rivulet_core::wire::Framing;

#[cfg(feature = "net")]
pub use tcp::{TcpConnectError, TcpConnector};

/// Opens the byte stream of each link. The runner calls [`Connect::connect`] for the first link
/// and again after every link that ended, so each one dials (or resolves) afresh.
pub trait Connect {
    /// The byte stream of one link. It may borrow the connector (socket buffers, a UART). Its
    /// `read` and `write` must lose nothing when their futures are dropped unfinished (the runner
    /// races them against the handle's commands): embassy-net's `TcpSocket` and buffered UARTs
    /// qualify; a DMA read dropped mid-transfer does not (on serial that costs a new link, not
    /// data, since the frame check catches it).
    type Io<'a>: Read + Write
    where
        Self: 'a;
    /// Why an attempt failed; logged, then retried after a backoff.
    type Error: core::fmt::Debug;
    /// How packets are framed on this transport: [`Framing::Stream`] on TCP, [`Framing::Serial`]
    /// (COBS + CRC, resynchronising after damage) on a UART.
    const FRAMING: Framing;

    /// Opens the transport for a new link. Bounded by [`Config::connect_timeout`](crate::Config).
    fn connect(&mut self) -> impl Future<Output = Result<Self::Io<'_>, Self::Error>>;

    /// Ends a link's transport before the next [`Connect::connect`]; `clean` when the link closed
    /// gracefully (both sides sent EOF). The default just drops it.
    fn disconnect<'a>(io: &mut Self::Io<'a>, clean: bool) -> impl Future<Output = ()>
    where
        Self: 'a,
    {
        let _ = (io, clean);
        async {}
    }
}

/// A serial line (a UART, or anything `Read + Write`) that carries the links one after another.
/// Frames are COBS + CRC-16 with a sequence byte; after a link ends (a damaged frame, a timeout)
/// the next one starts on the same line with a new init that resumes the session, the receive
/// side keeping what it buffered, since the next frame is already aligned (PROTOCOL.md §2.6).
/// Give it a buffered or ring-buffered UART (embassy-stm32's `BufferedUart`, say), whose reads
/// lose nothing when cancelled.
#[derive(Debug)]
pub struct Serial<U> {
    uart: U,
}

impl<U: Read + Write> Serial<U> {
    pub fn new(uart: U) -> Self {
        Serial { uart }
    }

    /// The line, e.g. to reconfigure it.
    pub fn uart(&mut self) -> &mut U {
        &mut self.uart
    }
}

impl<U: Read + Write> Connect for Serial<U> {
    type Io<'a>
        = &'a mut U
    where
        Self: 'a;
    type Error = core::convert::Infallible;
    const FRAMING: Framing = Framing::Serial;

    async fn connect(&mut self) -> Result<&mut U, core::convert::Infallible> {
        Ok(&mut self.uart)
    }
}

#[cfg(feature = "net")]
mod tcp {
    use embassy_net::tcp::{ConnectError, TcpSocket};
    use embassy_net::{IpEndpoint, Stack};
    use embassy_time::{Duration, with_timeout};

    use super::{Connect, Framing};

    /// How long closing a socket may take before it is dropped anyway.
    const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

    /// Links over TCP through an embassy-net stack: a new `TcpSocket` on the caller's socket
    /// buffers for each link, after the stack has an address. Nagle's algorithm is off: packets
    /// are small and an event should not wait for the previous one's ACK.
    pub struct TcpConnector<'a> {
        stack: Stack<'a>,
        /// The gateway; with a host name, only its port counts.
        remote: IpEndpoint,
        #[cfg(feature = "dns")]
        host: Option<&'a str>,
        rx: &'a mut [u8],
        tx: &'a mut [u8],
    }

    impl<'a> TcpConnector<'a> {
        /// The gateway at `remote`; `rx` and `tx` become each link's socket buffers.
        pub fn new(stack: Stack<'a>, remote: impl Into<IpEndpoint>, rx: &'a mut [u8], tx: &'a mut [u8]) -> Self {
            TcpConnector {
                stack,
                remote: remote.into(),
                #[cfg(feature = "dns")]
                host: None,
                rx,
                tx,
            }
        }

        /// The gateway by host name (an IPv4 address in text works too), resolved through the
        /// stack's DNS servers on every connect, so a gateway that moved is found again.
        #[cfg(feature = "dns")]
        pub fn to_host(stack: Stack<'a>, host: &'a str, port: u16, rx: &'a mut [u8], tx: &'a mut [u8]) -> Self {
            let unresolved = IpEndpoint::new(embassy_net::IpAddress::v4(0, 0, 0, 0), port);
            TcpConnector { stack, remote: unresolved, host: Some(host), rx, tx }
        }

        async fn endpoint(&self) -> Result<IpEndpoint, TcpConnectError> {
            #[cfg(feature = "dns")]
            if let Some(host) = self.host {
                let addresses = self
                    .stack
                    .dns_query(host, embassy_net::dns::DnsQueryType::A)
                    .await
                    .map_err(TcpConnectError::Dns)?;
                let address = addresses.first().ok_or(TcpConnectError::NoAddress)?;
                return Ok(IpEndpoint::new(*address, self.remote.port));
            }
            Ok(self.remote)
        }
    }

    impl core::fmt::Debug for TcpConnector<'_> {
        fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            let mut debug = f.debug_struct("TcpConnector");
            debug.field("remote", &self.remote);
            #[cfg(feature = "dns")]
            debug.field("host", &self.host);
            debug.finish_non_exhaustive()
        }
    }

    /// Why dialing the gateway failed.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    #[cfg_attr(feature = "defmt", derive(defmt::Format))]
    pub enum TcpConnectError {
        Connect(ConnectError),
        #[cfg(feature = "dns")]
        Dns(embassy_net::dns::Error),
        /// The host name resolved to no address.
        #[cfg(feature = "dns")]
        NoAddress,
    }

    impl Connect for TcpConnector<'_> {
        type Io<'s>
            = TcpSocket<'s>
        where
            Self: 's;
        type Error = TcpConnectError;
        const FRAMING: Framing = Framing::Stream;

        async fn connect(&mut self) -> Result<TcpSocket<'_>, TcpConnectError> {
            self.stack.wait_config_up().await;
            let endpoint = self.endpoint().await?;
            let mut socket = TcpSocket::new(self.stack, self.rx, self.tx);
            socket.set_nagle_enabled(false);
            socket.connect(endpoint).await.map_err(TcpConnectError::Connect)?;
            Ok(socket)
        }

        /// A clean close sends FIN, any other a RST, so the gateway learns at once that the link
        /// is gone; either is flushed (within a second) before the socket is dropped.
        async fn disconnect<'s>(io: &mut TcpSocket<'s>, clean: bool)
        where
            Self: 's,
        {
            if clean {
                io.close();
            } else {
                io.abort();
            }
            let _ = with_timeout(CLOSE_TIMEOUT, io.flush()).await;
        }
    }
}
