//! The task that holds a hat client's connection: frames in through `ChatterDecoder`, the
//! keepalive and the conversations through the core's `Chatter`, the init first, then the
//! handle's commands, the server's answers (matched to their requests by conversation), status
//! and event notifications.

use std::collections::{HashMap, VecDeque};

use rivulet_core::driver::Clock;
use rivulet_core::hat::chatter::{ChatterDecoder, MAX_HEADER_LEN};
use rivulet_core::hat::conversation::{Chatter, ChatterEvent, Config, Conversation, Received};
use rivulet_core::hat::eventer::{
    EventerMessage, EventsAck, InitReq, InitRes, Message, QueryRes, RegisterReq, RegisterRes, StatusNotify,
};
use rivulet_core::hat::{self, owned as convert};
use rivulet_core::model::RegisterEventRef;
use rivulet_core::owned::{Event, Query, QueryPage, RegisterEvent, Status};
use rivulet_core::wire::FrameDecoder;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, watch};

use super::{HatError, HatOptions};
use crate::TokioClock;
use crate::link::Stream;

/// Notifications read from the server and not yet handed to `HatEvents`; beyond them the task
/// stops reading the socket (and so answers no ping) until the program reads.
pub(super) const QUEUED_BATCHES: usize = 4;

type Answer<T> = oneshot::Sender<Result<T, HatError>>;

/// What the handle asks of the task.
pub(super) enum Command {
    /// Answered with the registered events when `respond`, else with `None` once written.
    Register {
        events: Vec<RegisterEvent>,
        respond: bool,
        answer: Answer<Option<Vec<Event>>>,
    },
    Query {
        query: Query,
        answer: Answer<QueryPage>,
    },
    Close,
}

/// A request waiting for its answer, by the id that opened its conversation.
enum Pending {
    Register(Answer<Option<Vec<Event>>>),
    Query(Answer<QueryPage>),
}

/// Why the connection ended.
enum End {
    /// Closed by the client, or by the server.
    Closed,
    /// The server broke the protocol.
    Protocol(String),
    Io(std::io::Error),
    /// Nothing arrived within the keepalive's timeout.
    TimedOut,
    /// No answer to the init in time.
    InitTimedOut,
    /// The server refused the init.
    Refused(String),
}

struct Connection {
    stream: Stream,
    chatter: Chatter,
    clock: TokioClock,
    /// Where frames are written; grows to the largest one.
    tx: Vec<u8>,
    max_frame: usize,
    /// The init's conversation and who waits for it, until it is answered.
    init: Option<(Conversation, oneshot::Sender<Result<(), HatError>>)>,
    pending: HashMap<i64, Pending>,
    /// Notified events not yet handed over, each with the conversation to ack it in.
    notified: VecDeque<(Vec<Event>, Option<Conversation>)>,
    events: mpsc::Sender<Vec<Event>>,
    status: watch::Sender<Status>,
}

pub(super) async fn run(
    stream: Stream,
    options: HatOptions,
    init: oneshot::Sender<Result<(), HatError>>,
    mut commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<Vec<Event>>,
    status: watch::Sender<Status>,
) {
    let clock = TokioClock::new();
    let config = Config {
        ping_delay: rivulet_core::time::Duration::from_core(options.ping_delay),
        ping_timeout: rivulet_core::time::Duration::from_core(options.ping_timeout),
    };
    let mut connection = Connection {
        stream,
        chatter: Chatter::new(config, clock.now()),
        clock,
        tx: vec![0; 4096],
        max_frame: options.max_frame,
        init: None,
        pending: HashMap::new(),
        notified: VecDeque::new(),
        events,
        status,
    };
    let end = connection.run(&options, init, &mut commands).await;
    connection.finish(end).await;
}

impl Connection {
    async fn run(
        &mut self,
        options: &HatOptions,
        init: oneshot::Sender<Result<(), HatError>>,
        commands: &mut mpsc::Receiver<Command>,
    ) -> Result<(), End> {
        let subscriptions = convert::wire_types(&options.subscriptions);
        let request = InitReq {
            client_name: &options.client_name,
            client_token: options.client_token.as_deref(),
            subscriptions,
            server_id: options.server_id,
            persisted: options.persisted,
        };
        // The init opens the first conversation; whoever waits for it learns how it went.
        self.init = Some((Conversation { owner: true, first_id: self.chatter.next_id() }, init));
        match self.open(&request, false).await {
            Ok(_) => {}
            Err(Err(e)) => {
                if let Some((_, init)) = self.init.take() {
                    let _ = init.send(Err(HatError::Invalid(e)));
                }
                return Ok(());
            }
            Err(Ok(end)) => return Err(end),
        }
        let init_by = tokio::time::Instant::now() + options.init_timeout;

        let mut rx = vec![0u8; MAX_HEADER_LEN.saturating_add(self.max_frame)];
        let mut decoder = ChatterDecoder::with_limit(&mut rx, self.max_frame);
        loop {
            while let Some(range) = decoder.next_frame().map_err(|e| End::Protocol(e.to_string()))? {
                self.on_frame(decoder.frame(range)).await?;
            }
            let now = self.clock.now();
            if let Some(ChatterEvent::TimedOut) = self.chatter.poll(now) {
                return Err(End::TimedOut);
            }
            if self.chatter.wants_transmit(now) {
                let len = self.chatter.poll_transmit(now, &mut self.tx).map_err(|e| End::Protocol(e.to_string()))?;
                self.write(len).await?;
            }
            let wake = self.chatter.poll_timeout();
            let reading = self.notified.len() < QUEUED_BATCHES;
            let initialized = self.init.is_none();
            tokio::select! {
                read = self.stream.read(decoder.read_buffer()), if reading => match read {
                    Ok(0) => return Err(End::Closed),
                    Ok(n) => decoder.commit(n),
                    Err(e) => return Err(End::Io(e)),
                },
                command = commands.recv(), if initialized => match command {
                    Some(Command::Close) | None => return Ok(()),
                    Some(command) => self.on_command(command).await?,
                },
                // An owned permit: the arm answers with `&mut self` while it is held.
                permit = self.events.clone().reserve_owned(), if !self.notified.is_empty() => {
                    if let Some((batch, ack)) = self.notified.pop_front() {
                        // Nobody reads the events any more: they are dropped, and still acked.
                        if let Ok(permit) = permit {
                            permit.send(batch);
                        }
                        if let Some(conversation) = ack {
                            self.reply(conversation, &EventsAck).await?;
                        }
                    }
                },
                () = self.clock.at(wake.unwrap_or(now)), if wake.is_some() => {}
                () = tokio::time::sleep_until(init_by), if !initialized => return Err(End::InitTimedOut),
            }
        }
    }

    async fn on_command(&mut self, command: Command) -> Result<(), End> {
        match command {
            Command::Register { events, respond, answer } => {
                let refs: Vec<RegisterEventRef<'_>> = events.iter().map(RegisterEvent::as_ref).collect();
                match self.open(&RegisterReq { events: &refs[..] }, !respond).await {
                    Ok(conversation) if respond => {
                        self.pending.insert(conversation.first_id, Pending::Register(answer));
                    }
                    Ok(_) => {
                        let _ = answer.send(Ok(None));
                    }
                    Err(Err(e)) => {
                        let _ = answer.send(Err(HatError::Invalid(e)));
                    }
                    Err(Ok(end)) => return Err(end),
                }
            }
            Command::Query { query, answer } => match self.open(&convert::query_params(&query), false).await {
                Ok(conversation) => {
                    self.pending.insert(conversation.first_id, Pending::Query(answer));
                }
                Err(Err(e)) => {
                    let _ = answer.send(Err(HatError::Invalid(e)));
                }
                Err(Ok(end)) => return Err(end),
            },
            Command::Close => {}
        }
        Ok(())
    }

    async fn on_frame(&mut self, body: &[u8]) -> Result<(), End> {
        let now = self.clock.now();
        let received = self.chatter.receive(now, body).map_err(|e| End::Protocol(e.to_string()))?;
        // Pings and pongs stay in the chatter.
        let Some(received) = received else { return Ok(()) };
        let message = received.message().map_err(|e| End::Protocol(format!("{}: {e}", received.msg_type)))?;
        if let Some((conversation, init)) = self.init.take() {
            return match message {
                Message::InitRes(InitRes::Success(status)) if received.is_reply_to(conversation) => {
                    self.status.send_replace(status);
                    let _ = init.send(Ok(()));
                    Ok(())
                }
                Message::InitRes(InitRes::Error(reason)) if received.is_reply_to(conversation) => {
                    let _ = init.send(Err(HatError::Refused(reason.to_string())));
                    Err(End::Refused(reason.to_string()))
                }
                _ => {
                    let why = format!("{} before the answer to the init", received.msg_type);
                    let _ = init.send(Err(HatError::Protocol(why.clone())));
                    Err(End::Protocol(why))
                }
            };
        }
        match message {
            Message::StatusNotify(StatusNotify(status)) => {
                self.status.send_replace(status);
            }
            Message::EventsNotify(notify) => {
                let events = notify.events.iter().map(|view| convert::event(&view)).collect();
                let ack = (!received.last).then_some(received.conversation);
                self.notified.push_back((events, ack));
            }
            Message::RegisterRes(result) => {
                let result = match result {
                    RegisterRes::Events(events) => Ok(Some(events.iter().map(|view| convert::event(&view)).collect())),
                    RegisterRes::Failure => Err(HatError::Failure),
                };
                match self.answered(&received) {
                    Some(Pending::Register(answer)) => {
                        let _ = answer.send(result);
                    }
                    _ => return Err(unexpected(&received)),
                }
            }
            Message::QueryRes(QueryRes { events, more_follows }) => match self.answered(&received) {
                Some(Pending::Query(answer)) => {
                    let events = events.iter().map(|view| convert::event(&view)).collect();
                    let _ = answer.send(Ok(QueryPage { events, more_follows }));
                }
                _ => return Err(unexpected(&received)),
            },
            _ => return Err(End::Protocol(format!("{} from a server", received.msg_type))),
        }
        Ok(())
    }

    /// The request `received` answers, taken off the list.
    fn answered(&mut self, received: &Received<'_>) -> Option<Pending> {
        if !received.conversation.owner {
            return None;
        }
        self.pending.remove(&received.conversation.first_id)
    }

    /// Writes `message` opening a new conversation. The error is `Err` for what cannot be
    /// encoded (the connection goes on), `Ok` for the end of the connection.
    async fn open(
        &mut self,
        message: &impl EventerMessage,
        last: bool,
    ) -> Result<Conversation, Result<End, hat::Error>> {
        loop {
            match self.chatter.open(message, last, &mut self.tx) {
                Ok((len, conversation)) => return self.write(len).await.map(|()| conversation).map_err(Ok),
                Err(hat::Error::BufferTooSmall) => self.grow().map_err(Err)?,
                Err(e) => return Err(Err(e)),
            }
        }
    }

    /// Writes `message` as the last of `conversation`, one the server opened.
    async fn reply(&mut self, conversation: Conversation, message: &impl EventerMessage) -> Result<(), End> {
        loop {
            match self.chatter.reply(conversation, message, true, &mut self.tx) {
                Ok(len) => return self.write(len).await,
                Err(hat::Error::BufferTooSmall) => self.grow().map_err(|e| End::Protocol(e.to_string()))?,
                Err(e) => return Err(End::Protocol(format!("cannot encode a message: {e}"))),
            }
        }
    }

    /// Doubles the transmit buffer, up to the largest frame ([`HatOptions::max_frame`], which
    /// a server with hat's own limit takes too).
    fn grow(&mut self) -> Result<(), hat::Error> {
        let limit = MAX_HEADER_LEN.saturating_add(self.max_frame);
        if self.tx.len() >= limit {
            return Err(hat::Error::Oversize);
        }
        let grown = self.tx.len().saturating_mul(2).min(limit);
        self.tx.resize(grown, 0);
        Ok(())
    }

    async fn write(&mut self, len: usize) -> Result<(), End> {
        let Some(frame) = self.tx.get(..len) else { return Ok(()) };
        self.stream.write_all(frame).await.map_err(End::Io)
    }

    /// Ends the connection: whoever waits gets why, what was notified is handed over.
    async fn finish(mut self, end: Result<(), End>) {
        let failure = match &end {
            Ok(()) | Err(End::Closed) => HatError::Closed,
            Err(End::Protocol(why)) => {
                log::warn!("hat connection closed: the server broke the protocol: {why}");
                HatError::Protocol(why.clone())
            }
            Err(End::Io(e)) => {
                log::info!("hat connection failed: {e}");
                HatError::Io(e.to_string())
            }
            Err(End::TimedOut) => {
                log::warn!("hat connection closed: no answer to our ping");
                HatError::Closed
            }
            Err(End::InitTimedOut) => HatError::TimedOut,
            Err(End::Refused(reason)) => HatError::Refused(reason.clone()),
        };
        if let Some((_, init)) = self.init.take() {
            let _ = init.send(Err(match failure {
                HatError::Closed => HatError::Io("the server closed the connection before answering the init".into()),
                other => other,
            }));
        }
        // Pending calls fail with `Closed` as their answers are dropped.
        self.pending.clear();
        // Without waiting: a program that reads no more must still be able to close.
        while let Some((batch, _)) = self.notified.pop_front() {
            if let Err(e) = self.events.try_send(batch) {
                log::warn!("hat connection closed with notified events nobody took: {} dropped", e.into_inner().len());
            }
        }
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), self.stream.shutdown()).await;
    }
}

fn unexpected(received: &Received<'_>) -> End {
    End::Protocol(format!("{} in a conversation that asked for none", received.msg_type))
}
