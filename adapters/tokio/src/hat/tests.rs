//! The client against a scripted server on the core's codec, over an in-memory stream: what a
//! real server cannot be made to do on cue (refuse, answer failure, page, stop answering pings,
//! notify faster than the program reads). The real servers are in host-tests/tests/hat_client.rs.

use std::time::Duration;

use rivulet_core::driver::Clock;
use rivulet_core::hat::chatter::{Header, Msg};
use rivulet_core::hat::conversation::{Chatter, Config, Conversation};
use rivulet_core::hat::eventer::{
    EventerMessage, EventsNotify, InitReq, InitRes, Keepalive, Message, MsgType, QueryParams, QueryRes, RegisterReq,
    RegisterRes, StatusNotify,
};
use rivulet_core::hat::owned as convert;
use rivulet_core::model::{EventId, Timestamp};
use rivulet_core::model::{EventRef, EventTypeRef};
use rivulet_core::owned::{Event, EventPath, Order, Payload, Query, Status, TimeseriesQuery};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use super::*;
use crate::TokioClock;

/// The server's side of the stream: frames read whole, sent through a `Chatter` for the ids.
struct Server {
    io: DuplexStream,
    chatter: Chatter,
    tx: Vec<u8>,
}

/// A frame as the server read it.
struct Frame {
    header: Header,
    msg_type: String,
    data: Vec<u8>,
}

impl Frame {
    fn message(&self) -> Message<'_> {
        Message::parse(&self.msg_type, &self.data).expect("the client's message parses")
    }
    /// The conversation as the server sees it.
    fn conversation(&self) -> Conversation {
        Conversation { owner: !self.header.owner, first_id: self.header.first }
    }
}

impl Server {
    async fn read(&mut self) -> Option<Frame> {
        let mut ll = [0u8; 1];
        self.io.read_exact(&mut ll).await.ok()?;
        let mut len = vec![0u8; usize::from(ll[0])];
        self.io.read_exact(&mut len).await.ok()?;
        let len = len.iter().fold(0usize, |n, b| n << 8 | usize::from(*b));
        let mut body = vec![0u8; len];
        self.io.read_exact(&mut body).await.ok()?;
        let msg = Msg::parse(&body).expect("a chatter message");
        Some(Frame { header: msg.header, msg_type: msg.msg_type.to_string(), data: msg.data.to_vec() })
    }

    /// The next frame that is not a keepalive.
    async fn recv(&mut self) -> Frame {
        loop {
            let frame = self.read().await.expect("a frame from the client");
            if frame.msg_type != MsgType::Ping.name() && frame.msg_type != MsgType::Pong.name() {
                return frame;
            }
        }
    }

    async fn open(&mut self, message: &impl EventerMessage, last: bool) -> Conversation {
        let (len, conversation) = self.chatter.open(message, last, &mut self.tx).unwrap();
        self.io.write_all(&self.tx[..len]).await.unwrap();
        conversation
    }

    async fn reply(&mut self, conversation: Conversation, message: &impl EventerMessage) {
        let len = self.chatter.reply(conversation, message, true, &mut self.tx).unwrap();
        self.io.write_all(&self.tx[..len]).await.unwrap();
    }

    /// Takes the init and answers it with `answer`; returns the init as read.
    async fn accept(&mut self, answer: InitRes<'_>) -> Frame {
        let init = self.recv().await;
        assert!(matches!(init.message(), Message::InitReq(_)), "the init comes first");
        assert!(!init.header.last, "the init asks for an answer");
        self.reply(init.conversation(), &answer).await;
        init
    }
}

type Connecting = tokio::task::JoinHandle<Result<(HatClient, HatEvents), HatError>>;

/// A client connecting over an in-memory stream to a scripted server.
fn pair(options: HatOptions) -> (Server, Connecting) {
    let (client_io, server_io) = tokio::io::duplex(1 << 16);
    let chatter = Chatter::new(Config::default(), TokioClock::new().now());
    let server = Server { io: server_io, chatter, tx: vec![0; 1 << 16] };
    (server, tokio::spawn(connect_stream(client_io, options)))
}

fn event(instance: u64, path: &[&str]) -> Event {
    Event {
        id: EventId { server: 1, session: 1, instance },
        event_type: EventPath::new(path),
        timestamp: Timestamp { s: 1_700_000_000, us: 5 },
        source_timestamp: None,
        payload: Some(Payload::Json(instance.to_string())),
    }
}

#[tokio::test]
async fn the_init_carries_the_options_and_status_changes_reach_the_handle() {
    let mut options = HatOptions::new("meter");
    options.client_token = Some("secret".into());
    options.subscriptions = vec![EventPath::new(["a", "*"]), EventPath::default()];
    options.server_id = Some(7);
    options.persisted = true;
    let (mut server, connecting) = pair(options);
    let init = server.accept(InitRes::Success(Status::Starting)).await;
    let Message::InitReq(request) = init.message() else { unreachable!() };
    assert_eq!((request.client_name, request.client_token), ("meter", Some("secret")));
    assert_eq!(convert::event_paths(&request.subscriptions), [EventPath::new(["a", "*"]), EventPath::default()]);
    assert_eq!((request.server_id, request.persisted), (Some(7), true));
    let (client, _events) = connecting.await.unwrap().expect("accepted");
    assert_eq!(client.status(), Status::Starting);
    let mut changes = client.status_changes();
    server.open(&StatusNotify(Status::Operational), true).await;
    changes.wait_for(|s| *s == Status::Operational).await.expect("the status changes");
    assert_eq!(client.status(), Status::Operational);
}

#[tokio::test]
async fn a_refused_init_is_an_error_with_the_servers_reason() {
    let (mut server, connecting) = pair(HatOptions::new("nobody"));
    server.accept(InitRes::Error("who are you")).await;
    let refused = connecting.await.unwrap().map(|_| ()).expect_err("refused");
    assert_eq!(refused, HatError::Refused("who are you".into()));
}

#[tokio::test]
async fn an_init_without_an_answer_times_out() {
    let mut options = HatOptions::new("patient");
    options.init_timeout = Duration::from_millis(200);
    let (mut server, connecting) = pair(options);
    let _init = server.recv().await;
    assert_eq!(connecting.await.unwrap().map(|_| ()).expect_err("no answer"), HatError::TimedOut);
}

#[tokio::test]
async fn registrations_with_and_without_a_response_and_a_failure() {
    let (mut server, connecting) = pair(HatOptions::new("writer"));
    server.accept(InitRes::Success(Status::Operational)).await;
    let (client, _events) = connecting.await.unwrap().unwrap();
    let new =
        |path: &[&str]| rivulet_core::owned::RegisterEvent::new(EventPath::new(path), Some(Payload::Json("1".into())));

    client.register(vec![new(&["fire", "forget"])]).await.expect("written");
    let frame = server.recv().await;
    assert!(frame.header.last, "no answer asked for");
    let Message::RegisterReq(RegisterReq { events }) = frame.message() else { panic!("{}", frame.msg_type) };
    assert_eq!(events.iter().map(|v| convert::register_event(&v)).collect::<Vec<_>>(), [new(&["fire", "forget"])]);

    let answered = tokio::spawn(async move {
        let ok = client.register_with_response(vec![new(&["a"])]).await;
        let failed = client.register_with_response(vec![new(&["b"])]).await;
        (client, ok, failed)
    });
    let first = server.recv().await;
    assert!(!first.header.last, "an answer asked for");
    let stored = event(9, &["a"]);
    server.reply(first.conversation(), &RegisterRes::Events(&[stored.as_ref()][..])).await;
    let second = server.recv().await;
    server.reply(second.conversation(), &RegisterRes::<&[EventRef<'_>]>::Failure).await;
    let (_client, ok, failed) = answered.await.unwrap();
    assert_eq!(ok, Ok(vec![stored]));
    assert_eq!(failed, Err(HatError::Failure));
}

#[tokio::test]
async fn query_all_follows_the_pages() {
    let (mut server, connecting) = pair(HatOptions::new("reader"));
    server.accept(InitRes::Success(Status::Operational)).await;
    let (client, _events) = connecting.await.unwrap().unwrap();
    let query = Query::Timeseries(TimeseriesQuery {
        event_types: Some(vec![EventPath::new(["x", "?"])]),
        order: Order::Ascending,
        max_results: Some(2),
        ..TimeseriesQuery::default()
    });
    let all = tokio::spawn({
        let query = query.clone();
        async move { client.query_all(query).await }
    });
    let pages = [vec![event(1, &["x", "1"]), event(2, &["x", "2"])], vec![event(3, &["x", "3"])]];
    let mut expected_query = query.clone();
    for (i, page) in pages.iter().enumerate() {
        let frame = server.recv().await;
        let Message::QueryReq(params) = frame.message() else { panic!("{}", frame.msg_type) };
        assert_eq!(convert::query(&params), expected_query, "page {i}");
        let refs: Vec<EventRef<'_>> = page.iter().map(Event::as_ref).collect();
        let more_follows = i + 1 < pages.len();
        server.reply(frame.conversation(), &QueryRes { events: &refs[..], more_follows }).await;
        expected_query = query.after(page.last().unwrap().id).unwrap();
    }
    assert_eq!(all.await.unwrap(), Ok(pages.concat()));
}

#[tokio::test]
async fn notifications_are_acked_once_handed_over_and_held_back_when_nobody_reads() {
    let mut options = HatOptions::new("slow");
    options.subscriptions = vec![EventPath::new(["*"])];
    let (mut server, connecting) = pair(options);
    server.accept(InitRes::Success(Status::Operational)).await;
    let (client, mut events) = connecting.await.unwrap().unwrap();

    // Nobody reads: acks come for as many notifications as the events queue holds.
    let sent = super::EVENT_BATCHES + connection::QUEUED_BATCHES + 2;
    let mut conversations = Vec::new();
    for i in 0..sent {
        let e = event(i as u64 + 1, &["n"]);
        conversations.push(server.open(&EventsNotify { events: &[e.as_ref()][..] }, false).await);
    }
    let mut acked = Vec::new();
    while acked.len() < super::EVENT_BATCHES {
        let frame = server.recv().await;
        assert_eq!(frame.msg_type, MsgType::EventsAck.name());
        assert!(frame.header.last);
        acked.push(frame.conversation());
    }
    assert_eq!(acked, conversations[..super::EVENT_BATCHES]);
    let more = tokio::time::timeout(Duration::from_millis(300), server.recv()).await;
    assert!(more.is_err(), "no ack for notifications the program has not room for");

    // Reading lets the rest through, in order, each acked.
    for i in 0..sent {
        assert_eq!(events.next().await, Some(event(i as u64 + 1, &["n"])));
    }
    while acked.len() < sent {
        acked.push(server.recv().await.conversation());
    }
    assert_eq!(acked, conversations);

    // A notification without an ack asked for gets none.
    let e = event(99, &["n"]);
    server.open(&EventsNotify { events: &[e.as_ref()][..] }, true).await;
    assert_eq!(events.next().await, Some(e));
    server.open(&StatusNotify(Status::Stopping), true).await;
    client.status_changes().wait_for(|s| *s == Status::Stopping).await.unwrap();
    let quiet = tokio::time::timeout(Duration::from_millis(300), server.recv()).await;
    assert!(quiet.is_err(), "nothing answers a notification without ack");
}

#[tokio::test(start_paused = true)]
async fn pings_are_answered_and_a_silent_server_is_left() {
    let mut options = HatOptions::new("alive");
    options.ping_delay = Duration::from_secs(5);
    options.ping_timeout = Duration::from_secs(3);
    let (mut server, connecting) = pair(options);
    server.accept(InitRes::Success(Status::Operational)).await;
    let (client, mut events) = connecting.await.unwrap().unwrap();

    // The server pings: the client pongs in the ping's conversation.
    let ping = server.open(&Keepalive { pong: false }, false).await;
    let pong = server.read().await.expect("a pong");
    assert_eq!((pong.msg_type.as_str(), pong.header.last), (MsgType::Pong.name(), true));
    assert_eq!(Conversation { owner: !pong.header.owner, first_id: pong.header.first }, ping);

    // Silence: the client pings after ping_delay, and leaves ping_timeout later.
    let started = tokio::time::Instant::now();
    let ping = server.read().await.expect("a ping");
    assert_eq!(ping.msg_type, MsgType::Ping.name());
    assert!(started.elapsed() >= Duration::from_secs(4), "pinged after {:?}", started.elapsed());
    assert_eq!(events.next().await, None, "the events end when the connection does");
    assert!(started.elapsed() >= Duration::from_secs(7), "left after {:?}", started.elapsed());
    assert!(server.read().await.is_none(), "the client closed its side");
    assert_eq!(client.query(Query::Latest { event_types: None }).await, Err(HatError::Closed));
    assert!(client.is_closed());
}

#[tokio::test]
async fn a_server_breaking_the_protocol_ends_the_connection_and_fails_calls() {
    let (mut server, connecting) = pair(HatOptions::new("victim"));
    server.accept(InitRes::Success(Status::Operational)).await;
    let (client, mut events) = connecting.await.unwrap().unwrap();
    let asking = tokio::spawn(async move { client.query(Query::Latest { event_types: None }).await });
    let query = server.recv().await;
    // An init request is no server's message.
    let bogus = InitReq {
        client_name: "x",
        client_token: None,
        subscriptions: Vec::<EventTypeRef<'_>>::new(),
        server_id: None,
        persisted: false,
    };
    server.reply(query.conversation(), &bogus).await;
    assert_eq!(asking.await.unwrap(), Err(HatError::Closed));
    assert_eq!(events.next().await, None);
}

#[tokio::test]
async fn what_hat_cannot_carry_fails_that_call_only() {
    let (mut server, connecting) = pair(HatOptions::new("careful"));
    server.accept(InitRes::Success(Status::Operational)).await;
    let (client, _events) = connecting.await.unwrap().unwrap();
    let mut bad = rivulet_core::owned::RegisterEvent::new(EventPath::new(["t"]), None);
    bad.source_timestamp = Some(Timestamp { s: 0, us: 1_000_000 });
    assert_eq!(client.register(vec![bad]).await, Err(HatError::Invalid(rivulet_core::hat::Error::Range)));
    let asking = tokio::spawn(async move { client.query(Query::Latest { event_types: None }).await });
    let frame = server.recv().await;
    let Message::QueryReq(QueryParams::Latest(_)) = frame.message() else { panic!("{}", frame.msg_type) };
    server.reply(frame.conversation(), &QueryRes::<&[EventRef<'_>]> { events: &[], more_follows: false }).await;
    assert_eq!(asking.await.unwrap(), Ok(QueryPage::default()));
}
