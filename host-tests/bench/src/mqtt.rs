//! MQTT 3.1.1 load generator (rumqttc) for mosquitto, at QoS 0 or QoS 1. Publisher `n` publishes on
//! `bench/RUN/pN`; every subscriber subscribes to `bench/RUN/#` at the same QoS. TCP_NODELAY on
//! every socket, as the Rivulet client and server and the NATS ones set it. Against the persistent
//! mosquitto the subscribers keep their sessions (clean_session false): only such sessions, and
//! the messages queued for them, are what mosquitto's persistence saves.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, NetworkOptions, Outgoing, Packet, QoS};

use crate::drive::{Protocol, Publisher, Subscriber};

/// Requests a client may queue before `publish` waits for its event loop (rumqttc's default is 10).
const REQUEST_CAPACITY: usize = 1024;
/// How long connecting, subscribing and finishing may take.
const PATIENCE: Duration = Duration::from_secs(30);

pub struct Mqtt {
    pub port: u16,
    pub qos: QoS,
    /// Subscribers connect with clean_session false (their session outlives the connection).
    pub persistent_sessions: bool,
    /// Keeps this run's topics apart from anything else on the broker.
    pub run: String,
}

impl Mqtt {
    fn client(&self, id: String, clean_session: bool) -> (AsyncClient, EventLoop) {
        let mut options = MqttOptions::new(id, "127.0.0.1", self.port);
        options.set_keep_alive(Duration::from_secs(30));
        options.set_clean_session(clean_session);
        options.set_max_packet_size(64 * 1024, 64 * 1024);
        let (client, mut eventloop) = AsyncClient::new(options, REQUEST_CAPACITY);
        // A publisher whose writes mosquitto does not read for 5 s (rumqttc's default) would fail
        // with "Flush timeout" in the fan-out rows: mosquitto holding a publisher back is its flow
        // control, not an error.
        let mut network = NetworkOptions::new();
        network.set_connection_timeout(PATIENCE.as_secs());
        eventloop.set_network_options(network);
        (client, eventloop)
    }
}

/// Polls `eventloop` until `want` says an event is the one awaited.
async fn poll_until(eventloop: &mut EventLoop, what: &str, want: impl Fn(&Event) -> bool) -> Result<(), String> {
    let wait = async {
        loop {
            let event = eventloop.poll().await.map_err(|e| format!("MQTT connection failed while {what}: {e}"))?;
            if want(&event) {
                return Ok(());
            }
        }
    };
    tokio::time::timeout(PATIENCE, wait)
        .await
        .map_err(|_| format!("MQTT: no answer within {PATIENCE:?} while {what}"))?
}

pub struct MqttSubscriber {
    _client: AsyncClient,
    eventloop: EventLoop,
}

impl Subscriber for MqttSubscriber {
    async fn next(&mut self) -> Result<Option<Bytes>, String> {
        loop {
            match self.eventloop.poll().await {
                Ok(Event::Incoming(Packet::Publish(publish))) => return Ok(Some(publish.payload)),
                Ok(Event::Incoming(Packet::Disconnect)) => return Ok(None),
                Ok(_) => {}
                Err(e) => return Err(format!("MQTT connection failed: {e}")),
            }
        }
    }
}

/// What a publisher's event loop task has seen: messages written (QoS 0) or acknowledged (QoS 1).
#[derive(Default)]
struct Progress {
    done: AtomicU64,
    error: Mutex<Option<String>>,
}

pub struct MqttPublisher {
    client: AsyncClient,
    topic: String,
    qos: QoS,
    published: u64,
    progress: Arc<Progress>,
    eventloop: tokio::task::JoinHandle<()>,
}

impl Drop for MqttPublisher {
    fn drop(&mut self) {
        self.eventloop.abort();
    }
}

impl Publisher for MqttPublisher {
    async fn publish(&mut self, payload: Vec<u8>) -> Result<(), String> {
        self.client
            .publish_bytes(self.topic.as_str(), self.qos, false, Bytes::from(payload))
            .await
            .map_err(|e| format!("MQTT publish failed: {e}"))?;
        self.published += 1;
        Ok(())
    }

    async fn finish(&mut self) -> Result<(), String> {
        let until = Instant::now() + PATIENCE;
        loop {
            if let Some(e) = self.progress.error.lock().unwrap_or_else(|e| e.into_inner()).clone() {
                return Err(e);
            }
            let done = self.progress.done.load(Relaxed);
            if done >= self.published {
                return Ok(());
            }
            if Instant::now() > until {
                let what = if self.qos == QoS::AtMostOnce { "written" } else { "acknowledged" };
                return Err(format!("only {done} of {} publications {what} after {PATIENCE:?}", self.published));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

impl Protocol for Mqtt {
    type Sub = MqttSubscriber;
    type Pub = MqttPublisher;

    async fn subscriber(&self, index: u32) -> Result<MqttSubscriber, String> {
        let (client, mut eventloop) = self.client(format!("bench-sub-{index}-{}", self.run), !self.persistent_sessions);
        poll_until(&mut eventloop, "connecting", |e| matches!(e, Event::Incoming(Packet::ConnAck(_)))).await?;
        client
            .subscribe(format!("bench/{}/#", self.run), self.qos)
            .await
            .map_err(|e| format!("MQTT subscribe failed: {e}"))?;
        poll_until(&mut eventloop, "subscribing", |e| matches!(e, Event::Incoming(Packet::SubAck(_)))).await?;
        Ok(MqttSubscriber { _client: client, eventloop })
    }

    async fn publisher(&self, index: u32) -> Result<MqttPublisher, String> {
        let (client, mut eventloop) = self.client(format!("bench-pub-{index}-{}", self.run), true);
        poll_until(&mut eventloop, "connecting", |e| matches!(e, Event::Incoming(Packet::ConnAck(_)))).await?;
        let progress = Arc::new(Progress::default());
        let qos = self.qos;
        let task = {
            let progress = progress.clone();
            tokio::spawn(async move {
                loop {
                    match eventloop.poll().await {
                        Ok(Event::Outgoing(Outgoing::Publish(_))) if qos == QoS::AtMostOnce => {
                            progress.done.fetch_add(1, Relaxed);
                        }
                        Ok(Event::Incoming(Packet::PubAck(_))) if qos == QoS::AtLeastOnce => {
                            progress.done.fetch_add(1, Relaxed);
                        }
                        Ok(_) => {}
                        Err(e) => {
                            *progress.error.lock().unwrap_or_else(|e| e.into_inner()) =
                                Some(format!("MQTT connection failed: {e}"));
                            return;
                        }
                    }
                }
            })
        };
        Ok(MqttPublisher {
            client,
            topic: format!("bench/{}/p{index}", self.run),
            qos,
            published: 0,
            progress,
            eventloop: task,
        })
    }
}
