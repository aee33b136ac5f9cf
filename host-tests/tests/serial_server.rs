//! `rivulet_tokio::server` serving a serial line carried over TCP (what QEMU's UART does): a
//! device's core client with COBS + CRC framing, over a line that corrupts and loses frames.
//! Each damaged frame costs a link, never the line, and every registration is stored once.

use std::sync::Arc;

use embedded_io_adapters::tokio_1::FromTokio;
use rivulet_core::driver::{Clock, Driver, DriverError};
use rivulet_core::model::{EventPayloadRef, EventType};
use rivulet_core::session::{Client, ClientConfig, ClientEvent};
use rivulet_core::wire::{FrameWriter, Framing, SerialDecoder};
use rivulet_host_tests::memory::{WAIT, stop};
use rivulet_host_tests::{Corrupting, MemoryStore, TokioClock};
use rivulet_tokio::server::{Server, ServerOptions};

type Device = Client<'static, [u8; 16384], 4, 8, 128>;

async fn serial_server(store: &Arc<MemoryStore>) -> Arc<Server> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let options = ServerOptions { server_id: store.server_id(), ..ServerOptions::default() };
    let server = Server::builder(options, store.clone()).serial_listener(listener).unwrap().start().unwrap();
    let server = Arc::new(server);
    store.attach(&server);
    server
}

/// Registers 120 events over a line damaged by `line`, relinking on the same line as a device
/// does, until all are acknowledged; returns how many links it took.
async fn run_device(line: Corrupting<tokio::net::TcpStream>) -> u32 {
    let (mut rx, mut tx) = ([0u8; 2048], [0u8; 2048]);
    let mut driver =
        Driver::new(FromTokio::new(line), SerialDecoder::new(&mut rx), FrameWriter::new(&mut tx, Framing::Serial));
    let mut device = Device::new(ClientConfig::new("uart-device"), [0; 16384]);
    let ty = EventType::<64>::parse_path("sensor/uart").unwrap();
    for n in 0..120 {
        let text = n.to_string();
        device.register(ty.as_ref(), None, Some(EventPayloadRef::Json(&text))).unwrap();
    }
    let clock = TokioClock::new();
    let mut links = 0;
    loop {
        links += 1;
        assert!(links < 50, "the line recovers");
        device.link_up(clock.now());
        let ended = loop {
            let link_over = match driver.step(&mut device, &clock).await {
                Ok(Some(ClientEvent::LinkEnded(_))) | Err(DriverError::Frame(_)) => true,
                Ok(_) => false,
                Err(e) => panic!("device: {e}"),
            };
            if link_over {
                break false;
            }
            if device.is_connected() && device.outbox_len() == 0 {
                break true;
            }
        };
        if ended {
            return links;
        }
        device.link_down();
        driver.reset_link();
    }
}

async fn line_to(
    server: &Server,
    damage: impl FnOnce(tokio::net::TcpStream) -> Corrupting<tokio::net::TcpStream>,
) -> Corrupting<tokio::net::TcpStream> {
    damage(tokio::net::TcpStream::connect(server.local_addr()).await.unwrap())
}

fn stored_numbers(store: &MemoryStore) -> Vec<u64> {
    store
        .events()
        .iter()
        .map(|e| match &e.payload {
            Some(rivulet_tokio::model::Payload::Json(text)) => text.parse().unwrap(),
            other => panic!("{other:?}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_serial_line_costs_links_not_events() {
    let store = Arc::new(MemoryStore::new(3));
    let server = serial_server(&store).await;
    let corrupted = line_to(&server, |tcp| Corrupting::new(tcp, vec![2, 5, 9])).await;
    let links = tokio::time::timeout(WAIT, run_device(corrupted)).await.expect("the device finishes");
    assert!(links > 1, "the damage cost links");
    assert_eq!(stored_numbers(&store), (0..120).collect::<Vec<_>>(), "each registration stored once, in order");
    assert!(server.stats().bad_input >= 1, "the server saw the bad frames");
    assert_eq!(server.stats().accepted, 1, "all over one line");

    let lossy = line_to(&server, |tcp| Corrupting::losing(tcp, vec![3, 6, 12])).await;
    tokio::time::timeout(WAIT, run_device(lossy)).await.expect("the second device finishes");
    assert_eq!(store.events().len(), 240);
    stop(server).await;
}
