//! Consumer groups: websocket subscriptions to one stream with one `groupId` share its messages,
//! each message going to one member. A group is one subscriber of the broker's fan-out (so its
//! messages come in id order, and a group that falls a queue behind is cut off like any
//! subscriber); a task deals them to the members in turn, passing over a member without room
//! (a slow member slows nobody: the others take its share). Members joining and leaving change
//! the turn at once. What a member was handed and had not sent when it left is lost with it;
//! what the group had not handed out goes to the members still there.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rivulet_core::owned::Payload;
use rivulet_tokio::fanout::{Delivery, Subscriber};
use tokio::sync::mpsc;

use super::ws::Forwarded;

/// How long the dealer waits before it looks again when no member has room.
const NO_ROOM_WAIT: Duration = Duration::from_millis(2);

/// One member: a connection's subscription (its id there) and where its connection takes messages.
struct Member {
    connection: u64,
    subscription: u64,
    handed: mpsc::Sender<Forwarded>,
}

/// The members of one group.
#[derive(Default)]
struct Members {
    list: Vec<Member>,
    /// Whose turn it is next.
    next: usize,
}

/// A group's key: its stream and its group id.
type GroupKey = (String, String);

/// Every group, by stream and group id.
#[derive(Default)]
pub struct Groups {
    groups: Mutex<HashMap<GroupKey, Arc<Mutex<Members>>>>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Groups {
    /// Adds a member to the group of `stream` and `group`; `subscribe` makes the group's fan-out
    /// subscriber when the group is new (and may refuse, for the ACL).
    pub fn join<E>(
        &self,
        stream: &str,
        group: &str,
        connection: u64,
        subscription: u64,
        handed: mpsc::Sender<Forwarded>,
        subscribe: impl FnOnce() -> Result<Subscriber, E>,
    ) -> Result<(), E> {
        let mut groups = lock(&self.groups);
        let key = (stream.to_string(), group.to_string());
        let member = Member { connection, subscription, handed };
        if let Some(members) = groups.get(&key) {
            lock(members).list.push(member);
            return Ok(());
        }
        let subscriber = subscribe()?;
        let members = Arc::new(Mutex::new(Members { list: vec![member], next: 0 }));
        groups.insert(key, members.clone());
        tokio::spawn(deal(subscriber, stream.into(), members));
        Ok(())
    }

    /// Takes a connection's memberships away; a group left without members ends.
    pub fn leave(&self, connection: u64) {
        let mut groups = lock(&self.groups);
        groups.retain(|_, members| {
            let mut members = lock(members);
            members.list.retain(|m| m.connection != connection);
            !members.list.is_empty()
        });
    }
}

/// Deals the group's messages to its members in turn until it has none (or is cut off: then
/// every member's connection hears of it).
async fn deal(mut subscriber: Subscriber, stream: Arc<str>, members: Arc<Mutex<Members>>) {
    loop {
        let event = match subscriber.next(true).await {
            Delivery::Event(event) => event,
            Delivery::CutOff => {
                for member in lock(&members).list.drain(..) {
                    let _ = member.handed.try_send(Forwarded::CutOff);
                }
                return;
            }
        };
        let Some(Payload::Json(text)) = &event.payload else {
            subscriber.skipped();
            continue;
        };
        subscriber.delivered();
        loop {
            // The next member in turn with room takes it; members whose connection is gone go.
            let handed = {
                let mut members = lock(&members);
                if members.list.is_empty() {
                    return;
                }
                let count = members.list.len();
                let mut handed = false;
                for step in 0..count {
                    let at = (members.next + step) % count;
                    let Some(member) = members.list.get(at) else { break };
                    let message =
                        Forwarded::Message { id: member.subscription, stream: stream.clone(), payload: text.clone() };
                    match member.handed.try_send(message) {
                        Ok(()) => {
                            members.next = (at + 1) % count;
                            handed = true;
                            break;
                        }
                        Err(mpsc::error::TrySendError::Full(_)) => {}
                        Err(mpsc::error::TrySendError::Closed(_)) => {}
                    }
                }
                members.list.retain(|m| !m.handed.is_closed());
                handed
            };
            if handed {
                subscriber.acknowledged(1);
                break;
            }
            tokio::time::sleep(NO_ROOM_WAIT).await;
        }
    }
}
