//! Listeners: accepting TCP connections (within the connection limit), making each one's stream
//! ([`Accept`]: a TLS handshake, say) in its own task, and counting the bytes that pass.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use rivulet_core::wire::Framing;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use super::accept_errors::AcceptErrors;
use super::connection::serve_connection;
use super::{ServerHandler, Shared};
#[cfg(doc)]
use super::{ServerOptions, ServerStats};

/// Makes the stream a connection runs over from the accepted TCP connection: a TLS handshake,
/// say. It runs in the connection's own task, within [`ServerOptions::handshake_timeout`], so a
/// slow or failing handshake holds up no other client; a failure is logged with the peer's
/// address and counted in [`ServerStats::handshake_failed`].
///
/// Any `Fn(TcpStream) -> impl Future<Output = io::Result<S>>` accepts; with the `tls` feature,
/// `tls::Acceptor` does.
pub trait Accept: Send + Sync + 'static {
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + Sync + 'static;

    fn accept(&self, stream: TcpStream) -> impl Future<Output = std::io::Result<Self::Stream>> + Send;
}

impl<F, Fut, S> Accept for F
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = std::io::Result<S>> + Send,
    S: AsyncRead + AsyncWrite + Unpin + Send + Sync + 'static,
{
    type Stream = S;

    fn accept(&self, stream: TcpStream) -> impl Future<Output = std::io::Result<S>> + Send {
        self(stream)
    }
}

/// Plain TCP: the accepted connection is the stream.
pub(super) async fn plain(stream: TcpStream) -> std::io::Result<TcpStream> {
    Ok(stream)
}

pub(super) async fn accept_loop<H: ServerHandler, A: Accept>(
    listener: TcpListener,
    shared: Arc<Shared>,
    handler: Arc<H>,
    accept: Arc<A>,
    framing: Framing,
) {
    let mut stop = shared.shutdown.subscribe();
    let mut tasks = JoinSet::new();
    let mut errors = AcceptErrors::default();
    while !*stop.borrow_and_update() {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    errors.succeeded("rivulet");
                    shared.stats.accepted.fetch_add(1, Ordering::Relaxed);
                    // Connections not yet admitted hold buffers too: past a tenth more than the
                    // limit, close at once (the others get a refusal with a reason at init).
                    if tasks.len() > shared.max_connections + shared.max_connections / 10 {
                        shared.stats.over_limit.fetch_add(1, Ordering::Relaxed);
                        log::warn!("connection from {peer} closed: {} connections open", tasks.len());
                        continue;
                    }
                    if let Err(e) = stream.set_nodelay(true) {
                        log::debug!("set_nodelay for {peer}: {e}");
                    }
                    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
                    let (shared, handler, accept) = (shared.clone(), handler.clone(), accept.clone());
                    tasks.spawn(handshake_then_serve(stream, peer, id, shared, handler, accept, framing));
                }
                // Out of file descriptors, say: let connections end before trying again.
                Err(e) => errors.failed("rivulet", &e, &shared.stats.accept_failed, &mut stop).await,
            },
            Some(done) = tasks.join_next() => {
                if let Err(e) = done {
                    log::error!("connection task failed: {e}");
                }
            }
            _ = stop.changed() => {}
        }
    }
    drop(listener);
    while let Some(done) = tasks.join_next().await {
        if let Err(e) = done {
            log::error!("connection task failed: {e}");
        }
    }
}

/// Makes the connection's stream with `accept`, then serves it. Shutting down abandons a
/// handshake in progress.
async fn handshake_then_serve<H: ServerHandler, A: Accept>(
    stream: TcpStream,
    peer: SocketAddr,
    id: u64,
    shared: Arc<Shared>,
    handler: Arc<H>,
    accept: Arc<A>,
    framing: Framing,
) {
    let mut shutdown = shared.shutdown.subscribe();
    let handshake = tokio::time::timeout(shared.handshake_timeout, accept.accept(stream));
    let made = tokio::select! {
        made = handshake => made,
        _ = shutdown.wait_for(|stop| *stop) => return,
    };
    let failure = match made {
        Ok(Ok(stream)) => {
            let counted = Counted { inner: stream, shared: shared.clone() };
            return serve_connection(Box::new(counted), peer, id, shared, handler, framing).await;
        }
        Ok(Err(e)) => e.to_string(),
        Err(_) => format!("none within {:?}", shared.handshake_timeout),
    };
    shared.stats.handshake_failed.fetch_add(1, Ordering::Relaxed);
    log::info!("connection {id} from {peer}: handshake failed: {failure}");
}

/// A client's stream that adds what passes through it to the server's byte counters (after TLS:
/// the protocol's own bytes).
struct Counted<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Counted<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = buf.filled().len().saturating_sub(before) as u64;
        self.shared.stats.bytes_in.fetch_add(read, Ordering::Relaxed);
        polled
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_write(cx, buf);
        if let std::task::Poll::Ready(Ok(written)) = &polled {
            self.shared.stats.bytes_out.fetch_add(*written as u64, Ordering::Relaxed);
        }
        polled
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
