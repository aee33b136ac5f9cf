//! The latest event of each type across the network, on request (`rivulet query latest
//! --network`, the native request `RQ_LATEST_NETWORK`): a gateway answers from its own latest
//! table and asks its links on (`RQ_PEER_LATEST`), each with one hop less, skipping the gateways
//! asked already on the way; of several events of a type, the newest (by timestamp, then id)
//! wins. A link that does not answer in time is left out: the answer is what could be reached.

use std::collections::HashMap;
use std::time::Duration;

use rivulet_core::owned::{Event, EventPath};

use super::wire::{self, LatestAsk, LatestFound, RQ_PEER_LATEST};
use super::{Federation, lock};

/// How long a gateway waits for a link's answer when the ask may still go `ttl` hops further:
/// one second, and one more per hop, so a farther gateway answers its asker before the asker
/// gives up (the native request starts asks at 8 hops at most).
fn wait_for(ttl: u8) -> Duration {
    Duration::from_secs(1 + u64::from(ttl))
}

impl Federation {
    /// The newest event of each type one of `patterns` matches, of this gateway and of those
    /// beyond its links up to `ttl` hops, but the gateways of `visited`.
    pub async fn latest_across(&self, patterns: &[EventPath], ttl: u8, visited: &[u64]) -> Vec<Event> {
        let mut newest: HashMap<EventPath, Event> = HashMap::new();
        keep_newest(&mut newest, self.broker.latest_matching(patterns));
        let links: Vec<_> = lock(&self.links)
            .values()
            .filter(|link| !visited.contains(&link.peer) && !*link.ended.borrow())
            .cloned()
            .collect();
        if ttl > 0 && !links.is_empty() {
            // Every gateway asked here counts as visited further on: each is asked once.
            let mut visited = visited.to_vec();
            visited.push(self.broker.server_id());
            visited.extend(links.iter().map(|link| link.peer));
            let ask = LatestAsk { patterns: patterns.iter().map(ToString::to_string).collect(), ttl: ttl - 1, visited };
            if let Ok(body) = wire::encode(&ask) {
                let mut asking = tokio::task::JoinSet::new();
                for link in links {
                    let body = body.clone();
                    asking.spawn(async move {
                        let answer =
                            tokio::time::timeout(wait_for(ttl - 1), link.outbound.request(RQ_PEER_LATEST, body));
                        (link.peer, answer.await)
                    });
                }
                while let Some(Ok((peer, answer))) = asking.join_next().await {
                    match answer {
                        Ok(Ok(body)) => match wire::decode::<LatestFound<'_>>(&body) {
                            Ok(found) => keep_newest(&mut newest, found.events.into_iter().map(Event::from)),
                            Err(e) => tracing::info!(peer, "a latest answer not understood: {e}"),
                        },
                        Ok(Err(e)) => tracing::info!(peer, "no latest answer: {e}"),
                        Err(_) => tracing::info!(peer, "no latest answer in time"),
                    }
                }
            }
        }
        let mut events: Vec<Event> = newest.into_values().collect();
        events.sort_by(|a, b| a.event_type.cmp(&b.event_type));
        events
    }
}

/// Keeps, per event type, the newest of `events` and what `newest` holds.
fn keep_newest(newest: &mut HashMap<EventPath, Event>, events: impl IntoIterator<Item = Event>) {
    for event in events {
        match newest.get(&event.event_type) {
            Some(known) if (known.timestamp, known.id) >= (event.timestamp, event.id) => {}
            _ => {
                newest.insert(event.event_type.clone(), event);
            }
        }
    }
}

/// The answer's body: the events, as references.
pub fn encode_found(events: &[Event]) -> Result<Vec<u8>, postcard::Error> {
    wire::encode(&LatestFound { events: events.iter().map(Event::as_ref).collect() })
}
