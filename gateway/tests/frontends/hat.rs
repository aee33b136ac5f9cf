//! hat Eventer clients (`rivulet_tokio::hat`) of the hat front-end.

use rivulet_core::owned::{Event, Query, RegisterEvent};
use rivulet_gateway::gateway::Gateway;
use rivulet_tokio::hat::{HatClient, HatEvents, HatOptions};

use super::{Boxed, Endpoint, Peer, Received, within};

/// A hat Eventer client (`rivulet_tokio::hat`) of the hat front-end.
pub struct Hat {
    client: HatClient,
    events: HatEvents,
}

impl Peer for Hat {
    fn publish(&mut self, events: Vec<RegisterEvent>) -> Boxed<'_, ()> {
        // Answered once durable: the hat front-end's default.
        Box::pin(async move {
            within("registered", self.client.register_with_response(events)).await.expect("stored");
        })
    }

    fn next_event(&mut self) -> Boxed<'_, Received> {
        Box::pin(async move { Received::of(&within("an event", self.events.next()).await.expect("the client runs")) })
    }

    fn history(&mut self, query: Query) -> Boxed<'_, Option<Vec<Event>>> {
        Box::pin(async move { Some(within("query", self.client.query_all(query)).await.expect("answered")) })
    }

    fn call(&mut self, _target: &str, _rq_type: u64, _payload: Vec<u8>) -> Boxed<'_, Result<Vec<u8>, String>> {
        Box::pin(async { Err("hat's protocol has no requests".to_string()) })
    }
}

pub fn hat_endpoint(gateway: &Gateway) -> Endpoint {
    let addr = gateway.hat_addr().expect("a hat listener");
    Endpoint {
        name: "hat",
        persistence: true,
        connect: Box::new(move |wants| {
            Box::pin(async move {
                let mut options = HatOptions::new(wants.name);
                options.subscriptions = wants.subscriptions;
                options.persisted = wants.persisted;
                let (client, events) =
                    within("hat connects", rivulet_tokio::hat::connect(addr, options)).await.expect("connected");
                Box::new(Hat { client, events }) as Box<dyn Peer>
            })
        }),
    }
}
