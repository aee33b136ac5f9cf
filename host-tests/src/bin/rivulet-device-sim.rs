//! `rivulet-device-sim`: the device application of the boards (`rivulet-device-app`) on the host,
//! as N simulated devices on embassy-net, each behind a Linux TAP, against a real gateway.
//!
//! Each device is what a board is: its own Ethernet MAC and IPv4 address, its own embassy-net
//! stack over its own TAP (`rvtap<n>`, embassy-net-tuntap), its own `rivulet_embassy` runner and
//! device handle dialing the gateway with a `TcpConnector`, and its own instance of the
//! application with a host [`Board`]. One stack per device rather than one stack shared by all,
//! so that nothing is shared that boards do not share (ARP, the socket set, the packet queues)
//! and the code that brings a device up is the firmware's, run N times. All of them run as tasks
//! of one embassy executor thread (embassy-executor `platform-std`, embassy-time `std`).
//!
//! Addressing, fixed: device `n` is `10.77.<n>.2/24` on `rvtap<n>`, whose kernel side must be
//! `10.77.<n>.1/24`, the device's router. The gateway is dialed at `--gateway` (default
//! `10.77.0.1:7780`, the kernel side of `rvtap0`): device 0 reaches it on its own link, the
//! others through their router, the kernel, as boards on other subnets would.
//!
//! With `--gateway-host NAME` the devices find the gateway by name instead, through the DNS
//! server `--dns` names, asked again on every connect (`TcpConnector::to_host`, rivulet-embassy's
//! `dns` feature), so a gateway that moved to another address is found again.
//!
//! The TAPs must exist, made by root, before this starts; run it all inside a network namespace
//! of its own (`unshare --net`): `firmware/README.md` has the commands,
//! `host-tests/tests/tap_devices.rs` does it in a test.
//!
//! stdout: one line per device at start and after every change of its link status,
//! `NAME connected=.. links=.. resumed=.. session=.. registered_below=.. outbox=..
//! registrations_refused=.. connect_failures=..`. `registered_below` is what the device saw
//! acknowledged: every registration numbered below it is stored, or refused and counted in
//! `registrations_refused` (the first is number 0, the LED's state). stderr: the log (`RUST_LOG`,
//! default `info`), each line naming its device.

use std::cell::Cell;
use std::future::{Future, poll_fn};
use std::hash::{BuildHasher, Hasher, RandomState};
use std::io::Write as _;
use std::pin::pin;
use std::process::exit;
use std::sync::OnceLock;
use std::time::Instant;

use embassy_executor::{Executor, Spawner};
use embassy_futures::select::{Either, select};
use embassy_net::{Ipv4Address, Ipv4Cidr, StackResources, StaticConfigV4};
use embassy_net_tuntap::TunTapDevice;
use rivulet_device_app::Board;
use rivulet_device_app::config::{is_valid_name, parse_ipv4_endpoint};
use rivulet_embassy::{Config, Device, LinkStatus, Runner, State, TcpConnector};

/// Devices one process can run: the task pools are sized for it, and the timer queue
/// (embassy-time `generic-queue-64`) holds an entry per task waiting on a timer, three per device.
const MAX_DEVICES: usize = 16;
/// The first two octets of every address: device `n` is 10.77.n.2, its router 10.77.n.1.
const SUBNET: [u8; 2] = [10, 77];
/// Socket and link buffers, as on the Nucleo board.
const BUFFER: usize = 1024;

const HELP: &str = "\
rivulet-device-sim: N simulated Rivulet devices on embassy-net, one TAP each

Usage: rivulet-device-sim [--devices N] [--gateway A.B.C.D:PORT] [--gateway-host NAME --dns A.B.C.D]
                          [--tap-prefix P] [--name-prefix P]

  --devices N         devices to run, 1 to 16 [default: 10]
  --gateway ADDR      the gateway every device dials [default: 10.77.0.1:7780]
  --gateway-host NAME dial the gateway by this name instead (the port of --gateway), looked up
                      with --dns on every connect [default: off]
  --dns A.B.C.D       the DNS server the devices ask (needed by --gateway-host)
  --tap-prefix P      device n uses the TAP P<n>, which must exist [default: rvtap]
  --name-prefix P     device n is named P<n> [default: sim-]

Device n is 10.77.<n>.2/24 on its TAP, whose kernel side must be 10.77.<n>.1/24. Run as root in
a network namespace of its own; firmware/README.md has the commands.";

/// What the command line chose.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Options {
    devices: usize,
    gateway: ([u8; 4], u16),
    gateway_host: Option<String>,
    dns: Option<[u8; 4]>,
    tap_prefix: String,
    name_prefix: String,
}

impl Options {
    /// Parses the arguments; `Ok(None)` for `--help`.
    fn parse(mut args: impl Iterator<Item = String>) -> Result<Option<Options>, String> {
        let mut options = Options {
            devices: 10,
            gateway: ([10, 77, 0, 1], 7780),
            gateway_host: None,
            dns: None,
            tap_prefix: "rvtap".into(),
            name_prefix: "sim-".into(),
        };
        while let Some(flag) = args.next() {
            if flag == "-h" || flag == "--help" {
                return Ok(None);
            }
            let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
            match flag.as_str() {
                "--devices" => {
                    options.devices = value
                        .parse()
                        .ok()
                        .filter(|n| (1..=MAX_DEVICES).contains(n))
                        .ok_or_else(|| format!("--devices {value}: 1 to {MAX_DEVICES}"))?;
                }
                "--gateway" => {
                    options.gateway = parse_ipv4_endpoint(&value)
                        .ok_or_else(|| format!("--gateway {value}: an IPv4 address and a port, like 10.77.0.1:7780"))?;
                }
                "--gateway-host" => {
                    // What a DNS query can carry: labels of 1 to 63 letters, digits and hyphens.
                    let valid = value.len() <= 253
                        && value.split('.').all(|label| {
                            (1..=63).contains(&label.len())
                                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                        });
                    if !valid {
                        return Err(format!("--gateway-host {value}: a host name, like gateway.example"));
                    }
                    options.gateway_host = Some(value);
                }
                "--dns" => {
                    let address: std::net::Ipv4Addr =
                        value.parse().map_err(|_| format!("--dns {value}: an IPv4 address, like 10.77.0.1"))?;
                    options.dns = Some(address.octets());
                }
                "--tap-prefix" => options.tap_prefix = value,
                "--name-prefix" => options.name_prefix = value,
                _ => return Err(format!("unknown argument {flag}")),
            }
        }
        if options.gateway_host.is_some() && options.dns.is_none() {
            return Err("--gateway-host needs --dns, the server to look it up with".into());
        }
        for n in 0..options.devices {
            let (tap, name) = (options.tap(n), options.name(n));
            // IFNAMSIZ is 16 with the NUL.
            if tap.is_empty() || tap.len() > 15 {
                return Err(format!("TAP name {tap:?}: 1 to 15 bytes"));
            }
            if !is_valid_name(&name) {
                return Err(format!("device name {name:?}: 1 to 32 of A-Z a-z 0-9 - _ ."));
            }
        }
        Ok(Some(options))
    }

    fn tap(&self, n: usize) -> String {
        format!("{}{n}", self.tap_prefix)
    }

    fn name(&self, n: usize) -> String {
        format!("{}{n}", self.name_prefix)
    }
}

/// Device `n`'s address (`host` 2) or its router's (`host` 1) on its TAP's /24.
fn address(n: usize, host: u8) -> Ipv4Address {
    let n = u8::try_from(n).expect("MAX_DEVICES fits an octet");
    Ipv4Address::new(SUBNET[0], SUBNET[1], n, host)
}

/// A locally administered unicast MAC per device: 02:52:56 ("RV"), then the device's number.
fn mac(n: usize) -> [u8; 6] {
    let n = u8::try_from(n).expect("MAX_DEVICES fits an octet");
    [0x02, 0x52, 0x56, 0x00, 0x00, n]
}

/// A seed from the process's random keys, as a board draws one from its RNG, so that devices and
/// runs do not retry or pick ports in step.
fn seed(n: usize) -> u64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_usize(n);
    hasher.finish()
}

/// The host as a board: no LED to light and no sensor, so both are simulated.
struct SimBoard {
    index: usize,
}

impl Board for SimBoard {
    const NAME: &'static str = "embassy-net-tap";
    const FIRMWARE_VERSION: &'static str = env!("CARGO_PKG_VERSION");

    /// 21.00 °C plus 0.25 °C per device number, with a triangle wave of ±0.50 °C a minute.
    fn die_temperature(&mut self) -> Option<i32> {
        let phase = i32::try_from(self.uptime().as_millis() % 60_000).unwrap_or(0);
        let wave = (phase - 30_000).abs() / 300 - 50;
        let index = i32::try_from(self.index).unwrap_or(0);
        Some(2100 + 25 * index + wave)
    }

    fn set_led(&mut self, on: bool) {
        log::debug!("LED {}", if on { "on" } else { "off" });
    }
}

type Link = Runner<'static, TcpConnector<'static>>;

/// One device, built and waiting for its tasks.
struct Sim {
    name: &'static str,
    network: embassy_net::Runner<'static, TunTapDevice>,
    link: &'static mut Link,
    device: &'static Device<'static>,
    board: SimBoard,
}

/// Whether this network namespace has the interface `name`. `/proc/net` follows the namespace of
/// the process reading it; `/sys/class/net` follows the one `/sys` was mounted in, which
/// `unshare --net` does not change.
fn interface_exists(name: &str) -> bool {
    let devices = std::fs::read_to_string("/proc/net/dev").unwrap_or_default();
    devices.lines().filter_map(|line| line.split_once(':')).any(|(interface, _)| interface.trim() == name)
}

/// Memory for the life of the process: what firmware keeps in `static`s.
fn leak<T>(value: T) -> &'static mut T {
    Box::leak(Box::new(value))
}

fn buffer() -> &'static mut [u8] {
    Box::leak(vec![0u8; BUFFER].into_boxed_slice())
}

impl Sim {
    /// Opens device `n`'s TAP and builds its stack, runner and handle, as the Nucleo's `main` does.
    fn open(options: &Options, n: usize) -> Result<Sim, String> {
        let (tap, name) = (options.tap(n), options.name(n));
        // TUNSETIFF would create a missing TAP, without the kernel-side address the device needs.
        if !interface_exists(&tap) {
            return Err(format!(
                "there is no TAP {tap}: make it first (ip tuntap add name {tap} mode tap; ip link set {tap} up; \
                 ip addr add {}/24 dev {tap}), see firmware/README.md",
                address(n, 1)
            ));
        }
        let mut tuntap = TunTapDevice::new(&tap)
            .map_err(|e| format!("cannot open TAP {tap}: {e} (needs root, or CAP_NET_ADMIN, and /dev/net/tun)"))?;
        tuntap.set_hardware_address(mac(n));
        let mut ip_config = StaticConfigV4 {
            address: Ipv4Cidr::new(address(n, 2), 24),
            gateway: Some(address(n, 1)),
            dns_servers: Default::default(),
        };
        if let Some([a, b, c, d]) = options.dns {
            let _ = ip_config.dns_servers.push(Ipv4Address::new(a, b, c, d)); // room for 3; this is the first
        }
        // One TCP socket at a time (the connector drops each link's) and one spare, as on the
        // board, plus the DNS socket embassy-net's `dns` feature keeps.
        let resources = leak(StackResources::<3>::new());
        let (stack, network) =
            embassy_net::new(tuntap, embassy_net::Config::ipv4_static(ip_config), resources, seed(n));

        let name: &'static str = leak(name);
        let (ip, port) = options.gateway;
        let gateway = Ipv4Address::new(ip[0], ip[1], ip[2], ip[3]);
        let (tcp, dialing) = match &options.gateway_host {
            Some(host) => {
                let host: &'static str = leak(host.clone());
                (TcpConnector::to_host(stack, host, port, buffer(), buffer()), format!("{host}:{port} (by name)"))
            }
            None => (TcpConnector::new(stack, (gateway, port), buffer(), buffer()), format!("{gateway}:{port}")),
        };
        let state: &'static State = leak(State::new());
        let config = Config { seed: seed(n), ..Config::new(name) };
        let (device, link) = rivulet_embassy::new(state, config, tcp, buffer(), buffer());
        log::info!(
            "{name}: {tap} MAC {}, {}/24 via {}, gateway {dialing}",
            mac(n).map(|b| format!("{b:02x}")).join(":"),
            address(n, 2),
            address(n, 1)
        );
        Ok(Sim { name, network, link: leak(link), device: leak(device), board: SimBoard { index: n } })
    }

    fn spawn(self, spawner: Spawner) {
        const POOL: &str = "the task pools hold MAX_DEVICES";
        spawner.spawn(network(self.name, self.network).expect(POOL));
        spawner.spawn(link(self.name, self.link).expect(POOL));
        spawner.spawn(application(self.name, self.device, self.board).expect(POOL));
    }
}

#[embassy_executor::task(pool_size = MAX_DEVICES)]
async fn network(name: &'static str, mut runner: embassy_net::Runner<'static, TunTapDevice>) -> ! {
    named(name, runner.run()).await
}

/// The rivulet runner in a task of its own, as in the firmware.
#[embassy_executor::task(pool_size = MAX_DEVICES)]
async fn link(name: &'static str, runner: &'static mut Link) -> ! {
    named(name, runner.run()).await
}

/// The application, and the status lines on stdout beside it.
#[embassy_executor::task(pool_size = MAX_DEVICES)]
async fn application(name: &'static str, device: &'static Device<'static>, mut board: SimBoard) -> ! {
    named(name, async move {
        let app = async {
            match rivulet_device_app::run(device, &mut board, &mut rivulet_device_app::NoImages, name).await {
                Ok(never) => match never {},
                Err(error) => fatal(&format!("{name}: the application cannot start: {error}")),
            }
        };
        match select(app, report(device, name)).await {
            Either::First(never) | Either::Second(never) => never,
        }
    })
    .await
}

/// Prints `name`'s link status on stdout now and after every change (changes that come faster
/// than stdout takes them fold into the newest, which is all a reader needs).
async fn report(device: &Device<'_>, name: &str) -> ! {
    let Some(mut watcher) = device.status_watcher() else {
        fatal(&format!("{name}: no status watcher left"));
    };
    let mut status = watcher.get();
    loop {
        println!("{name} {}", StatusLine(&status));
        status = watcher.wait_for_change().await;
    }
}

/// The stdout line's `key=value` pairs.
struct StatusLine<'a>(&'a LinkStatus);

impl std::fmt::Display for StatusLine<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.0;
        write!(f, "connected={} links={} resumed={} session=", s.connected, s.links, s.resumed)?;
        match s.session {
            Some(session) => write!(f, "{session}")?,
            None => f.write_str("-")?,
        }
        write!(
            f,
            " registered_below={} outbox={} registrations_refused={} connect_failures={}",
            s.registered_below, s.outbox_len, s.registrations_refused, s.connect_failures
        )
    }
}

thread_local! {
    /// The device whose task is being polled, for the log lines: every task runs on this one
    /// executor thread, so "which device" is "which task", known only while it is polled.
    static DEVICE: Cell<&'static str> = const { Cell::new("") };
}

/// `future`, with `name` as the current device while it is polled.
async fn named<F: Future>(name: &'static str, future: F) -> F::Output {
    let mut future = pin!(future);
    poll_fn(|cx| {
        let outer = DEVICE.replace(name);
        let poll = future.as_mut().poll(cx);
        DEVICE.set(outer);
        poll
    })
    .await
}

/// Log lines on stderr: seconds since start, the device (when a device's task logs), the level,
/// the module, the message. `RUST_LOG` filters (`info` unless set).
fn init_logging() {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now);
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format(|out, record| {
            let elapsed = START.get().map(Instant::elapsed).unwrap_or_default().as_secs_f64();
            let device = DEVICE.get();
            let device = if device.is_empty() { String::new() } else { format!("{device} ") };
            writeln!(out, "[{elapsed:8.3}] {device}{:<5} {}: {}", record.level(), record.target(), record.args())
        })
        .init();
}

fn fatal(message: &str) -> ! {
    log::error!("{message}");
    eprintln!("rivulet-device-sim: {message}");
    exit(1)
}

fn main() {
    let options = match Options::parse(std::env::args().skip(1)) {
        Ok(Some(options)) => options,
        Ok(None) => {
            println!("{HELP}");
            return;
        }
        Err(error) => {
            eprintln!("rivulet-device-sim: {error}\n\n{HELP}");
            exit(2);
        }
    };
    init_logging();
    let sims: Vec<Sim> =
        (0..options.devices).map(|n| Sim::open(&options, n)).collect::<Result<_, _>>().unwrap_or_else(|e| fatal(&e));
    let executor = leak(Executor::new());
    executor.run(|spawner| {
        for sim in sims {
            sim.spawn(spawner);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Option<Options>, String> {
        Options::parse(args.iter().map(|a| a.to_string()))
    }

    #[test]
    fn options() {
        let defaults = parse(&[]).expect("valid").expect("not help");
        assert_eq!((defaults.devices, defaults.gateway), (10, ([10, 77, 0, 1], 7780)));
        assert_eq!((defaults.tap(3), defaults.name(3)), ("rvtap3".to_string(), "sim-3".to_string()));
        let chosen = parse(&["--devices", "3", "--gateway", "10.77.1.1:9000", "--name-prefix", "lab-"])
            .expect("valid")
            .expect("not help");
        assert_eq!((chosen.devices, chosen.gateway, chosen.name(2)), (3, ([10, 77, 1, 1], 9000), "lab-2".into()));
        let by_name = parse(&["--gateway-host", "gateway.rivulet.test", "--dns", "10.77.0.1"]).expect("valid");
        let by_name = by_name.expect("not help");
        assert_eq!(
            (by_name.gateway_host.as_deref(), by_name.dns),
            (Some("gateway.rivulet.test"), Some([10, 77, 0, 1]))
        );
        assert_eq!(parse(&["--help"]), Ok(None));
        for bad in [
            &["--devices", "0"][..],
            &["--devices", "17"],
            &["--devices"],
            &["--gateway", "10.77.0.1"],
            &["--name-prefix", "a/"],
            &["--tap-prefix", "a-very-long-tap-"],
            &["--verbose", "1"],
            &["--gateway-host", "gateway.rivulet.test"],
            &["--gateway-host", "bad_name", "--dns", "10.77.0.1"],
            &["--gateway-host", "a..b", "--dns", "10.77.0.1"],
            &["--dns", "10.77.0"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn addresses_and_macs_differ_per_device() {
        assert_eq!(address(3, 2), Ipv4Address::new(10, 77, 3, 2));
        assert_eq!(address(3, 1), Ipv4Address::new(10, 77, 3, 1));
        assert_eq!(mac(15), [0x02, 0x52, 0x56, 0, 0, 15]);
        assert_eq!(mac(0)[0] & 0b11, 0b10, "locally administered, unicast");
    }

    #[test]
    fn status_lines_name_every_field() {
        let status = LinkStatus {
            connected: true,
            links: 2,
            resumed: true,
            session: Some(4),
            registered_below: 57,
            outbox_len: 3,
            ..LinkStatus::INITIAL
        };
        assert_eq!(
            StatusLine(&status).to_string(),
            "connected=true links=2 resumed=true session=4 registered_below=57 outbox=3 registrations_refused=0 \
             connect_failures=0"
        );
        assert!(StatusLine(&LinkStatus::INITIAL).to_string().contains("session=- "));
    }

    #[test]
    fn simulated_temperatures_stay_near_21_degrees() {
        for index in 0..MAX_DEVICES {
            let reading = SimBoard { index }.die_temperature().expect("simulated");
            assert!((2050..=2150 + 25 * 15).contains(&reading), "{reading}");
        }
    }
}
