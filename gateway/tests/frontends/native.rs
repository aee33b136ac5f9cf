//! The native front-end's clients (`rivulet-tokio`) over its three listeners, and one whose
//! link breaks mid-stream.

use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use rivulet_core::owned::{Event, Query, RegisterEvent};
use rivulet_core::wire::Framing;
use rivulet_gateway::frontend::native::{Forward, RQ_FORWARD, forward};
use rivulet_gateway::gateway::Gateway;
use rivulet_tokio::packet::{PacketHandler, PacketReply, PacketRequest};
use rivulet_tokio::{Client, ClientOptions, Events, connect_via_with_handler, tls};

use super::{Boxed, Endpoint, Peer, Received, Wants, within};

/// A `rivulet-tokio` client: the native front-end's, over any of its listeners.
pub struct Native {
    client: Client,
    events: Events,
}

impl Peer for Native {
    fn publish(&mut self, events: Vec<RegisterEvent>) -> Boxed<'_, ()> {
        Box::pin(async move {
            let mut last = None;
            for event in events {
                last = Some(within("register", self.client.register(event)).await.expect("in the outbox"));
            }
            if let Some(last) = last {
                within("stored", self.client.registered(last)).await.expect("stored");
            }
        })
    }

    fn next_event(&mut self) -> Boxed<'_, Received> {
        Box::pin(async move { Received::of(&within("an event", self.events.next()).await.expect("the client runs")) })
    }

    fn history(&mut self, query: Query) -> Boxed<'_, Option<Vec<Event>>> {
        Box::pin(async move { Some(within("query", self.client.query_all(query)).await.expect("answered")) })
    }

    fn call(&mut self, target: &str, rq_type: u64, payload: Vec<u8>) -> Boxed<'_, Result<Vec<u8>, String>> {
        let forward = Forward { client: target.to_string(), rq_type, flags: 0, payload };
        let body = forward::encode(&forward).expect("encodes");
        Box::pin(async move {
            let answer = within("a call", self.client.request(RQ_FORWARD, 0, body)).await;
            answer.map(|reply| reply.payload).map_err(|e| e.to_string())
        })
    }
}

/// Answers request type 7 with `name:payload`, so a caller sees whom it reached.
pub struct Echo(pub String);

impl PacketHandler for Echo {
    async fn handle(&self, request: PacketRequest) -> Result<PacketReply, String> {
        match request.rq_type {
            7 => Ok(PacketReply::new(0, [self.0.as_bytes(), b":", &request.payload].concat())),
            other => Err(format!("no request type {other} here")),
        }
    }
}

/// The native front-end's listeners: plain TCP, TLS (trusting `ca`) and serial lines over TCP.
pub fn native_endpoints(gateway: &Gateway, ca: &Path) -> Vec<Endpoint> {
    let tcp = gateway.local_addr();
    let tls_addr = gateway.tls_addr().expect("a TLS listener");
    let serial = gateway.serial_addr().expect("a serial listener");
    let trust = tls::client_config(ca).expect("the test CA");
    let options = |wants: &Wants| ClientOptions {
        subscriptions: wants.subscriptions.clone(),
        persisted: wants.persisted,
        ..ClientOptions::new(wants.name.clone())
    };
    let peer = |connected: Result<(Client, Events), rivulet_tokio::ClientError>| -> Box<dyn Peer> {
        let (client, events) = connected.expect("connects");
        Box::new(Native { client, events })
    };
    vec![
        Endpoint {
            name: "tcp",
            persistence: true,
            connect: Box::new(move |wants| {
                let options = options(&wants);
                Box::pin(async move {
                    let echo = Echo(wants.name.clone());
                    peer(within("connect", rivulet_tokio::connect_with_handler(tcp, options, echo)).await)
                })
            }),
        },
        Endpoint {
            name: "tls",
            persistence: true,
            connect: Box::new(move |wants| {
                let options = options(&wants);
                let connector = tls::Connector::new(tls_addr.to_string(), "localhost", trust.clone()).expect("a name");
                Box::pin(async move {
                    let echo = Echo(wants.name.clone());
                    peer(within("connect", connect_via_with_handler(connector, options, echo)).await)
                })
            }),
        },
        Endpoint {
            name: "serial",
            persistence: true,
            connect: Box::new(move |wants| {
                let options = ClientOptions { framing: Framing::Serial, ..options(&wants) };
                Box::pin(async move {
                    let echo = Echo(wants.name.clone());
                    peer(within("connect", rivulet_tokio::connect_with_handler(serial, options, echo)).await)
                })
            }),
        },
    ]
}

/// Plain TCP whose first connection breaks after `budget` bytes written: the client reconnects,
/// resumes its session and sends again what was not acknowledged. Also the count of connections
/// its clients made.
pub fn cut_once_endpoint(gateway: &Gateway, budget: usize) -> (Endpoint, Arc<AtomicUsize>) {
    let addr = gateway.local_addr();
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = connections.clone();
    let endpoint = Endpoint {
        name: "tcp-cut",
        persistence: true,
        connect: Box::new(move |wants| {
            let connections = connections.clone();
            let connector = move || {
                let first = connections.fetch_add(1, Ordering::SeqCst) == 0;
                async move {
                    let stream = tokio::net::TcpStream::connect(addr).await?;
                    stream.set_nodelay(true)?;
                    Ok(CutAfter { inner: stream, left: first.then_some(budget) })
                }
            };
            let options =
                ClientOptions { subscriptions: wants.subscriptions.clone(), ..ClientOptions::new(wants.name) };
            Box::pin(async move {
                let (client, events) = within("connect", rivulet_tokio::connect_via(connector, options)).await.unwrap();
                Box::new(Native { client, events }) as Box<dyn Peer>
            })
        }),
    };
    (endpoint, counted)
}

/// A stream whose writes fail once `left` bytes went out (`None`: never).
pub struct CutAfter {
    inner: tokio::net::TcpStream,
    left: Option<usize>,
}

impl tokio::io::AsyncRead for CutAfter {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for CutAfter {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let allowed = match self.left {
            Some(0) => return Poll::Ready(Err(std::io::ErrorKind::BrokenPipe.into())),
            Some(left) => left.min(buf.len()),
            None => buf.len(),
        };
        let polled = Pin::new(&mut self.inner).poll_write(cx, &buf[..allowed]);
        if let (Poll::Ready(Ok(n)), Some(left)) = (&polled, self.left) {
            self.left = Some(left - n);
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
