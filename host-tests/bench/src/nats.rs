//! NATS load generators (async-nats): core pub/sub and JetStream. Publisher `n` publishes on
//! `bench.RUN.pN`; every core subscriber subscribes to `bench.RUN.>`, every JetStream subscriber
//! reads the stream of `bench.RUN.>` through a consumer of its own. A subscription is active once
//! a flush (PING/PONG) after it has come back. What the client library reports (slow consumer,
//! disconnect) becomes a note.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, consumer, context::PublishAckFuture, stream};
use bytes::Bytes;
use futures_util::StreamExt;

use crate::drive::{Protocol, Publisher, Subscriber};

/// JetStream publish acknowledgements a publisher waits for at most at once: past it, `publish`
/// awaits the oldest before sending on (async publishing with a bounded window, as the NATS
/// docs suggest instead of one round trip per message).
pub const ACK_WINDOW: usize = 256;
/// How long a JetStream API request (stream, consumer) or one publish acknowledgement may take.
const JETSTREAM_PATIENCE: Duration = Duration::from_secs(30);

pub struct Nats {
    pub port: u16,
    pub run: String,
}

/// Events the client library reported on one connection, with how often each came.
type Events = Arc<Mutex<Vec<(String, u64)>>>;

/// The client library's reports, each once with how often it came.
fn describe(events: &Events) -> Vec<String> {
    let events = events.lock().unwrap_or_else(|e| e.into_inner());
    events
        .iter()
        .map(|(event, count)| if *count == 1 { event.clone() } else { format!("{event} (×{count})") })
        .collect()
}

/// Counts `text` among `events`.
fn record(events: &Events, text: String) {
    let mut recorded = events.lock().unwrap_or_else(|e| e.into_inner());
    match recorded.iter_mut().find(|(seen, _)| *seen == text) {
        Some((_, count)) => *count += 1,
        None => recorded.push((text, 1)),
    }
}

impl Nats {
    async fn connect(&self, name: String) -> Result<(async_nats::Client, Events), String> {
        let events: Events = Arc::default();
        let recorded = events.clone();
        let client = async_nats::ConnectOptions::new()
            .name(name)
            .event_callback(move |event| {
                let recorded = recorded.clone();
                async move {
                    if event == async_nats::Event::Connected {
                        return; // the first connection too: only what goes wrong is of interest
                    }
                    record(&recorded, event.to_string());
                }
            })
            .connect(format!("127.0.0.1:{}", self.port))
            .await
            .map_err(|e| format!("NATS connect to 127.0.0.1:{} failed: {e}", self.port))?;
        Ok((client, events))
    }
}

pub struct NatsSubscriber {
    _client: async_nats::Client,
    subscription: async_nats::Subscriber,
    events: Events,
}

impl Subscriber for NatsSubscriber {
    async fn next(&mut self) -> Result<Option<Bytes>, String> {
        Ok(self.subscription.next().await.map(|message| message.payload))
    }

    fn problems(&self) -> Vec<String> {
        describe(&self.events)
    }
}

pub struct NatsPublisher {
    client: async_nats::Client,
    subject: String,
}

impl Publisher for NatsPublisher {
    async fn publish(&mut self, payload: Vec<u8>) -> Result<(), String> {
        self.client
            .publish(self.subject.clone(), Bytes::from(payload))
            .await
            .map_err(|e| format!("NATS publish failed: {e}"))
    }

    async fn finish(&mut self) -> Result<(), String> {
        self.client.flush().await.map_err(|e| format!("NATS flush failed: {e}"))
    }
}

impl Protocol for Nats {
    type Sub = NatsSubscriber;
    type Pub = NatsPublisher;

    async fn subscriber(&self, index: u32) -> Result<NatsSubscriber, String> {
        let (client, events) = self.connect(format!("bench-sub-{index}")).await?;
        let subscription = client
            .subscribe(format!("bench.{}.>", self.run))
            .await
            .map_err(|e| format!("NATS subscribe failed: {e}"))?;
        client.flush().await.map_err(|e| format!("NATS flush after subscribing failed: {e}"))?;
        Ok(NatsSubscriber { _client: client, subscription, events })
    }

    async fn publisher(&self, index: u32) -> Result<NatsPublisher, String> {
        let (client, _) = self.connect(format!("bench-pub-{index}")).await?;
        Ok(NatsPublisher { client, subject: format!("bench.{}.p{index}", self.run) })
    }
}

/// NATS JetStream: publishers publish into a stream with file storage and one replica, awaiting
/// its acknowledgements in a window of [`ACK_WINDOW`]; each subscriber reads every message through
/// an ordered push consumer of its own (what a NATS user takes to follow a stream from one
/// process). The stream is created by [`JetStream::create_stream`] before the cell's clients.
pub struct JetStream {
    pub nats: Nats,
}

impl JetStream {
    /// `bench-RUN` (stream names allow no dots).
    fn stream_name(&self) -> String {
        format!("bench-{}", self.nats.run)
    }

    async fn connect(&self, name: String) -> Result<(async_nats::Client, Events, jetstream::Context), String> {
        let (client, events) = self.nats.connect(name).await?;
        let context = jetstream::ContextBuilder::new().timeout(JETSTREAM_PATIENCE).build(client.clone());
        Ok((client, events, context))
    }

    /// The stream of `bench.RUN.>`: file storage, one replica, everything else the server's
    /// default (no limits, nothing discarded).
    pub async fn create_stream(&self) -> Result<(), String> {
        let (_client, _, context) = self.connect("bench-stream".into()).await?;
        let config = stream::Config {
            name: self.stream_name(),
            subjects: vec![format!("bench.{}.>", self.nats.run)],
            storage: stream::StorageType::File,
            num_replicas: 1,
            ..Default::default()
        };
        context
            .create_stream(config)
            .await
            .map_err(|e| format!("JetStream: creating stream {} failed: {e}", self.stream_name()))?;
        Ok(())
    }
}

pub struct JetStreamSubscriber {
    _client: async_nats::Client,
    messages: consumer::push::Ordered,
    events: Events,
}

impl Subscriber for JetStreamSubscriber {
    async fn next(&mut self) -> Result<Option<Bytes>, String> {
        loop {
            match self.messages.next().await {
                Some(Ok(message)) => return Ok(Some(message.message.payload)),
                // The ordered consumer recreates itself from the last message it delivered: a
                // note, not the end of the subscriber.
                Some(Err(e)) if e.kind() == consumer::push::OrderedErrorKind::MissingHeartbeat => {
                    record(&self.events, format!("JetStream ordered consumer: {e}, recreated"));
                }
                Some(Err(e)) => return Err(format!("JetStream ordered consumer failed: {e}")),
                None => return Ok(None),
            }
        }
    }

    fn problems(&self) -> Vec<String> {
        describe(&self.events)
    }
}

pub struct JetStreamPublisher {
    context: jetstream::Context,
    subject: String,
    /// Acknowledgements not awaited yet, oldest first.
    acks: VecDeque<PublishAckFuture>,
}

impl JetStreamPublisher {
    async fn await_oldest(&mut self) -> Result<(), String> {
        match self.acks.pop_front() {
            Some(ack) => ack.await.map(|_| ()).map_err(|e| format!("JetStream publish not acknowledged: {e}")),
            None => Ok(()),
        }
    }
}

impl Publisher for JetStreamPublisher {
    async fn publish(&mut self, payload: Vec<u8>) -> Result<(), String> {
        if self.acks.len() >= ACK_WINDOW {
            self.await_oldest().await?;
        }
        let ack = self
            .context
            .publish(self.subject.clone(), Bytes::from(payload))
            .await
            .map_err(|e| format!("JetStream publish failed: {e}"))?;
        self.acks.push_back(ack);
        Ok(())
    }

    async fn finish(&mut self) -> Result<(), String> {
        while !self.acks.is_empty() {
            self.await_oldest().await?;
        }
        Ok(())
    }
}

impl Protocol for JetStream {
    type Sub = JetStreamSubscriber;
    type Pub = JetStreamPublisher;

    async fn subscriber(&self, index: u32) -> Result<JetStreamSubscriber, String> {
        let (client, events, context) = self.connect(format!("bench-sub-{index}")).await?;
        // Ack policy none (the ordered consumer's only one): the consumer is this subscriber's
        // cursor in the stream, and acknowledging each message would add a message per delivery
        // that the other rows' subscribers do not send (MQTT QoS 1 aside). Nothing is lost for
        // want of acks: the server holds back under flow control, and a gap (a message the
        // client dropped) makes the consumer start again after the last one it delivered.
        let config = consumer::push::OrderedConfig {
            deliver_subject: client.new_inbox(),
            deliver_policy: consumer::DeliverPolicy::New,
            ..Default::default()
        };
        let consumer = context
            .create_consumer_on_stream(config, self.stream_name())
            .await
            .map_err(|e| format!("JetStream: creating a consumer on {} failed: {e}", self.stream_name()))?;
        let messages =
            consumer.messages().await.map_err(|e| format!("JetStream: subscribing to the consumer failed: {e}"))?;
        client.flush().await.map_err(|e| format!("NATS flush after subscribing failed: {e}"))?;
        Ok(JetStreamSubscriber { _client: client, messages, events })
    }

    async fn publisher(&self, index: u32) -> Result<JetStreamPublisher, String> {
        let (_, _, context) = self.connect(format!("bench-pub-{index}")).await?;
        Ok(JetStreamPublisher {
            context,
            subject: format!("bench.{}.p{index}", self.nats.run),
            acks: VecDeque::with_capacity(ACK_WINDOW),
        })
    }
}
