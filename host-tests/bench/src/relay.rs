//! The ceiling: a raw TCP relay that does nothing a broker must not skip. A connection says what
//! it is with its first byte: `S` (subscriber, answered with `!` once it is registered) or `P`
//! (publisher). Publishers send length-prefixed messages (u32 little-endian length, then the
//! payload); the relay cuts what it read at the last complete message and hands that chunk, shared
//! and uncopied, to every subscriber's writer, which writes it out as it is. No parsing beyond the
//! lengths, no routing, no storage. A subscriber's queue is bounded, so a slow one holds the
//! publishers back instead of losing messages.
//!
//! The server runs in its own process (`compare relay`), so its CPU time is measured like a
//! broker's; the clients here are the load generator's.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, oneshot};

use crate::drive::{Protocol, Publisher, Subscriber};

/// Largest message the relay accepts; a larger length means the stream is not ours.
const MAX_MESSAGE: usize = 1 << 20;
/// Chunks (each at most a read's worth) waiting for one subscriber.
const SUBSCRIBER_QUEUE: usize = 64;
/// Bytes gathered into one write.
const WRITE_BATCH: usize = 64 * 1024;

type Subscribers = Arc<Mutex<Arc<Vec<mpsc::Sender<Bytes>>>>>;

/// Runs the relay on `listen` until the process is stopped.
pub async fn serve(listen: SocketAddr) -> Result<(), String> {
    let listener =
        tokio::net::TcpListener::bind(listen).await.map_err(|e| format!("relay: cannot listen on {listen}: {e}"))?;
    println!("relay listening on {listen}");
    let subscribers: Subscribers = Arc::default();
    loop {
        let (stream, peer) = listener.accept().await.map_err(|e| format!("relay: accept failed: {e}"))?;
        let subscribers = subscribers.clone();
        tokio::spawn(async move {
            if let Err(e) = connection(stream, subscribers).await {
                eprintln!("relay: connection from {peer}: {e}");
            }
        });
    }
}

async fn connection(mut stream: TcpStream, subscribers: Subscribers) -> Result<(), String> {
    stream.set_nodelay(true).map_err(|e| format!("set_nodelay: {e}"))?;
    match stream.read_u8().await.map_err(|e| format!("reading the role byte: {e}"))? {
        b'S' => {
            let (tx, rx) = mpsc::channel(SUBSCRIBER_QUEUE);
            {
                let mut list = subscribers.lock().unwrap_or_else(|e| e.into_inner());
                let mut grown = Vec::clone(&list);
                grown.push(tx);
                *list = Arc::new(grown);
            }
            stream.write_u8(b'!').await.map_err(|e| format!("answering a subscriber: {e}"))?;
            let (_, write) = stream.into_split();
            forward(write, rx).await
        }
        b'P' => {
            let (read, _) = stream.into_split();
            relay(read, subscribers).await
        }
        other => Err(format!("unknown role byte {other:#04x} (expected S or P)")),
    }
}

/// A subscriber's writer: everything queued, gathered into writes of up to `WRITE_BATCH`.
async fn forward(mut write: OwnedWriteHalf, mut rx: mpsc::Receiver<Bytes>) -> Result<(), String> {
    let mut batch = Vec::with_capacity(WRITE_BATCH);
    while let Some(chunk) = rx.recv().await {
        let Ok(next) = rx.try_recv() else {
            write.write_all(&chunk).await.map_err(|e| format!("writing to a subscriber: {e}"))?;
            continue;
        };
        batch.clear();
        batch.extend_from_slice(&chunk);
        batch.extend_from_slice(&next);
        while batch.len() < WRITE_BATCH {
            let Ok(more) = rx.try_recv() else { break };
            batch.extend_from_slice(&more);
        }
        write.write_all(&batch).await.map_err(|e| format!("writing to a subscriber: {e}"))?;
    }
    Ok(())
}

/// A publisher's reader: complete messages, as read, to every subscriber.
async fn relay(mut read: OwnedReadHalf, subscribers: Subscribers) -> Result<(), String> {
    let mut buffer = BytesMut::with_capacity(WRITE_BATCH);
    loop {
        if buffer.capacity() - buffer.len() < WRITE_BATCH / 4 {
            buffer.reserve(WRITE_BATCH);
        }
        if read.read_buf(&mut buffer).await.map_err(|e| format!("reading from a publisher: {e}"))? == 0 {
            return Ok(());
        }
        let complete = complete_messages(&buffer)?;
        if complete == 0 {
            continue;
        }
        let chunk = buffer.split_to(complete).freeze();
        let list = subscribers.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut gone = false;
        for tx in list.iter() {
            gone |= tx.send(chunk.clone()).await.is_err();
        }
        if gone {
            let mut list = subscribers.lock().unwrap_or_else(|e| e.into_inner());
            *list = Arc::new(list.iter().filter(|tx| !tx.is_closed()).cloned().collect());
        }
    }
}

/// Bytes at the start of `buffer` that hold whole messages.
fn complete_messages(buffer: &[u8]) -> Result<usize, String> {
    let mut end = 0;
    while let Some(prefix) = buffer.get(end..end + 4) {
        let length = u32::from_le_bytes(prefix.try_into().unwrap_or_default()) as usize;
        if length > MAX_MESSAGE {
            return Err(format!("a message of {length} bytes: over {MAX_MESSAGE}, not a relay stream"));
        }
        if buffer.len() - end - 4 < length {
            break;
        }
        end += 4 + length;
    }
    Ok(end)
}

/// Clients of a relay on `127.0.0.1:port`.
pub struct Relay {
    pub port: u16,
}

async fn connect(port: u16, role: u8) -> Result<TcpStream, String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| format!("relay connect to 127.0.0.1:{port} failed: {e}"))?;
    stream.set_nodelay(true).map_err(|e| format!("set_nodelay: {e}"))?;
    stream.write_u8(role).await.map_err(|e| format!("relay: sending the role byte: {e}"))?;
    Ok(stream)
}

pub struct RelaySubscriber {
    read: OwnedReadHalf,
    _write: OwnedWriteHalf,
    buffer: BytesMut,
}

impl Subscriber for RelaySubscriber {
    async fn next(&mut self) -> Result<Option<Bytes>, String> {
        loop {
            if let Some(prefix) = self.buffer.get(..4) {
                let length = u32::from_le_bytes(prefix.try_into().unwrap_or_default()) as usize;
                if length > MAX_MESSAGE {
                    return Err(format!("relay sent a {length}-byte message: the stream is corrupt"));
                }
                if self.buffer.len() >= 4 + length {
                    self.buffer.advance(4);
                    return Ok(Some(self.buffer.split_to(length).freeze()));
                }
            }
            if self.buffer.capacity() - self.buffer.len() < WRITE_BATCH / 4 {
                self.buffer.reserve(WRITE_BATCH);
            }
            if self.read.read_buf(&mut self.buffer).await.map_err(|e| format!("relay: reading: {e}"))? == 0 {
                return Ok(None);
            }
        }
    }
}

enum Command {
    Message(Vec<u8>),
    Flush(oneshot::Sender<()>),
}

/// Publishes through a writer task that gathers whatever is queued into one write (as the NATS
/// client does), so an idle publisher sends each message at once and a busy one in batches.
pub struct RelayPublisher {
    tx: mpsc::Sender<Command>,
    writer: tokio::task::JoinHandle<Result<(), String>>,
}

impl Drop for RelayPublisher {
    fn drop(&mut self) {
        self.writer.abort();
    }
}

async fn write_messages(mut write: OwnedWriteHalf, mut rx: mpsc::Receiver<Command>) -> Result<(), String> {
    let mut batch = Vec::with_capacity(WRITE_BATCH);
    while let Some(command) = rx.recv().await {
        let mut flushed = Vec::new();
        let mut next = Some(command);
        while let Some(command) = next.take() {
            match command {
                Command::Message(payload) => {
                    batch.extend_from_slice(&(payload.len() as u32).to_le_bytes());
                    batch.extend_from_slice(&payload);
                }
                Command::Flush(done) => flushed.push(done),
            }
            if batch.len() < WRITE_BATCH {
                next = rx.try_recv().ok();
            }
        }
        write.write_all(&batch).await.map_err(|e| format!("relay: writing: {e}"))?;
        batch.clear();
        for done in flushed {
            let _ = done.send(());
        }
    }
    Ok(())
}

impl RelayPublisher {
    async fn writer_failed(&mut self) -> String {
        match (&mut self.writer).await {
            Ok(Err(e)) => e,
            Ok(Ok(())) => "relay: the writer stopped".into(),
            Err(e) => format!("relay: the writer panicked: {e}"),
        }
    }
}

impl Publisher for RelayPublisher {
    async fn publish(&mut self, payload: Vec<u8>) -> Result<(), String> {
        if self.tx.send(Command::Message(payload)).await.is_err() {
            return Err(self.writer_failed().await);
        }
        Ok(())
    }

    async fn finish(&mut self) -> Result<(), String> {
        let (done, written) = oneshot::channel();
        if self.tx.send(Command::Flush(done)).await.is_err() || written.await.is_err() {
            return Err(self.writer_failed().await);
        }
        Ok(())
    }
}

impl Protocol for Relay {
    type Sub = RelaySubscriber;
    type Pub = RelayPublisher;

    async fn subscriber(&self, _index: u32) -> Result<RelaySubscriber, String> {
        let mut stream = connect(self.port, b'S').await?;
        match stream.read_u8().await {
            Ok(b'!') => {}
            Ok(other) => return Err(format!("relay answered {other:#04x} instead of '!'")),
            Err(e) => return Err(format!("relay did not confirm the subscription: {e}")),
        }
        let (read, write) = stream.into_split();
        Ok(RelaySubscriber { read, _write: write, buffer: BytesMut::with_capacity(WRITE_BATCH) })
    }

    async fn publisher(&self, _index: u32) -> Result<RelayPublisher, String> {
        let (read, write) = connect(self.port, b'P').await?.into_split();
        drop(read);
        let (tx, rx) = mpsc::channel(1024);
        Ok(RelayPublisher { tx, writer: tokio::spawn(write_messages(write, rx)) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_end_at_message_boundaries() {
        let mut stream = Vec::new();
        for length in [3u32, 0, 5] {
            stream.extend_from_slice(&length.to_le_bytes());
            stream.extend(std::iter::repeat_n(7u8, length as usize));
        }
        assert_eq!(complete_messages(&stream), Ok(stream.len()));
        assert_eq!(complete_messages(&stream[..stream.len() - 1]), Ok(7 + 4));
        assert_eq!(complete_messages(&stream[..2]), Ok(0));
        assert!(complete_messages(&u32::MAX.to_le_bytes()).is_err());
    }
}
