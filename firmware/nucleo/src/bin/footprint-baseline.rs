//! Footprint baseline (docs/FOOTPRINT.md): the firmware's board bring-up, network stack (DHCP)
//! and one TCP connection to the gateway with the same 1 KiB socket buffers, sending a few bytes
//! every second, without Rivulet. `footprint-rivulet` minus this is what Rivulet costs.
#![no_std]
#![no_main]

use defmt::{info, warn};
use embassy_executor::Spawner;
use embassy_futures::select::{Either, select};
use embassy_net::Ipv4Address;
use embassy_net::tcp::TcpSocket;
use embassy_time::{Duration, Timer};
use embedded_io_async::Write;
use rivulet_device_app::gateway_endpoint;
use rivulet_nucleo::ethernet_peripherals;
use static_cell::StaticCell;
use {defmt_rtt as _, panic_probe as _};

const GATEWAY: ([u8; 4], u16) = gateway_endpoint!("192.168.1.10:7780");

#[embassy_executor::main]
async fn main(spawner: Spawner) -> ! {
    let p = rivulet_nucleo::init();
    info!("footprint-baseline {}", env!("CARGO_PKG_VERSION"));
    let (net_seed, _) = rivulet_nucleo::seeds(p.RNG);
    let stack = rivulet_nucleo::start_network(spawner, ethernet_peripherals!(p), net_seed).await;

    static BUFFERS: StaticCell<[[u8; 1024]; 2]> = StaticCell::new();
    let [socket_rx, socket_tx] = BUFFERS.init([[0; 1024]; 2]);
    let (ip, port) = GATEWAY;
    let gateway = (Ipv4Address::new(ip[0], ip[1], ip[2], ip[3]), port);
    loop {
        let mut socket = TcpSocket::new(stack, socket_rx, socket_tx);
        socket.set_nagle_enabled(false);
        socket.set_timeout(Some(Duration::from_secs(10)));
        if let Err(error) = socket.connect(gateway).await {
            warn!("connect: {}", error);
            Timer::after_secs(1).await;
            continue;
        }
        info!("connected");
        let mut inbox = [0u8; 64];
        loop {
            if let Err(error) = socket.write_all(b"footprint baseline: a few bytes\n").await {
                warn!("write: {}", error);
                break;
            }
            // Whatever the peer says is read and counted, so the receive path is linked too.
            match select(socket.read(&mut inbox), Timer::after_secs(1)).await {
                Either::First(Ok(0)) | Either::First(Err(_)) => break,
                Either::First(Ok(n)) => info!("read {} bytes", n),
                Either::Second(()) => {}
            }
        }
        socket.abort();
        let _ = socket.flush().await;
        Timer::after_secs(1).await;
    }
}
