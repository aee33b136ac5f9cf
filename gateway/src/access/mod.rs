//! Who may do what, whatever the protocol: a [`Principal`] (a client some front-end logged in),
//! the configured clients ([`Clients`], `clients.rs`) and the checks of a principal's ACL
//! (`acl.rs`) for registering, subscribing, querying and calling. Each front-end logs its clients
//! in its own way (the native protocol's challenge-response is `frontend::native::login`), then
//! asks the broker, which asks here.

mod acl;
pub(crate) mod clients;

use std::net::SocketAddr;

use rivulet_core::owned::{EventPath, Query};

use crate::config::FileAccess;

pub use acl::{Acl, covers};
pub(crate) use clients::Ring;
pub use clients::{Clients, Credential, KEY_LEN, SALT_LEN, TOKEN_LEN, from_hex, to_hex};

/// The one refusal for an unknown name and a wrong token alike, so names cannot be probed.
pub const WRONG_CREDENTIAL: &str = "unknown client or wrong credential";

/// A logged-in client, as the broker sees it: its name (what its ACL is found by), the
/// front-end it came through and where from (for logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Principal<'a> {
    pub name: &'a str,
    /// The front-end's name: `native`, …
    pub frontend: &'static str,
    pub peer: Option<SocketAddr>,
}

impl std::fmt::Display for Principal<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?} ({}", self.name, self.frontend)?;
        match self.peer {
            Some(peer) => write!(f, " {peer})"),
            None => f.write_str(")"),
        }
    }
}

/// What a principal may not do, and why (the reason names the pattern and what is allowed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied(pub String);

impl std::fmt::Display for Denied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The ACL checks, over the configured clients (everyone may do everything when there are none).
#[derive(Debug)]
pub struct Access {
    clients: std::sync::Arc<Clients>,
}

impl Access {
    pub fn new(clients: std::sync::Arc<Clients>) -> Access {
        Access { clients }
    }

    /// The configured clients (their credentials are for the front-ends' logins).
    pub fn clients(&self) -> &std::sync::Arc<Clients> {
        &self.clients
    }

    /// What `who` may do. Every name a front-end lets in is configured (or none is), so a name
    /// without an ACL is one the login did not pass.
    fn acl(&self, who: &Principal<'_>) -> Result<&Acl, Denied> {
        self.clients.acl(who.name).ok_or_else(|| Denied(WRONG_CREDENTIAL.to_string()))
    }

    pub fn check_register(&self, who: &Principal<'_>, event_type: &EventPath) -> Result<(), Denied> {
        self.acl(who)?.check_register(who.name, event_type).map_err(Denied)
    }

    pub fn check_subscriptions(&self, who: &Principal<'_>, patterns: &[EventPath]) -> Result<(), Denied> {
        self.acl(who)?.check_subscriptions(who.name, patterns).map_err(Denied)
    }

    /// The query as `who` may ask it (narrowed to what it may see, or refused).
    pub fn restrict_query(&self, who: &Principal<'_>, query: Query) -> Result<Query, Denied> {
        self.acl(who)?.restrict_query(who.name, query).map_err(Denied)
    }

    /// The patterns of a latest query of `who` (every type when `None`), narrowed to what it may
    /// see; `*` when it may see everything.
    pub fn latest_patterns(
        &self,
        who: &Principal<'_>,
        patterns: Option<Vec<EventPath>>,
    ) -> Result<Vec<EventPath>, Denied> {
        match self.restrict_query(who, Query::Latest { event_types: patterns })? {
            Query::Latest { event_types: Some(allowed) } => Ok(allowed),
            _ => Ok(vec![EventPath::parse("*")]),
        }
    }

    /// Whether `who` may link as a peer gateway.
    pub fn check_federate(&self, who: &Principal<'_>) -> Result<(), Denied> {
        if self.acl(who)?.federate {
            Ok(())
        } else {
            Err(Denied(format!(
                "client {:?} may not link as a peer gateway (`federate = true` in its entry)",
                who.name
            )))
        }
    }

    /// Whether `who` may read the gateway's files (`write`: also send them).
    pub fn check_files(&self, who: &Principal<'_>, write: bool) -> Result<(), Denied> {
        let access = self.acl(who)?.files;
        let allowed = match access {
            FileAccess::Write => true,
            FileAccess::Read => !write,
            FileAccess::None => false,
        };
        if allowed {
            Ok(())
        } else {
            let what = if write { "send files to" } else { "read files of" };
            Err(Denied(format!("client {:?} may not {what} the gateway (`files` in its entry)", who.name)))
        }
    }

    /// Whether `who` may call the request handlers of the client named `target`.
    pub fn check_call(&self, who: &Principal<'_>, target: &str) -> Result<(), Denied> {
        if self.acl(who)?.may_request(target) {
            Ok(())
        } else {
            Err(Denied(format!("client {:?} may not call requests of {target:?}", who.name)))
        }
    }
}
