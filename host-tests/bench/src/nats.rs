//! NATS core pub/sub load generator (async-nats). Publisher `n` publishes on `bench.RUN.pN`; every
//! subscriber subscribes to `bench.RUN.>`. A subscription is active once a flush (PING/PONG) after
//! it has come back. What the client library reports (slow consumer, disconnect) becomes a note.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::StreamExt;

use crate::drive::{Protocol, Publisher, Subscriber};

pub struct Nats {
    pub port: u16,
    pub run: String,
}

/// Events the client library reported on one connection, with how often each came.
type Events = Arc<Mutex<Vec<(String, u64)>>>;

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
                    let text = event.to_string();
                    let mut recorded = recorded.lock().unwrap_or_else(|e| e.into_inner());
                    match recorded.iter_mut().find(|(seen, _)| *seen == text) {
                        Some((_, count)) => *count += 1,
                        None => recorded.push((text, 1)),
                    }
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
        let events = self.events.lock().unwrap_or_else(|e| e.into_inner());
        events
            .iter()
            .map(|(event, count)| if *count == 1 { event.clone() } else { format!("{event} (×{count})") })
            .collect()
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
