//! `direct`: a second front-end on the broker's API alone, with its clients.

use std::sync::{Arc, Mutex};

use rivulet_core::owned::{Event, Query, RegisterEvent};
use rivulet_gateway::access::Principal;
use rivulet_gateway::broker::{Batch, Broker};
use rivulet_gateway::frontend::{Call, ClientReport, Frontend, FrontendStats, Listener};
use rivulet_gateway::gateway::Gateway;
use rivulet_tokio::fanout::{Delivery, Interest, Subscriber};
use rivulet_tokio::packet::{CallError, PacketHandler, PacketRequest};

use super::native::Echo;
use super::{Boxed, Endpoint, Peer, Received, within};

/// A second front-end, on the broker's API alone: its clients publish, subscribe, query and
/// call through `Broker` calls, and answer calls with [`Echo`]. Two front-ends then share one
/// fan-out, and `Broker::call` searches both.
struct Direct {
    broker: Arc<Broker>,
    /// The names of its connected clients, for calls.
    clients: Mutex<Vec<String>>,
}

impl Frontend for Direct {
    fn name(&self) -> &'static str {
        "direct"
    }

    fn listeners(&self) -> Vec<Listener> {
        Vec::new()
    }

    fn clients(&self) -> Vec<ClientReport> {
        Vec::new()
    }

    fn stats(&self) -> FrontendStats {
        FrontendStats::default()
    }

    fn call(&self, client: &str, request: PacketRequest) -> Option<Call> {
        let name = self.clients.lock().unwrap().iter().find(|name| *name == client)?.clone();
        Some(Box::pin(async move { Echo(name).handle(request).await.map_err(CallError::Refused) }))
    }

    fn announce(&self, _: rivulet_core::model::Status) -> Boxed<'_, ()> {
        Box::pin(async {})
    }

    fn stop(&self) -> Boxed<'_, ()> {
        Box::pin(async {})
    }
}

/// A client of [`Direct`].
struct DirectPeer {
    broker: Arc<Broker>,
    name: String,
    subscriber: Subscriber,
}

impl DirectPeer {
    fn principal(&self) -> Principal<'_> {
        Principal { name: &self.name, frontend: "direct", peer: None }
    }
}

impl Peer for DirectPeer {
    fn publish(&mut self, events: Vec<RegisterEvent>) -> Boxed<'_, ()> {
        Box::pin(async move {
            let batch = Batch { events, sessions: Vec::new() };
            let published = self.broker.publish(&self.principal(), batch, false).await.expect("taken");
            within("stored", published.durable).await.expect("stored");
        })
    }

    fn next_event(&mut self) -> Boxed<'_, Received> {
        Box::pin(async move {
            match within("an event", self.subscriber.next(true)).await {
                Delivery::Event(event) => {
                    self.subscriber.delivered();
                    self.subscriber.acknowledged(1);
                    Received::of(&event)
                }
                Delivery::CutOff => panic!("{} was cut off", self.name),
            }
        })
    }

    fn history(&mut self, mut query: Query) -> Boxed<'_, Option<Vec<Event>>> {
        Box::pin(async move {
            let mut all = Vec::new();
            loop {
                let page = self.broker.query(&self.principal(), query.clone(), usize::MAX).await.expect("answered");
                all.extend(page.events);
                match (page.more_follows, all.last().and_then(|last: &Event| query.after(last.id))) {
                    (true, Some(next)) => query = next,
                    _ => return Some(all),
                }
            }
        })
    }

    fn call(&mut self, target: &str, rq_type: u64, payload: Vec<u8>) -> Boxed<'_, Result<Vec<u8>, String>> {
        let target = target.to_string();
        Box::pin(async move {
            let request = PacketRequest { rq_type, flags: 0, payload };
            let answer = self.broker.call(&self.principal(), &target, request).await;
            answer.map(|reply| reply.payload).map_err(|e| e.to_string())
        })
    }
}

/// `direct` attached to `gateway`'s broker; it is a front-end for as long as the `Arc` lives.
pub fn direct_endpoint(gateway: &Gateway) -> (Arc<dyn Frontend>, Endpoint) {
    let direct = Arc::new(Direct { broker: gateway.broker().clone(), clients: Mutex::new(Vec::new()) });
    let attached: Arc<dyn Frontend> = direct.clone();
    gateway.broker().attach(&attached);
    let endpoint = Endpoint {
        name: "direct",
        persistence: true,
        connect: Box::new(move |wants| {
            let direct = direct.clone();
            Box::pin(async move {
                let who = Principal { name: &wants.name, frontend: "direct", peer: None };
                let interest =
                    Interest { patterns: wants.subscriptions.clone(), server_id: None, persisted: wants.persisted };
                let subscriber = direct.broker.subscribe(&who, interest).expect("subscribed");
                direct.clients.lock().unwrap().push(wants.name.clone());
                Box::new(DirectPeer { broker: direct.broker.clone(), name: wants.name, subscriber }) as Box<dyn Peer>
            })
        }),
    };
    (attached, endpoint)
}
