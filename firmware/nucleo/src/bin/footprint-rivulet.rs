//! Footprint of Rivulet (docs/FOOTPRINT.md): `footprint-baseline`'s board, network stack and
//! socket buffers, plus a Rivulet device with default capacities over `TcpConnector` that uses
//! what a device uses: it registers an event every second, subscribes, takes notified events
//! and answers the gateway's requests. No application logic beyond that (no JSON, no ADC): this
//! minus `footprint-baseline` is the core plus the embassy adapter.
#![no_std]
#![no_main]

use defmt::{info, unwrap, warn};
use embassy_executor::Spawner;
use embassy_futures::select::{Either3, select3};
use embassy_net::Ipv4Address;
use embassy_time::Ticker;
use rivulet_core::model::EventPayloadRef;
use rivulet_device_app::gateway_endpoint;
use rivulet_embassy::{Config, Runner, State, TcpConnector};
use rivulet_nucleo::ethernet_peripherals;
use static_cell::StaticCell;
use {defmt_rtt as _, panic_probe as _};

const GATEWAY: ([u8; 4], u16) = gateway_endpoint!("192.168.1.10:7780");

static STATE: State = State::new();

type DeviceRunner = Runner<'static, TcpConnector<'static>>;

/// The runner by reference from a `StaticCell`, as in the firmware (see src/main.rs).
#[embassy_executor::task]
async fn rivulet(runner: &'static mut DeviceRunner) -> ! {
    runner.run().await
}

#[embassy_executor::main]
async fn main(spawner: Spawner) -> ! {
    let p = rivulet_nucleo::init();
    info!("footprint-rivulet {}", env!("CARGO_PKG_VERSION"));
    let (net_seed, rivulet_seed) = rivulet_nucleo::seeds(p.RNG);
    let stack = rivulet_nucleo::start_network(spawner, ethernet_peripherals!(p), net_seed).await;

    static BUFFERS: StaticCell<[[u8; 1024]; 4]> = StaticCell::new();
    let [socket_rx, socket_tx, rx, tx] = BUFFERS.init([[0; 1024]; 4]);
    let (ip, port) = GATEWAY;
    let tcp = TcpConnector::new(stack, (Ipv4Address::new(ip[0], ip[1], ip[2], ip[3]), port), socket_rx, socket_tx);
    let config = Config { seed: rivulet_seed, ..Config::new("footprint") };
    let (device, runner) = rivulet_embassy::new(&STATE, config, tcp, rx, tx);
    static RUNNER: StaticCell<DeviceRunner> = StaticCell::new();
    spawner.spawn(unwrap!(rivulet(RUNNER.init(runner))));

    if let Err(error) = device.subscribe("command/footprint/*").await {
        warn!("subscribe: {}", error);
    }
    let mut ticker = Ticker::every(embassy_time::Duration::from_secs(1));
    loop {
        match select3(ticker.next(), device.next_event(), device.next_request()).await {
            Either3::First(()) => {
                let registered = device.register("device/footprint/tick", None, Some(EventPayloadRef::Json("1"))).await;
                if let Err(error) = registered {
                    warn!("register: {}", error);
                }
            }
            Either3::Second(event) => info!("event {}", event.id.instance),
            Either3::Third(request) => {
                if let Err(error) = device.respond(request.from, 0, b"ok").await {
                    warn!("respond: {}", error);
                }
            }
        }
    }
}
