//! The core driver end to end: a client and a server machine, each under its own `Driver`,
//! over in-memory tokio pipes. Time is tokio's, paused, so timeouts pass at once when idle.

use std::cell::RefCell;
use std::collections::VecDeque;

use embedded_io_adapters::tokio_1::FromTokio;
use embedded_io_async::{Read, Write};
use rivulet_core::driver::{Clock, Driver, DriverError};
use rivulet_core::model::{
    EventId, EventPayloadRef, EventRef, EventType, ListBuilder, QueryLatest, QueryParams, QueryResult,
};
use rivulet_core::session::{
    Client, ClientConfig, ClientEvent, Error, LinkEnd, Reply, ServerConfig, ServerConnection, ServerEvent,
};
use rivulet_core::wire::{FrameDecoder, FrameWriter, Framing, SerialDecoder, StreamDecoder};
use rivulet_host_tests::{Corrupting, Gateway, Stored, TokioClock};

type TestClient = Client<'static, [u8; 16384], 4, 8, 128>;

/// Events per query answer: a server pages so that an answer fits the client's `max_packet`.
const QUERY_PAGE: usize = 20;

/// How one served link ended.
#[derive(Debug, PartialEq, Eq)]
enum Served {
    Ended(LinkEnd),
    /// The test pulled the plug after storing this many events.
    Crashed,
}

/// A driver with stream framing over one end of a tokio pipe.
fn stream_driver<'b>(
    io: tokio::io::DuplexStream,
    rx: &'b mut [u8],
    tx: &'b mut [u8],
) -> Driver<'b, FromTokio<tokio::io::DuplexStream>, StreamDecoder<'b>> {
    Driver::new(FromTokio::new(io), StreamDecoder::new(rx), FrameWriter::new(tx, Framing::Stream))
}

fn event_type(path: &str) -> EventType {
    EventType::parse_path(path).expect("valid type")
}

/// One link of a gateway: accept (with session resume), store registrations, notify each stored
/// event back, answer a latest query with everything stored. `crash_after` pulls the plug.
async fn serve_link<T: Read + Write, D: FrameDecoder>(
    driver: &mut Driver<'_, T, D>,
    gateway: &RefCell<Gateway>,
    crash_after: Option<usize>,
) -> Result<Served, DriverError<T::Error>> {
    enum Action {
        Accept(rivulet_core::session::Incoming, rivulet_core::session::Accepted),
        Store(u32, String, Option<String>),
        Query(rivulet_core::session::Incoming),
        Nothing,
    }
    let clock = TokioClock::new();
    let mut conn = ServerConnection::<8, 64>::new(clock.now(), ServerConfig::default());
    let mut session = 0;
    let mut outgoing: VecDeque<Stored> = VecDeque::new();
    let mut stored_here = 0;
    loop {
        while let Some(next) = outgoing.front() {
            let ty = event_type(&next.event_type);
            let event = EventRef {
                id: next.id,
                event_type: ty.as_ref(),
                timestamp: gateway.borrow().timestamp(),
                source_timestamp: None,
                payload: next.payload.as_deref().map(EventPayloadRef::Json),
            };
            match conn.notify(&event, driver.tx()) {
                Ok(()) => {
                    outgoing.pop_front();
                }
                // Window full, or the link closing: the rest waits for the next link.
                Err(Error::NoCredit | Error::Closed) => break,
                Err(e) if e.is_buffer_full() => driver.flush().await?,
                Err(e) => panic!("notify failed: {e}"),
            }
        }
        let action = match driver.step(&mut conn, &clock).await? {
            Some(ServerEvent::Init { from, request }) => Action::Accept(from, gateway.borrow_mut().accept(&request)),
            Some(ServerEvent::Register { seq, event }) => {
                let payload = match event.payload {
                    Some(EventPayloadRef::Json(text)) => Some(text.to_string()),
                    _ => None,
                };
                Action::Store(seq, event.event_type.to_string(), payload)
            }
            Some(ServerEvent::Query { from, .. }) => Action::Query(from),
            Some(ServerEvent::LinkEnded(end)) => return Ok(Served::Ended(end)),
            _ => Action::Nothing,
        };
        match action {
            Action::Accept(from, accepted) => {
                session = accepted.session;
                conn.accept(from, &accepted, driver.tx()).expect("accept fits");
            }
            Action::Store(seq, ty, payload) => {
                let id = gateway.borrow_mut().store(session, seq, ty.clone(), payload.clone());
                outgoing.push_back(Stored { session, seq, id, event_type: ty, payload });
                stored_here += 1;
                if Some(stored_here) == crash_after {
                    return Ok(Served::Crashed);
                }
            }
            Action::Query(from) => {
                let (page, more_follows, timestamp) = {
                    let gw = gateway.borrow();
                    let page: Vec<Stored> = gw.stored.iter().take(QUERY_PAGE).cloned().collect();
                    (page, gw.stored.len() > QUERY_PAGE, gw.timestamp())
                };
                let types: Vec<EventType> = page.iter().map(|s| event_type(&s.event_type)).collect();
                let mut buf = vec![0u8; 64 * 1024];
                let mut list = ListBuilder::new(&mut buf);
                for (stored, ty) in page.iter().zip(&types) {
                    let event = EventRef {
                        id: stored.id,
                        event_type: ty.as_ref(),
                        timestamp,
                        source_timestamp: None,
                        payload: stored.payload.as_deref().map(EventPayloadRef::Json),
                    };
                    list.push(&event).expect("room for the page");
                }
                let result = QueryResult { events: list.finish(), more_follows };
                let mut tx_result = conn.respond(from, &result, driver.tx());
                if tx_result.as_ref().is_err_and(Error::is_buffer_full) {
                    driver.flush().await?;
                    tx_result = conn.respond(from, &result, driver.tx());
                }
                tx_result.expect("query answer fits an empty transmit buffer");
            }
            Action::Nothing => {}
        }
    }
}

/// What the client side saw.
#[derive(Debug, Default)]
struct Seen {
    notified: Vec<EventId>,
    connects: Vec<bool>,
    /// `registered_below` of each `Connected`.
    settled: Vec<u32>,
    query_events: Option<(usize, bool)>,
}

enum ClientStop {
    /// Outbox empty and every expected notification seen.
    Done,
    Ended(LinkEnd),
}

/// Runs the client on one link until its work is done or the link ends.
async fn run_client_link<T: Read + Write, D: FrameDecoder>(
    driver: &mut Driver<'_, T, D>,
    client: &mut TestClient,
    expected: usize,
    seen: &mut Seen,
) -> Result<ClientStop, DriverError<T::Error>> {
    let clock = TokioClock::new();
    loop {
        match driver.step(client, &clock).await? {
            Some(ClientEvent::Connected { resumed, registered_below, .. }) => {
                seen.connects.push(resumed);
                seen.settled.push(registered_below);
            }
            Some(ClientEvent::Event(event)) => seen.notified.push(event.id),
            Some(ClientEvent::LinkEnded(end)) => return Ok(ClientStop::Ended(end)),
            Some(ClientEvent::Response { reply: Reply::Query(result), .. }) => {
                seen.query_events = Some((result.events.len(), result.more_follows));
            }
            _ => {}
        }
        if client.is_connected() && client.outbox_len() == 0 && seen.notified.len() >= expected {
            return Ok(ClientStop::Done);
        }
    }
}

fn register_numbered(client: &mut TestClient, from: usize, to: usize) {
    let types = [event_type("sensor/a"), event_type("sensor/b"), event_type("status/x")];
    for n in from..to {
        let text = format!("{{\"n\":{n}}}");
        let ty = &types[n % types.len()];
        client.register(ty.as_ref(), None, Some(EventPayloadRef::Json(&text))).expect("outbox has room");
    }
}

fn assert_stored_once_in_order(gateway: &Gateway, count: usize) {
    assert_eq!(gateway.stored.len(), count, "every registration stored, none twice");
    for (n, stored) in gateway.stored.iter().enumerate() {
        assert_eq!(stored.seq as usize, n);
        assert_eq!(stored.payload.as_deref(), Some(format!("{{\"n\":{n}}}").as_str()));
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn registrations_notifications_query_and_close() {
    let (a, b) = tokio::io::duplex(4096);
    let (mut rx_c, mut tx_c, mut rx_s, mut tx_s) = ([0u8; 4096], [0u8; 4096], [0u8; 4096], [0u8; 4096]);
    let mut client_driver = stream_driver(a, &mut rx_c, &mut tx_c);
    let mut server_driver = stream_driver(b, &mut rx_s, &mut tx_s);
    let gateway = RefCell::new(Gateway::default());
    let mut client = TestClient::new(ClientConfig::new("device-1"), [0; 16384]);
    register_numbered(&mut client, 0, 300);
    client.link_up(TokioClock::new().now());

    let server = serve_link(&mut server_driver, &gateway, None);
    let client_side = async {
        let mut seen = Seen::default();
        let stop = run_client_link(&mut client_driver, &mut client, 300, &mut seen).await.expect("link holds");
        assert!(matches!(stop, ClientStop::Done));
        let params = QueryParams::Latest(QueryLatest { event_types: None });
        client.query(TokioClock::new().now(), &params, client_driver.tx()).expect("connected");
        while seen.query_events.is_none() {
            run_client_link(&mut client_driver, &mut client, 300, &mut seen).await.expect("link holds");
        }
        client.close();
        let end = run_client_link(&mut client_driver, &mut client, usize::MAX, &mut seen).await.expect("clean close");
        (seen, matches!(end, ClientStop::Ended(LinkEnd::Closed)))
    };
    let (served, (seen, closed)) = tokio::join!(server, client_side);

    assert_eq!(served.expect("server link holds"), Served::Ended(LinkEnd::Closed));
    assert!(closed, "the client saw a clean close");
    assert_eq!(seen.connects, [false], "one fresh session");
    assert_stored_once_in_order(&gateway.borrow(), 300);
    let stored_ids: Vec<EventId> = gateway.borrow().stored.iter().map(|s| s.id).collect();
    assert_eq!(seen.notified, stored_ids, "every stored event notified once, in order");
    assert_eq!(seen.query_events, Some((QUERY_PAGE, true)), "one full page, more to follow");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_broken_link_loses_and_duplicates_nothing() {
    let gateway = RefCell::new(Gateway::default());
    let mut client = TestClient::new(ClientConfig::new("device-2"), [0; 16384]);
    register_numbered(&mut client, 0, 400);
    let mut seen = Seen::default();
    // The server dies after storing this many on each link; the last link runs to the end.
    let crashes = [37, 123, 1, 90];
    for link in 0..=crashes.len() {
        let (a, b) = tokio::io::duplex(2048);
        let (mut rx_c, mut tx_c, mut rx_s, mut tx_s) = ([0u8; 4096], [0u8; 4096], [0u8; 4096], [0u8; 4096]);
        let mut client_driver = stream_driver(a, &mut rx_c, &mut tx_c);
        let server_driver = stream_driver(b, &mut rx_s, &mut tx_s);
        if link == 2 {
            register_numbered(&mut client, 400, 450); // more while a link is up, too
        }
        client.link_up(TokioClock::new().now());
        let stored_before = gateway.borrow().stored.len() as u32;
        let server = async {
            let mut server_driver = server_driver;
            let served = serve_link(&mut server_driver, &gateway, crashes.get(link).copied()).await;
            drop(server_driver); // a crash: the stream just ends
            served
        };
        let client_side = run_client_link(&mut client_driver, &mut client, 0, &mut seen);
        let (served, client_result) = tokio::join!(server, client_side);
        assert_eq!(seen.settled.last(), Some(&stored_before), "the init settles what the gateway stored");
        if link < crashes.len() {
            assert_eq!(served.expect("served until the crash"), Served::Crashed);
            assert!(matches!(client_result, Err(DriverError::Closed)), "the client sees the stream end");
            client.link_down();
        } else {
            assert!(matches!(client_result, Ok(ClientStop::Done)));
        }
    }
    let expected = if seen.connects.len() > 2 { 450 } else { 400 };
    assert_stored_once_in_order(&gateway.borrow(), expected);
    assert_eq!(seen.connects.first(), Some(&false));
    assert!(seen.connects[1..].iter().all(|&resumed| resumed), "every later link resumed the session");
    assert_eq!(client.outbox_len(), 0);
}

/// Runs 120 registrations over a serial line damaged by `line`; every one must be stored once.
async fn serial_line_delivers_exactly_once(
    line: impl FnOnce(tokio::io::DuplexStream) -> Corrupting<tokio::io::DuplexStream>,
) {
    let (a, b) = tokio::io::duplex(1024);
    let (mut rx_c, mut tx_c, mut rx_s, mut tx_s) = ([0u8; 2048], [0u8; 2048], [0u8; 2048], [0u8; 2048]);
    let corrupting = line(a);
    let mut client_driver = Driver::new(
        FromTokio::new(corrupting),
        SerialDecoder::new(&mut rx_c),
        FrameWriter::new(&mut tx_c, Framing::Serial),
    );
    let mut server_driver =
        Driver::new(FromTokio::new(b), SerialDecoder::new(&mut rx_s), FrameWriter::new(&mut tx_s, Framing::Serial));
    let gateway = RefCell::new(Gateway::default());
    let mut client = TestClient::new(ClientConfig::new("uart-device"), [0; 16384]);
    register_numbered(&mut client, 0, 120);

    let server = async {
        // One serial line, many links: a bad frame or a close starts the next link.
        loop {
            match serve_link(&mut server_driver, &gateway, None).await {
                Ok(_) | Err(DriverError::Frame(_)) => server_driver.reset_link(),
                Err(DriverError::Closed) => return server_driver.stats(),
                Err(e) => panic!("server: {e}"),
            }
        }
    };
    let client_side = async {
        let mut seen = Seen::default();
        let mut links = 0;
        loop {
            links += 1;
            assert!(links < 50, "the line recovers");
            client.link_up(TokioClock::new().now());
            match run_client_link(&mut client_driver, &mut client, 0, &mut seen).await {
                Ok(ClientStop::Done) => break,
                Ok(ClientStop::Ended(_)) | Err(DriverError::Frame(_)) => {
                    client.link_down();
                    client_driver.reset_link();
                }
                Err(e) => panic!("client: {e}"),
            }
        }
        drop(client_driver); // hang up the line
        links
    };
    let (server_stats, links) = tokio::join!(server, client_side);
    assert!(server_stats.bad_frames >= 1, "the damage was detected");
    assert!(links > 1, "and cost a new link");
    assert_stored_once_in_order(&gateway.borrow(), 120);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_corrupted_serial_frame_costs_a_reinit_not_an_event() {
    serial_line_delivers_exactly_once(|line| Corrupting::new(line, vec![2, 5, 9])).await;
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn serial_frames_lost_whole_are_noticed_and_cost_nothing() {
    serial_line_delivers_exactly_once(|line| Corrupting::losing(line, vec![3, 6, 12])).await;
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_small_transmit_buffer_sends_everything_without_waiting_for_input() {
    let (a, b) = tokio::io::duplex(4096);
    // 96 bytes hold one declaration at a time.
    let (mut rx_c, mut tx_c, mut rx_s, mut tx_s) = ([0u8; 4096], [0u8; 96], [0u8; 4096], [0u8; 4096]);
    let mut client_driver = stream_driver(a, &mut rx_c, &mut tx_c);
    let mut server_driver = stream_driver(b, &mut rx_s, &mut tx_s);
    let gateway = RefCell::new(Gateway::default());
    let mut client = TestClient::new(ClientConfig::new("small-tx"), [0; 16384]);
    // Eight long types: their declarations alone overflow the transmit buffer, and a declaration
    // draws no answer that could wake the client.
    let types: Vec<EventType> =
        (0..8).map(|i| event_type(&format!("plant/building-{i}/floor-level-sensor-array/temperature"))).collect();
    for (n, ty) in types.iter().enumerate() {
        let text = format!("{{\"n\":{n}}}");
        client.register(ty.as_ref(), None, Some(EventPayloadRef::Json(&text))).expect("outbox has room");
    }
    client.link_up(TokioClock::new().now());
    let server = serve_link(&mut server_driver, &gateway, None);
    let client_side = async {
        let mut seen = Seen::default();
        run_client_link(&mut client_driver, &mut client, 8, &mut seen).await
    };
    // Virtual time: the deadline comes before the first keepalive (20 s), so only a driver that
    // writes everything it owes by itself finishes in time.
    let finished = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        tokio::select! {
            done = client_side => done,
            served = server => panic!("the server link ended first: {served:?}"),
        }
    })
    .await;
    assert!(matches!(finished, Ok(Ok(ClientStop::Done))), "every registration went out and came back");
    assert_stored_once_in_order(&gateway.borrow(), 8);
}
