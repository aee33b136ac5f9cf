//! The Nucleo-F767ZI bring-up shared by the firmware and the two footprint bins, so that they
//! differ only in what runs over TCP: clocks, the RNG seeds, the RMII Ethernet MAC with its PHY,
//! DHCP and the network task. Pins and clocks follow shared/reference/feasibility.md §2 and
//! embassy's `examples/stm32f7/src/bin/eth.rs` at `embassy-stm32-v0.6.0`.
#![no_std]

pub mod layout;

use defmt::info;
use embassy_executor::Spawner;
use embassy_net::{Stack, StackResources};
use embassy_stm32::eth::{Ethernet, GenericPhy, PacketQueue, Sma};
use embassy_stm32::peripherals::{ETH, ETH_SMA, PA1, PA2, PA7, PB13, PC1, PC4, PC5, PG11, PG13, RNG};
use embassy_stm32::rng::Rng;
use embassy_stm32::time::Hertz;
use embassy_stm32::{Config, Peri, bind_interrupts, eth, peripherals, rng};
use static_cell::StaticCell;

bind_interrupts!(pub struct Irqs {
    ETH => eth::InterruptHandler;
    // The F767's RNG has its own interrupt (the F777's shares HASH_RNG).
    RNG => rng::InterruptHandler<peripherals::RNG>;
});

/// The Ethernet driver: the MAC with the LAN8742A PHY found on the management bus.
pub type EthDevice = Ethernet<'static, ETH, GenericPhy<Sma<'static, ETH_SMA>>>;

/// Sockets the stack holds: DHCP and one TCP socket at a time, one spare.
const SOCKETS: usize = 3;

/// Polls the network stack: the MAC, DHCP and the sockets.
#[embassy_executor::task]
pub async fn net_task(mut runner: embassy_net::Runner<'static, EthDevice>) -> ! {
    runner.run().await
}

/// Starts the chip at 216 MHz from the ST-LINK's 8 MHz clock (HSE bypass); APB1 54 MHz,
/// APB2 108 MHz.
pub fn init() -> embassy_stm32::Peripherals {
    let mut config = Config::default();
    {
        use embassy_stm32::rcc::*;
        config.rcc.hse = Some(Hse { freq: Hertz(8_000_000), mode: HseMode::Bypass });
        config.rcc.pll_src = PllSource::HSE;
        config.rcc.pll = Some(Pll {
            prediv: PllPreDiv::DIV4,
            mul: PllMul::MUL216,
            divp: Some(PllPDiv::DIV2), // 8 MHz / 4 * 216 / 2 = 216 MHz
            divq: None,
            divr: None,
        });
        config.rcc.ahb_pre = AHBPrescaler::DIV1;
        config.rcc.apb1_pre = APBPrescaler::DIV4;
        config.rcc.apb2_pre = APBPrescaler::DIV2;
        config.rcc.sys = Sysclk::PLL1_P;
    }
    embassy_stm32::init(config)
}

/// Two seeds from the true RNG: one for the network stack (TCP sequence numbers, ports), one for
/// Rivulet's reconnect jitter, so boards that lost the same gateway come back spread out.
pub fn seeds(rng: Peri<'static, RNG>) -> (u64, u64) {
    let mut rng = Rng::new(rng, Irqs);
    (rng.next_u64(), rng.next_u64())
}

/// A locally administered MAC address made from the chip's 96-bit unique id, so two boards on
/// one network never share one.
pub fn mac_address() -> [u8; 6] {
    let uid = embassy_stm32::uid::uid();
    let mut mac = [0x02, 0, 0, 0, 0, 0];
    for (i, byte) in uid.iter().enumerate() {
        if let Some(slot) = mac.get_mut(1 + i % 5) {
            *slot ^= byte.rotate_left((i / 5) as u32);
        }
    }
    mac
}

/// The peripherals of the RMII Ethernet on the Nucleo-144 (LAN8742A PHY); build it with
/// [`ethernet_peripherals!`].
pub struct EthernetPeripherals {
    pub eth: Peri<'static, ETH>,
    pub sma: Peri<'static, ETH_SMA>,
    pub ref_clk: Peri<'static, PA1>,
    pub crs_dv: Peri<'static, PA7>,
    pub rxd0: Peri<'static, PC4>,
    pub rxd1: Peri<'static, PC5>,
    pub txd0: Peri<'static, PG13>,
    pub txd1: Peri<'static, PB13>,
    pub tx_en: Peri<'static, PG11>,
    pub mdio: Peri<'static, PA2>,
    pub mdc: Peri<'static, PC1>,
}

/// Moves the Ethernet pins out of `embassy_stm32::init`'s peripherals.
#[macro_export]
macro_rules! ethernet_peripherals {
    ($p:ident) => {
        $crate::EthernetPeripherals {
            eth: $p.ETH,
            sma: $p.ETH_SMA,
            ref_clk: $p.PA1,
            crs_dv: $p.PA7,
            rxd0: $p.PC4,
            rxd1: $p.PC5,
            txd0: $p.PG13,
            txd1: $p.PB13,
            tx_en: $p.PG11,
            mdio: $p.PA2,
            mdc: $p.PC1,
        }
    };
}

/// Brings up Ethernet with DHCP, spawns the network task and waits for an address.
pub async fn start_network(spawner: Spawner, pins: EthernetPeripherals, seed: u64) -> Stack<'static> {
    static PACKETS: StaticCell<PacketQueue<4, 4>> = StaticCell::new();
    static RESOURCES: StaticCell<StackResources<SOCKETS>> = StaticCell::new();
    let mac = mac_address();
    info!("Ethernet MAC {:02x}", mac);
    let device = Ethernet::new(
        PACKETS.init(PacketQueue::new()),
        pins.eth,
        Irqs,
        pins.ref_clk,
        pins.crs_dv,
        pins.rxd0,
        pins.rxd1,
        pins.txd0,
        pins.txd1,
        pins.tx_en,
        mac,
        pins.sma,
        pins.mdio,
        pins.mdc,
    );
    let config = embassy_net::Config::dhcpv4(Default::default());
    let (stack, runner) = embassy_net::new(device, config, RESOURCES.init(StackResources::new()), seed);
    spawner.spawn(defmt::unwrap!(net_task(runner)));
    info!("waiting for DHCP");
    stack.wait_config_up().await;
    if let Some(config) = stack.config_v4() {
        info!("network up: {}", config.address);
    }
    stack
}
