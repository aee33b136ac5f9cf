//! A connection's registrations on their way to the handler, and back as acknowledgements: the
//! store worker batches what the client sent, hands each batch to the handler under its
//! session's admission lock ([`super::sessions`]), and reports each batch to the connection task
//! once durable, in order, with refused registrations answered in their place.

use std::collections::VecDeque;
use std::sync::Arc;

use rivulet_core::session::Incoming;
use tokio::sync::mpsc;

use super::Shared;
use super::handler::{ClientInfo, HandlerError, Registration, ServerHandler, guarded};
use super::options::PIPELINE;
use super::sessions::{Durable, admit};
use crate::model::{Event, QueryPage, RegisterEvent};
use crate::packet::PacketReply;

/// Registrations for the connection's store worker, in the order the client sent them.
pub(super) enum Work {
    Register {
        generation: u64,
        client: Arc<ClientInfo>,
        registration: Registration,
    },
    RegisterRequest {
        generation: u64,
        client: Arc<ClientInfo>,
        from: Incoming,
        events: Vec<RegisterEvent>,
    },
    /// A registration the handler does not allow, answered in its place among the others.
    Refused {
        generation: u64,
        seq: u32,
        reason: String,
    },
}

/// What the store worker and the request handlers report back to the connection task.
pub(super) enum Outcome {
    Stored { generation: u64, count: u32 },
    Refused { generation: u64, seq: u32, reason: String },
    StoreFailed { generation: u64, error: HandlerError },
    Answer { generation: u64, from: Incoming, answer: Answer },
}

pub(super) enum Answer {
    Query(Result<QueryPage, HandlerError>),
    Registered(Result<Vec<Event>, HandlerError>),
    App(Result<PacketReply, HandlerError>),
}

/// A batch the handler took (or found taken), waiting to be durable before it is acknowledged;
/// or a refused registration, answered in its place after the batches before it.
struct InFlight {
    generation: u64,
    count: u32,
    durable: Durable,
    refusal: Option<(u32, String)>,
}

/// Hands a connection's registrations to the handler in order, batching what is queued, and
/// acknowledges each batch once durable, in order. Up to [`PIPELINE`] batches are taken before
/// the first is durable, so a store that commits in groups is not waited on batch by batch, and
/// the connection task keeps serving the link meanwhile.
pub(super) async fn store_worker<H: ServerHandler>(
    handler: Arc<H>,
    shared: Arc<Shared>,
    mut work: mpsc::Receiver<Work>,
    outcomes: mpsc::Sender<Outcome>,
) {
    let mut carried: Option<Work> = None;
    let mut in_flight: VecDeque<InFlight> = VecDeque::new();
    // A link whose store failed is closing; its later registrations are sent again on the next.
    let mut failed: Option<u64> = None;
    loop {
        /// What the worker's wait returned.
        enum WorkerInput {
            Work(Option<Work>),
            Durable(Result<(), HandlerError>),
            Gone,
        }
        let woke = if let Some(item) = carried.take() {
            WorkerInput::Work(Some(item))
        } else {
            let room = in_flight.len() < PIPELINE;
            let front = in_flight.front_mut().map(|f| f.durable.as_mut());
            let waiting = front.is_some();
            tokio::select! {
                item = work.recv(), if room => WorkerInput::Work(item),
                done = async { front?.await.into() }, if waiting => match done {
                    Some(done) => WorkerInput::Durable(done),
                    None => continue,
                },
                () = outcomes.closed() => WorkerInput::Gone,
            }
        };
        let outcome = match woke {
            WorkerInput::Gone | WorkerInput::Work(None) => break,
            WorkerInput::Durable(done) => {
                let Some(batch) = in_flight.pop_front() else { continue };
                let generation = batch.generation;
                if failed == Some(generation) {
                    continue; // after a failure nothing more is acknowledged on that link
                }
                match (done, batch.refusal) {
                    (Ok(()), None) => Outcome::Stored { generation, count: batch.count },
                    (Ok(()), Some((seq, reason))) => Outcome::Refused { generation, seq, reason },
                    (Err(error), _) => {
                        failed = Some(generation);
                        Outcome::StoreFailed { generation, error }
                    }
                }
            }
            WorkerInput::Work(Some(Work::Register { generation, mut client, registration })) => {
                let mut batch = vec![registration];
                while let Ok(next) = work.try_recv() {
                    match next {
                        Work::Register { generation: g, client: c, registration } if g == generation => {
                            batch.push(registration);
                            client = c;
                        }
                        other => {
                            carried = Some(other);
                            break;
                        }
                    }
                }
                if failed == Some(generation) {
                    continue;
                }
                let count = u32::try_from(batch.len()).unwrap_or(u32::MAX);
                match admit(&handler, &shared, client, batch).await {
                    Ok(durable) => {
                        in_flight.push_back(InFlight { generation, count, durable, refusal: None });
                        continue;
                    }
                    Err(error) => {
                        failed = Some(generation);
                        Outcome::StoreFailed { generation, error }
                    }
                }
            }
            WorkerInput::Work(Some(Work::Refused { generation, seq, reason })) => {
                // In its place among the acknowledgements: after what was taken before it.
                let durable: Durable = Box::pin(async { Ok(()) });
                in_flight.push_back(InFlight { generation, count: 1, durable, refusal: Some((seq, reason)) });
                continue;
            }
            WorkerInput::Work(Some(Work::RegisterRequest { generation, client, from, events })) => {
                // Not sequenced: it does not wait for the registrations before it, nor they for it.
                let (handler, outcomes) = (handler.clone(), outcomes.clone());
                tokio::spawn(async move {
                    let session = client.session;
                    let registrations =
                        events.into_iter().map(|event| Registration { session, seq: None, event }).collect();
                    let answer = guarded(async move { handler.register(&client, registrations).await }).await;
                    let _ =
                        outcomes.send(Outcome::Answer { generation, from, answer: Answer::Registered(answer) }).await;
                });
                continue;
            }
        };
        if outcomes.send(outcome).await.is_err() {
            break;
        }
    }
    // Whatever was taken still becomes durable (or not): the session's progress must say so.
    for batch in in_flight {
        let _ = batch.durable.await;
    }
}
