//! Kelvin apps (`rivulet_tokio::kelvin`) of the Kelvin front-end. What an app is sent is the
//! listener's choice (`[kelvin] subscribe`, `kelvin/*` by default), not the app's; Kelvin has no
//! acknowledgements, queries or requests.

use rivulet_core::kelvin::message::Message;
use rivulet_core::owned::{Event, Payload, Query, RegisterEvent};
use rivulet_gateway::gateway::Gateway;
use rivulet_tokio::kelvin::{self, KelvinConfig, KelvinStream};
use tokio::sync::{mpsc, oneshot};

use super::{Boxed, Endpoint, Peer, Received, within};

/// The messages to write, and who waits for them to be written.
type Writes = (Vec<Message>, oneshot::Sender<()>);

/// A Kelvin app. A task reads its inputs as they come, as an app does, so an app that only
/// writes is never the gateway's slow subscriber.
pub struct KelvinApp {
    writes: mpsc::Sender<Writes>,
    inputs: mpsc::UnboundedReceiver<Message>,
}

impl Peer for KelvinApp {
    /// Written in order; Kelvin has no acknowledgement, so the harness's subscribers, which
    /// wait for every event, are what waits for them to be stored.
    fn publish(&mut self, events: Vec<RegisterEvent>) -> Boxed<'_, ()> {
        let messages = events.iter().map(data_message).collect();
        Box::pin(async move {
            let (done, written) = oneshot::channel();
            self.writes.send((messages, done)).await.expect("the app runs");
            within("written", written).await.expect("written");
        })
    }

    fn next_event(&mut self) -> Boxed<'_, Received> {
        Box::pin(async move {
            let message = within("an input", self.inputs.recv()).await.expect("the app is connected");
            let payload = message.payload.as_deref().expect("a data message has a payload");
            Received::from_json(None, &serde_json::from_str(payload).expect("JSON"))
        })
    }

    fn history(&mut self, _query: Query) -> Boxed<'_, Option<Vec<Event>>> {
        Box::pin(async { None })
    }

    fn call(&mut self, _target: &str, _rq_type: u64, _payload: Vec<u8>) -> Boxed<'_, Result<Vec<u8>, String>> {
        Box::pin(async { Err("Kelvin has no requests".to_string()) })
    }
}

/// The data message (an object, `data;icd=rivulet.json`) an app writes for `event`: its
/// resource is the event type's (`kelvin/ad/a/b` is `krn:ad:a/b`).
fn data_message(event: &RegisterEvent) -> Message {
    let resource = event.event_type.to_string();
    let resource = resource.strip_prefix("kelvin/ad/").expect("a Kelvin asset's datastream");
    let Some(Payload::Json(payload)) = &event.payload else { panic!("the harness publishes JSON") };
    let line = format!(r#"{{"type":"data;icd=rivulet.json","resource":"krn:ad:{resource}","payload":{payload}}}"#);
    Message::parse(line.as_bytes(), kelvin::defaults()).expect("a valid message")
}

/// Reads and writes for the app until its [`KelvinApp`] is dropped or the gateway closes.
async fn run(mut stream: KelvinStream, mut writes: mpsc::Receiver<Writes>, inputs: mpsc::UnboundedSender<Message>) {
    loop {
        tokio::select! {
            batch = writes.recv() => {
                let Some((messages, done)) = batch else { break };
                for message in &messages {
                    stream.write(message).await.expect("the gateway reads");
                }
                let _ = done.send(());
            }
            message = stream.read() => match message {
                Ok(message) => { let _ = inputs.send(message); }
                Err(_) => break,
            },
        }
    }
    stream.disconnect().await;
}

pub fn kelvin_endpoint(gateway: &Gateway) -> Endpoint {
    let addr = gateway.kelvin_addr().expect("a Kelvin listener");
    let config = KelvinConfig { ip: addr.ip().to_string(), port: addr.port(), ..KelvinConfig::default() };
    Endpoint {
        name: "kelvin",
        persistence: false,
        connect: Box::new(move |_wants| {
            let config = config.clone();
            Box::pin(async move {
                let mut stream = within("Kelvin connects", KelvinStream::connect(&config)).await.expect("connected");
                // The front-end subscribes before it sends the manifest: nothing published after it is missed.
                let manifest = within("the manifest", stream.read()).await.expect("a message");
                assert_eq!(manifest.msg_type.name, "runtime_manifest");
                let (writes, writes_rx) = mpsc::channel(1);
                let (inputs_tx, inputs) = mpsc::unbounded_channel();
                tokio::spawn(run(stream, writes_rx, inputs_tx));
                Box::new(KelvinApp { writes, inputs }) as Box<dyn Peer>
            })
        }),
    }
}
