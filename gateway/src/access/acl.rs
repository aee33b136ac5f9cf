//! ACLs: what each configured client may register, subscribe to, query and call.
//!
//!
//! Each `[[clients]]` entry may list the event-type patterns the client may `register` and
//! `subscribe` to (hat's rules: `?` one segment, a final `*` any rest). A list left out allows
//! everything; an empty list allows nothing. A registration is allowed if one `register`
//! pattern matches its type. A subscription (or a query's pattern) is allowed if one `subscribe`
//! pattern [`covers`] it. Queries without types are narrowed to the `subscribe` patterns; a
//! server query (every type) needs a client that may see everything.

use rivulet_core::owned::{EventPath, Query};

use crate::config::FileAccess;

/// Whether every event type `wanted` matches is matched by `allowed` (both valid patterns).
///
/// Walks both side by side: a `*` in `allowed` takes any rest; otherwise `wanted` must not reach
/// further (its own `*` reaches arbitrarily far), must end where `allowed` ends, and each of its
/// segments must be the same literal or fall under `allowed`'s `?`.
pub fn covers(allowed: &EventPath, wanted: &EventPath) -> bool {
    let (mut allowed, mut wanted) = (allowed.segments(), wanted.segments());
    loop {
        match (allowed.next(), wanted.next()) {
            (Some("*"), _) | (None, None) => return true,
            (Some(_), Some("*") | None) | (None, Some(_)) => return false,
            (Some("?"), Some(_)) => {}
            (Some(literal), Some(segment)) => {
                if segment == "?" || segment != literal {
                    return false;
                }
            }
        }
    }
}

fn listed(patterns: &[EventPath]) -> String {
    if patterns.is_empty() {
        return "nothing".into();
    }
    patterns.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

/// What one client may register and see. `None` allows everything, an empty list nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Acl {
    pub register: Option<Vec<EventPath>>,
    pub subscribe: Option<Vec<EventPath>>,
    /// Clients whose requests it may call; any when `None`.
    pub request: Option<Vec<String>>,
    /// Whether it may link as a peer gateway (federation).
    pub federate: bool,
    /// What it may do with the gateway's files.
    pub files: FileAccess,
}

/// Everything allowed: every client of a gateway without `[[clients]]`.
pub(crate) static OPEN: Acl =
    Acl { register: None, subscribe: None, request: None, federate: true, files: FileAccess::Write };

impl Acl {
    /// Whether it may call the request handlers of the client named `target`.
    pub fn may_request(&self, target: &str) -> bool {
        self.request.as_ref().is_none_or(|allowed| allowed.iter().any(|name| name == target))
    }

    pub fn may_register(&self, event_type: &EventPath) -> bool {
        self.register.as_ref().is_none_or(|allowed| allowed.iter().any(|p| p.matches(event_type)))
    }

    pub fn may_subscribe(&self, pattern: &EventPath) -> bool {
        self.subscribe.as_ref().is_none_or(|allowed| allowed.iter().any(|p| covers(p, pattern)))
    }

    /// Whether every event type is visible to the client (`*` or no `subscribe` list).
    pub fn sees_everything(&self) -> bool {
        self.may_subscribe(&EventPath::parse("*"))
    }

    pub fn check_register(&self, client: &str, event_type: &EventPath) -> Result<(), String> {
        match &self.register {
            Some(allowed) if !self.may_register(event_type) => {
                Err(format!("client {client:?} may not register {event_type} (allowed: {})", listed(allowed)))
            }
            _ => Ok(()),
        }
    }

    pub fn check_subscriptions(&self, client: &str, patterns: &[EventPath]) -> Result<(), String> {
        self.check_within(client, "subscribe to", patterns)
    }

    fn check_within(&self, client: &str, what: &str, patterns: &[EventPath]) -> Result<(), String> {
        let Some(allowed) = &self.subscribe else { return Ok(()) };
        match patterns.iter().find(|p| !self.may_subscribe(p)) {
            Some(bad) => Err(format!("client {client:?} may not {what} {bad} (allowed: {})", listed(allowed))),
            None => Ok(()),
        }
    }

    /// The query as the client may ask it: without types it gets the client's `subscribe`
    /// patterns, with types each must be covered, and a server query needs everything visible.
    pub fn restrict_query(&self, client: &str, query: Query) -> Result<Query, String> {
        let Some(allowed) = &self.subscribe else { return Ok(query) };
        let narrow = |types: Option<Vec<EventPath>>| match types {
            None => Ok(Some(allowed.clone())),
            Some(types) => self.check_within(client, "query", &types).map(|()| Some(types)),
        };
        match query {
            Query::Latest { event_types } => Ok(Query::Latest { event_types: narrow(event_types)? }),
            Query::Timeseries(mut q) => {
                q.event_types = narrow(q.event_types.take())?;
                Ok(Query::Timeseries(q))
            }
            Query::Server { .. } if self.sees_everything() => Ok(query),
            Query::Server { server_id, .. } => Err(format!(
                "client {client:?} may not query every event of server {server_id} (allowed: {}); query by type instead",
                listed(allowed)
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rivulet_core::owned::TimeseriesQuery;

    fn p(text: &str) -> EventPath {
        EventPath::parse(text)
    }

    #[test]
    fn covers_examples() {
        let yes =
            [("a/*", "a/?/b"), ("a/*", "a"), ("a/*", "a/*"), ("a/?", "a/b"), ("*", "*"), ("*", ""), ("a/?", "a/?")];
        for (allowed, wanted) in yes {
            assert!(covers(&p(allowed), &p(wanted)), "{allowed} covers {wanted}");
        }
        let no = [
            ("a/?", "a/*"),
            ("a/b", "a/?"),
            ("a", "a/*"),
            ("a/?/*", "a/*"),
            ("a/b", "a"),
            ("a", "a/b"),
            ("", "*"),
            ("a/*", "b"),
        ];
        for (allowed, wanted) in no {
            assert!(!covers(&p(allowed), &p(wanted)), "{allowed} does not cover {wanted}");
        }
    }

    /// Every type over `segments`, up to `max_len` segments.
    fn all_types(segments: &[&str], max_len: usize) -> Vec<EventPath> {
        let mut out = vec![Vec::<&str>::new()];
        let mut frontier = out.clone();
        for _ in 0..max_len {
            frontier = frontier
                .iter()
                .flat_map(|t| segments.iter().map(move |s| t.iter().copied().chain([*s]).collect::<Vec<_>>()))
                .collect();
            out.extend(frontier.iter().cloned());
        }
        out.into_iter().map(EventPath::new).collect()
    }

    /// Every pattern over `segments` and `?`, up to `max_len`, with and without a final `*`.
    fn all_patterns(segments: &[&str], max_len: usize) -> Vec<EventPath> {
        let mut with_any: Vec<&str> = segments.to_vec();
        with_any.push("?");
        all_types(&with_any, max_len)
            .into_iter()
            .flat_map(|t| {
                let tail: Vec<String> = t.segments().map(String::from).chain(["*".to_string()]).collect();
                [t, EventPath::new(tail)]
            })
            .collect()
    }

    /// `covers` by definition over a finite world: a segment no pattern names (`z`) stands for
    /// all others, and types one longer than the longest pattern stand for all longer ones.
    fn covers_by_brute_force(allowed: &EventPath, wanted: &EventPath, world: &[EventPath]) -> bool {
        world.iter().filter(|t| wanted.matches(t)).all(|t| allowed.matches(t))
    }

    #[test]
    fn covers_agrees_with_brute_force_on_every_small_pair() {
        let patterns = all_patterns(&["a", "b"], 3);
        let world = all_types(&["a", "b", "z"], 5);
        for allowed in &patterns {
            for wanted in &patterns {
                assert_eq!(
                    covers(allowed, wanted),
                    covers_by_brute_force(allowed, wanted, &world),
                    "covers({allowed}, {wanted})"
                );
            }
        }
    }

    fn pattern() -> impl Strategy<Value = EventPath> {
        (prop::collection::vec(prop::sample::select(vec!["a", "b", "c", "?"]), 0..5), any::<bool>()).prop_map(
            |(mut segments, tail)| {
                if tail {
                    segments.push("*");
                }
                EventPath::new(segments)
            },
        )
    }

    /// Types for the patterns above: up to one segment longer than the longest (4 and `*`).
    static WORLD: std::sync::LazyLock<Vec<EventPath>> =
        std::sync::LazyLock::new(|| all_types(&["a", "b", "c", "z"], 6));

    proptest! {
        #[test]
        fn covers_agrees_with_brute_force(allowed in pattern(), wanted in pattern()) {
            prop_assert_eq!(covers(&allowed, &wanted), covers_by_brute_force(&allowed, &wanted, &WORLD));
        }
    }

    fn acl(register: Option<&[&str]>, subscribe: Option<&[&str]>) -> Acl {
        let list = |l: Option<&[&str]>| l.map(|l| l.iter().map(|s| p(s)).collect());
        Acl {
            register: list(register),
            subscribe: list(subscribe),
            request: None,
            federate: false,
            files: FileAccess::Write,
        }
    }

    #[test]
    fn requests_go_only_to_listed_clients() {
        let open = acl(None, None);
        assert!(open.may_request("anyone"));
        let narrow = Acl { request: Some(vec!["device-1".into()]), ..acl(None, None) };
        assert!(narrow.may_request("device-1"));
        assert!(!narrow.may_request("device-2"));
        let none = Acl { request: Some(Vec::new()), ..acl(None, None) };
        assert!(!none.may_request("device-1"));
    }

    #[test]
    fn registrations_need_a_matching_pattern() {
        let dev = acl(Some(&["sensor/*"]), None);
        assert!(dev.check_register("dev", &p("sensor/room1/temp")).is_ok());
        let e = dev.check_register("dev", &p("secret/door")).unwrap_err();
        assert_eq!(e, r#"client "dev" may not register secret/door (allowed: sensor/*)"#);
        let none = acl(Some(&[]), None);
        assert!(none.check_register("ro", &p("a")).unwrap_err().contains("allowed: nothing"));
        assert!(acl(None, Some(&[])).check_register("x", &p("any/thing")).is_ok());
    }

    #[test]
    fn subscriptions_must_be_covered() {
        let dev = acl(None, Some(&["sensor/*", "status/?"]));
        assert!(dev.check_subscriptions("dev", &[p("sensor/?/temp"), p("status/gw")]).is_ok());
        let e = dev.check_subscriptions("dev", &[p("sensor/*"), p("status/*")]).unwrap_err();
        assert!(e.contains("may not subscribe to status/*") && e.contains("sensor/*, status/?"), "{e}");
        assert!(!dev.sees_everything());
        assert!(acl(None, Some(&["*"])).sees_everything());
        assert!(acl(None, Some(&[])).check_subscriptions("x", &[p("a")]).is_err());
    }

    #[test]
    fn queries_stay_within_the_subscribe_list() {
        let dev = acl(None, Some(&["sensor/*"]));
        let latest = dev.restrict_query("dev", Query::Latest { event_types: None }).unwrap();
        assert_eq!(latest, Query::Latest { event_types: Some(vec![p("sensor/*")]) });
        let named = Query::Latest { event_types: Some(vec![p("sensor/a")]) };
        assert_eq!(dev.restrict_query("dev", named.clone()).unwrap(), named);
        let series = Query::Timeseries(TimeseriesQuery { max_results: Some(5), ..TimeseriesQuery::default() });
        match dev.restrict_query("dev", series).unwrap() {
            Query::Timeseries(q) => {
                assert_eq!(q.event_types, Some(vec![p("sensor/*")]));
                assert_eq!(q.max_results, Some(5), "the rest of the query stays");
            }
            other => panic!("{other:?}"),
        }
        let outside =
            Query::Timeseries(TimeseriesQuery { event_types: Some(vec![p("secret/*")]), ..Default::default() });
        let e = dev.restrict_query("dev", outside).unwrap_err();
        assert!(e.contains("may not query secret/*"), "{e}");
        let server = Query::Server { server_id: 1, persisted: false, max_results: None, last_event_id: None };
        assert!(dev.restrict_query("dev", server.clone()).unwrap_err().contains("server 1"));
        assert_eq!(acl(None, Some(&["*"])).restrict_query("all", server.clone()).unwrap(), server);
        assert_eq!(acl(None, None).restrict_query("all", server.clone()).unwrap(), server);
    }
}
