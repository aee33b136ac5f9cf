//! What every gateway of the network wants, and over which link it is reached: each gateway
//! floods an advert of its subscribers' patterns (a newer version replaces an older one, so a
//! pattern that goes away goes away everywhere, even around a ring); a gateway remembers the
//! links each origin's adverts arrived over. An event crosses a link when some gateway reached
//! over it wants it, so in a line or a star nothing crosses a link that nobody beyond it wants,
//! and in a ring or mesh the copies that arrive over several links are dropped by id.
//!
//! What a link reaches is kept when the link breaks, until the origin is forgotten (silent for
//! three advert periods): a link that comes back resumes the admission log from where it broke,
//! and what was admitted meanwhile must be judged by what the other side wanted, before its own
//! links (and adverts) are back. Sending a little more than needed costs only a dropped copy.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use rivulet_core::owned::{Event, EventPath};

use super::wire::Advert;

/// One gateway's advert, as known here.
#[derive(Debug)]
struct Known {
    advert: Advert,
    patterns: Vec<EventPath>,
    /// The links (peer server ids) its adverts arrived over.
    via: BTreeSet<u64>,
    heard: Instant,
}

/// What became of an advert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Merged {
    /// Newer than what was known: pass it on.
    New,
    /// Known already (now also reached over this link), older, or this gateway's own.
    Known,
}

/// The adverts of every gateway heard of.
#[derive(Debug)]
pub struct Interests {
    own: u64,
    known: HashMap<u64, Known>,
}

impl Interests {
    pub fn new(own: u64) -> Self {
        Interests { own, known: HashMap::new() }
    }

    /// Takes an advert (its patterns already checked) that arrived over the link to `via`.
    pub fn merge(&mut self, advert: Advert, patterns: Vec<EventPath>, via: u64, now: Instant) -> Merged {
        if advert.origin == self.own {
            return Merged::Known;
        }
        match self.known.get_mut(&advert.origin) {
            Some(known) if known.advert.version >= advert.version => {
                known.via.insert(via);
                if known.advert.version == advert.version {
                    known.heard = now;
                }
                Merged::Known
            }
            Some(known) => {
                known.via.insert(via);
                known.advert = advert;
                known.patterns = patterns;
                known.heard = now;
                Merged::New
            }
            None => {
                let known = Known { advert, patterns, via: BTreeSet::from([via]), heard: now };
                self.known.insert(known.advert.origin, known);
                Merged::New
            }
        }
    }

    /// Whether some gateway reached over the link to `peer` wants `event` (other than the one
    /// that admitted it, which has it).
    pub fn wants(&self, peer: u64, event: &Event) -> bool {
        self.known.values().any(|known| {
            known.advert.origin != event.id.server
                && known.via.contains(&peer)
                && known.patterns.iter().any(|p| p.matches(&event.event_type))
        })
    }

    /// Forgets gateways not heard of for three of their advert periods.
    pub fn expire(&mut self, now: Instant) {
        self.known.retain(|_, known| {
            now.duration_since(known.heard) < Duration::from_secs(u64::from(known.advert.period_s.max(1)) * 3)
        });
    }

    /// Every advert known, each with the links it may still cross from here (those with none
    /// left are not passed on), for a new link to `peer`: not those heard of only from `peer`.
    pub fn to_pass_on(&self, peer: u64) -> Vec<Advert> {
        self.known
            .values()
            .filter(|known| known.advert.ttl > 1 && known.via.iter().any(|via| *via != peer))
            .map(|known| Advert { ttl: known.advert.ttl - 1, ..known.advert.clone() })
            .collect()
    }

    /// The gateways heard of that say where they listen, with what they want.
    pub fn listening(&self) -> Vec<(u64, String, &[EventPath])> {
        self.known
            .values()
            .filter_map(|k| k.advert.listen.clone().map(|listen| (k.advert.origin, listen, k.patterns.as_slice())))
            .collect()
    }

    /// The gateways heard of: (origin, name, patterns, the links over which it is reached).
    pub fn gateways(&self) -> Vec<(u64, String, Vec<String>, Vec<u64>)> {
        let mut all: Vec<_> = self
            .known
            .values()
            .map(|k| {
                (k.advert.origin, k.advert.name.clone(), k.advert.patterns.clone(), k.via.iter().copied().collect())
            })
            .collect();
        all.sort();
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rivulet_core::model::{EventId, Timestamp};

    fn advert(origin: u64, version: u64, patterns: &[&str]) -> (Advert, Vec<EventPath>) {
        let advert = Advert {
            origin,
            name: format!("g{origin}"),
            version,
            ttl: 3,
            period_s: 5,
            listen: None,
            patterns: patterns.iter().map(|p| p.to_string()).collect(),
        };
        let parsed = advert.parsed().unwrap();
        (advert, parsed)
    }

    fn event(server: u64, ty: &str) -> Event {
        Event {
            id: EventId { server, session: 1, instance: 1 },
            event_type: EventPath::parse(ty),
            timestamp: Timestamp::default(),
            source_timestamp: None,
            payload: None,
        }
    }

    #[test]
    fn an_event_crosses_a_link_only_toward_a_gateway_that_wants_it() {
        let now = Instant::now();
        let mut interests = Interests::new(1);
        let (a, p) = advert(3, 1, &["temp/*"]);
        assert_eq!(interests.merge(a.clone(), p.clone(), 2, now), Merged::New);
        assert_eq!(interests.merge(a, p, 4, now), Merged::Known, "the same version over another link");
        assert!(interests.wants(2, &event(1, "temp/a")) && interests.wants(4, &event(1, "temp/a")));
        assert!(!interests.wants(5, &event(1, "temp/a")), "nobody wanting it is reached over link 5");
        assert!(!interests.wants(2, &event(1, "door/a")));
        assert!(!interests.wants(2, &event(3, "temp/a")), "not back to the gateway that admitted it");
    }

    #[test]
    fn a_newer_version_replaces_and_an_older_one_is_ignored() {
        let now = Instant::now();
        let mut interests = Interests::new(1);
        let (a, p) = advert(3, 5, &["temp/*"]);
        interests.merge(a, p, 2, now);
        let (old, p) = advert(3, 4, &["door/*"]);
        assert_eq!(interests.merge(old, p, 2, now), Merged::Known);
        assert!(interests.wants(2, &event(1, "temp/a")));
        let (new, p) = advert(3, 6, &[]);
        assert_eq!(interests.merge(new, p, 2, now), Merged::New);
        assert!(!interests.wants(2, &event(1, "temp/a")), "the pattern went away");
        let (own, p) = advert(1, 9, &["x"]);
        assert_eq!(interests.merge(own, p, 2, now), Merged::Known, "its own advert comes back around a ring");
        assert_eq!(interests.to_pass_on(4).len(), 1);
        assert!(interests.to_pass_on(2).is_empty(), "not back to the only link it came over");
        interests.expire(now + Duration::from_secs(14));
        assert_eq!(interests.gateways().len(), 1, "silent for less than three periods");
        interests.expire(now + Duration::from_secs(15));
        assert!(interests.gateways().is_empty());
    }
}
