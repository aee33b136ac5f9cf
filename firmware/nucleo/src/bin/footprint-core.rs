//! Footprint of the core alone (docs/FOOTPRINT.md): `footprint-rivulet`'s device written on
//! `rivulet-core`'s client machine and driver directly, over the same socket and buffers, with
//! the core's default capacities: it registers an event every second, subscribes, takes notified
//! events and answers requests, and reconnects after a fixed second (no jitter, no resume across
//! tasks, no handle). `footprint-core` minus `footprint-baseline` is the core;
//! `footprint-rivulet` minus `footprint-core` is the embassy adapter.
#![no_std]
#![no_main]

use defmt::{info, warn};
use embassy_executor::Spawner;
use embassy_futures::select::{Either, select};
use embassy_net::Ipv4Address;
use embassy_net::tcp::TcpSocket;
use embassy_time::{Duration, Ticker, Timer};
use rivulet_core::driver::{Clock, Driver};
use rivulet_core::model::{EventPayloadRef, EventType};
use rivulet_core::session::{Client, ClientConfig, ClientEvent, Incoming};
use rivulet_core::wire::{FrameWriter, Framing, StreamDecoder};
use rivulet_device_app::gateway_endpoint;
use rivulet_embassy::EmbassyClock;
use rivulet_nucleo::ethernet_peripherals;
use static_cell::StaticCell;
use {defmt_rtt as _, panic_probe as _};

const GATEWAY: ([u8; 4], u16) = gateway_endpoint!("192.168.1.10:7780");

/// What a driver step asked for, owned, so the machine is free to answer.
enum Input {
    Nothing,
    Tick,
    Request(Incoming),
    Ended,
}

#[embassy_executor::main]
async fn main(spawner: Spawner) -> ! {
    let p = rivulet_nucleo::init();
    info!("footprint-core {}", env!("CARGO_PKG_VERSION"));
    let (net_seed, _) = rivulet_nucleo::seeds(p.RNG);
    let stack = rivulet_nucleo::start_network(spawner, ethernet_peripherals!(p), net_seed).await;

    static BUFFERS: StaticCell<[[u8; 1024]; 4]> = StaticCell::new();
    let [socket_rx, socket_tx, rx, tx] = BUFFERS.init([[0; 1024]; 4]);
    // In a static like the adapter's runner (whose task future holds it): 3 KiB.
    static CLIENT: StaticCell<Client<'static>> = StaticCell::new();
    let client = CLIENT.init_with(|| Client::new(ClientConfig::new("footprint"), [0; 1024]));
    let (Ok(pattern), Ok(tick)) =
        (EventType::<64>::parse_path("command/footprint/*"), EventType::<64>::parse_path("device/footprint/tick"))
    else {
        defmt::panic!("the event types are valid");
    };
    if let Err(error) = client.subscribe(pattern.as_ref()) {
        warn!("subscribe: {}", error);
    }
    let (ip, port) = GATEWAY;
    let gateway = (Ipv4Address::new(ip[0], ip[1], ip[2], ip[3]), port);
    let clock = EmbassyClock;
    let mut ticker = Ticker::every(Duration::from_secs(1));
    loop {
        let mut socket = TcpSocket::new(stack, &mut *socket_rx, &mut *socket_tx);
        socket.set_nagle_enabled(false);
        if let Err(error) = socket.connect(gateway).await {
            warn!("connect: {}", error);
            Timer::after_secs(1).await;
            continue;
        }
        client.link_up(clock.now());
        let mut driver = Driver::new(socket, StreamDecoder::new(&mut *rx), FrameWriter::new(&mut *tx, Framing::Stream));
        loop {
            let woke = match select(driver.step(client, &clock), ticker.next()).await {
                Either::First(Ok(Some(ClientEvent::Request { from, .. }))) => Input::Request(from),
                Either::First(Ok(Some(ClientEvent::Event(event)))) => {
                    info!("event {}", event.id.instance);
                    Input::Nothing
                }
                Either::First(Ok(Some(ClientEvent::LinkEnded(_)))) | Either::First(Err(_)) => Input::Ended,
                Either::First(Ok(_)) => Input::Nothing,
                Either::Second(()) => Input::Tick,
            };
            match woke {
                Input::Nothing => {}
                Input::Tick => {
                    if let Err(error) = client.register(tick.as_ref(), None, Some(EventPayloadRef::Json("1"))) {
                        warn!("register: {}", error);
                    }
                }
                Input::Request(from) => {
                    if let Err(error) = client.respond(from, 0, b"ok", driver.tx()) {
                        warn!("respond: {}", error);
                    }
                }
                Input::Ended => break,
            }
        }
        client.link_down();
        let (mut socket, _, _) = driver.into_parts();
        socket.abort();
        let _ = socket.flush().await;
        Timer::after_secs(1).await;
    }
}
