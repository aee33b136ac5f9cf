//! stream-sea clients of the stream-sea front-end: they publish with its REST API and subscribe
//! to one stream on its websocket. A stream is one event type (`[[streamsea.streams]]` maps
//! it), so a subscriber's interest is its stream, not the harness's patterns; stream-sea has no
//! queries or requests.

use std::net::SocketAddr;

use futures_util::{SinkExt, StreamExt};
use rivulet_core::owned::{Event, Payload, Query, RegisterEvent};
use rivulet_gateway::config::StreamMapping;
use rivulet_gateway::gateway::Gateway;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use super::{Boxed, Endpoint, Peer, Received, within};

pub struct StreamSeaClient {
    addr: SocketAddr,
    stream: StreamMapping,
    /// The stream's messages (their payloads), read as they come by a task, as the real
    /// client does; `None` for a client that only publishes.
    messages: Option<mpsc::UnboundedReceiver<Value>>,
}

impl Peer for StreamSeaClient {
    /// One `POST /api/v1/streams/{s}/publish` per event; each answered 200 once stored.
    fn publish(&mut self, events: Vec<RegisterEvent>) -> Boxed<'_, ()> {
        Box::pin(async move {
            for event in events {
                assert_eq!(event.event_type.to_string(), self.stream.event_type, "the stream's event type");
                let Some(Payload::Json(payload)) = &event.payload else { panic!("the harness publishes JSON") };
                let path = format!("/api/v1/streams/{}/publish", self.stream.name);
                let answer = within("published", post(self.addr, &path, &format!(r#"{{"payload":{payload}}}"#))).await;
                assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
            }
        })
    }

    fn next_event(&mut self) -> Boxed<'_, Received> {
        Box::pin(async move {
            let messages = self.messages.as_mut().expect("a subscriber");
            let message = within("a message", messages.recv()).await.expect("the websocket is open");
            assert_eq!(message["streamName"], self.stream.name.as_str(), "{message}");
            Received::from_json(None, &message["payload"])
        })
    }

    fn history(&mut self, _query: Query) -> Boxed<'_, Option<Vec<Event>>> {
        Box::pin(async { None })
    }

    fn call(&mut self, _target: &str, _rq_type: u64, _payload: Vec<u8>) -> Boxed<'_, Result<Vec<u8>, String>> {
        Box::pin(async { Err("stream-sea has no requests".to_string()) })
    }
}

/// Posts `body` (JSON, not gzipped) to `path` and returns the whole answer.
async fn post(addr: SocketAddr, path: &str, body: &str) -> String {
    let mut http = tokio::net::TcpStream::connect(addr).await.expect("connects");
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    http.write_all(request.as_bytes()).await.expect("sent");
    let mut answer = String::new();
    http.read_to_string(&mut answer).await.expect("answered");
    answer
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The next text message, as JSON.
async fn answer(ws: &mut Ws) -> Value {
    loop {
        if let WsMessage::Text(text) = within("an answer", ws.next()).await.expect("open").expect("a message") {
            return serde_json::from_str(&text).expect("JSON");
        }
    }
}

/// Authenticates on the websocket and subscribes to `stream`; its messages go to `messages`.
async fn subscribe(addr: SocketAddr, name: &str, stream: &str, messages: mpsc::UnboundedSender<Value>) {
    let url = format!("ws://{addr}/api/v1/streams");
    let (mut ws, _) = within("the websocket handshake", tokio_tungstenite::connect_async(url)).await.expect("upgraded");
    // The gateway has no clients configured: any name is let in.
    let auth = json!({ "id": 1, "action": "authenticate",
        "payload": { "type": "basic", "clientId": name, "clientSecret": "" } });
    ws.send(WsMessage::text(auth.to_string())).await.expect("sent");
    assert_eq!(answer(&mut ws).await["success"], true);
    ws.send(WsMessage::text(json!({ "id": 2, "action": "subscribe", "payload": stream }).to_string()))
        .await
        .expect("sent");
    // Confirmed once in place: nothing published after it is missed.
    let reply = answer(&mut ws).await;
    assert_eq!((&reply["action"], &reply["success"]), (&json!("subscription"), &json!(true)), "{reply}");
    tokio::spawn(async move {
        while let Some(Ok(message)) = ws.next().await {
            if let WsMessage::Text(text) = message
                && messages.send(serde_json::from_str(&text).expect("JSON")).is_err()
            {
                return;
            }
        }
    });
}

/// The stream-sea front-end's clients, on the stream `stream`.
pub fn streamsea_endpoint(gateway: &Gateway, stream: StreamMapping) -> Endpoint {
    let addr = gateway.streamsea_addr().expect("a stream-sea listener");
    Endpoint {
        name: "streamsea",
        persistence: false,
        connect: Box::new(move |wants| {
            let stream = stream.clone();
            Box::pin(async move {
                let mut messages = None;
                if !wants.subscriptions.is_empty() {
                    let (tx, rx) = mpsc::unbounded_channel();
                    subscribe(addr, &wants.name, &stream.name, tx).await;
                    messages = Some(rx);
                }
                Box::new(StreamSeaClient { addr, stream, messages }) as Box<dyn Peer>
            })
        }),
    }
}
