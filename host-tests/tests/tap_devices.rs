//! Ten devices running the boards' application (`rivulet-device-app`) on embassy-net, each
//! behind its own Linux TAP (`rivulet-device-sim`, `src/bin/rivulet-device-sim.rs`), against the
//! real gateway (`rivulet gateway`), which is killed with SIGKILL mid-stream and started again.
//! Afterwards every event a device saw acknowledged is in the store exactly once, and every
//! device answers `rivulet request sim-N 1` (info). A second test has one device find the gateway
//! by name through dnsmasq in the namespace (`dnsmasq-base`, installed like the tools below), and
//! find it again after it moved to another address.
//!
//! Everything runs in a network namespace of its own, made for this test and gone with it:
//!
//! - a holder, `unshare --net sh -c '...'`, makes the namespace, brings up `lo` and the TAPs
//!   `rvtap0`..`rvtap9` with their kernel-side addresses `10.77.<n>.1/24`, then sleeps;
//! - the gateway (listening on `10.77.0.1:7780`, rvtap0's kernel side), the simulator and each
//!   `rivulet` CLI call join it with `nsenter --net=/proc/<holder>/ns/net`.
//!
//! So the test itself stays outside, where cargo started it, and orchestrates from there: it
//! starts, kills and restarts each process on its own, reads the simulator's status lines, and
//! checks with the CLI, as a person with a shell in the namespace would. Every long-lived process
//! runs under `setpriv --pdeathsig KILL`, so it dies with the test's thread whatever happens to
//! it, besides the drop guards that kill it on every path out of the test.
//!
//! Needs root and `/dev/net/tun` (CI runs as root): without them the test fails, saying so. It
//! installs `unshare`/`nsenter`/`setpriv` (util-linux) and `ip` (iproute2) with apt-get when
//! they are missing. Time is real; every wait has a generous deadline that only turns a hang into
//! a failure.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rivulet_device_app::RQ_INFO;
use rivulet_host_tests::process::{
    Cli, echo_lines, effective_uid, ensure_installed, gateway_binary, lines, spawn_logged, succeeds,
};
use serde_json::Value;

const DEVICES: usize = 10;
/// Where the gateway listens: the kernel side of rvtap0, the simulator's default gateway.
const GATEWAY: &str = "10.77.0.1:7780";
/// The telemetry period the devices are told to use (`command/<name>/period`): three events every
/// 100 ms per device, so that the gateway has work in hand when it is killed.
const PERIOD_MS: u64 = 100;
/// Acknowledged registrations each device must have before the kill, and again after the restart.
const PER_PHASE: u32 = 60;
/// Turns a hang into a failure; never reached when things work.
const PATIENCE: Duration = Duration::from_secs(90);

#[test]
fn tap_devices_keep_every_acknowledged_event_across_a_gateway_kill_9() {
    let started = Instant::now();
    let step = |what: &str| eprintln!("[{:6.1} s] {what}", started.elapsed().as_secs_f64());
    require_root_and_tun();
    ensure_tools();
    let rivulet = gateway_binary();
    let simulator = Path::new(env!("CARGO_BIN_EXE_rivulet-device-sim"));
    let dir = tempfile::tempdir().expect("a temporary directory");

    step(&format!("network namespace with {DEVICES} TAPs"));
    let ns = Namespace::create(DEVICES);
    step(&format!("gateway on {GATEWAY}"));
    let mut gateway = Gateway::start(&ns, &rivulet, dir.path(), GATEWAY);
    step(&format!("{DEVICES} simulated devices"));
    let mut sim = Sim::start(&ns, simulator, DEVICES, &["--gateway", GATEWAY]);
    let cli = Cli::new(|| ns.command(&rivulet), GATEWAY, PATIENCE);

    sim.wait_all("every device linked", |_, d| d.connected && d.registered_below >= 1);
    step(&format!("every device linked; telling each to report every {PERIOD_MS} ms"));
    for n in 0..DEVICES {
        cli.ok(&["pub", &format!("command/sim-{n}/period"), &PERIOD_MS.to_string()]);
    }
    let before = sim.wait_all(&format!("{PER_PHASE} acknowledged registrations per device"), |_, d| {
        d.registered_below >= PER_PHASE
    });
    step(&format!("before the kill: {}", summary(&before)));

    // The harder moment to die: with registrations sent but not yet acknowledged. Acks follow
    // within milliseconds, so watch for such a moment a little while, then kill either way.
    let in_flight = sim.in_flight_soon(Duration::from_secs(5));
    gateway.kill_9();
    step(&format!(
        "gateway killed (SIGKILL) with {in_flight} registrations unacknowledged; starting it again on the same \
         store and address"
    ));
    gateway = Gateway::start(&ns, &rivulet, dir.path(), GATEWAY);
    let after = sim.wait_all(&format!("every device back, {PER_PHASE} more acknowledged"), |name, d| {
        d.connected && d.links >= 2 && d.registered_below >= before[name].registered_below + PER_PHASE
    });
    step(&format!("after the restart: {}", summary(&after)));
    for (name, status) in &after {
        assert!(status.resumed, "{name} did not resume its session after the restart: {status:?}");
    }

    for n in 0..DEVICES {
        let name = format!("sim-{n}");
        let info = sim.eventually(&format!("{name}'s info answer"), || device_info(&cli, &name));
        assert_eq!(info["board"], "embassy-net-tap", "{name}: {info}");
        assert_eq!(info["period_ms"], PERIOD_MS, "{name} took the period command: {info}");
        assert!(info["links"].as_u64() >= Some(2), "{name} linked again after the restart: {info}");
        if n == 0 {
            step(&format!("sim-0 answers info: {info}"));
        }
    }
    step(&format!("all {DEVICES} devices answer `rivulet request sim-N {RQ_INFO}`; stopping them"));

    // What each device saw acknowledged, as of its last status line: the simulator is gone, so
    // nothing more can be acknowledged or stored after this.
    let seen = sim.stop();
    let events = timeseries(&cli, "device/*");
    step(&format!("{} events stored; checking each device's against what it saw acknowledged", events.len()));
    let mut per_device: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for event in events {
        let device = event["type"][1].as_str().unwrap_or_default().to_string();
        per_device.entry(device).or_default().push(event);
    }
    let mut failures = Vec::new();
    for (name, status) in &seen {
        let mut stored = per_device.remove(name).unwrap_or_default();
        stored.sort_by_key(id);
        match check_stored_once(&stored, status) {
            Ok(dropped) => eprintln!(
                "  {name}: acknowledged {:4}, stored {:4}, dropped while the outbox was full {dropped:3}, links {}",
                status.registered_below,
                stored.len(),
                status.links
            ),
            Err(failure) => failures.push(format!("{name}: {failure}")),
        }
    }
    assert_eq!(seen.len(), DEVICES, "status lines from every device: {:?}", seen.keys());
    assert!(per_device.is_empty(), "events of unknown devices: {:?}", per_device.keys());
    assert!(failures.is_empty(), "stored events do not match what the devices saw:\n{}", failures.join("\n"));
    // The gateway goes with its guard (SIGKILL): a SIGTERM would wait 5 s for the dead devices'
    // links to answer its close, and its clean shutdown is the gateway's own tests' business.
    drop(gateway);
    step("done");
}

/// A device that knows its gateway by name (`TcpConnector::to_host`) asks DNS on every connect:
/// it links through the name, and when the gateway comes back at another address (killed, then
/// started elsewhere, the name moved with it) the device finds it there and resumes its session.
/// The DNS server is dnsmasq in the namespace, whose query log shows the device asked each time.
#[test]
fn a_device_finds_its_gateway_by_name_again_after_it_moved() {
    const NAME: &str = "gateway.rivulet.test";
    const FIRST: &str = "10.77.0.1:7780";
    const MOVED: &str = "10.77.0.3:7780";
    let started = Instant::now();
    let step = |what: &str| eprintln!("[{:6.1} s] {what}", started.elapsed().as_secs_f64());
    require_root_and_tun();
    ensure_tools();
    ensure_installed(|| succeeds(Command::new("dnsmasq").arg("--version")), &["dnsmasq-base"], "dnsmasq");
    let rivulet = gateway_binary();
    let simulator = Path::new(env!("CARGO_BIN_EXE_rivulet-device-sim"));
    let dir = tempfile::tempdir().expect("a temporary directory");

    let ns = Namespace::create(1);
    ns.run(&["ip", "addr", "add", "10.77.0.3/24", "dev", "rvtap0"]);
    step(&format!("dnsmasq: {NAME} is 10.77.0.1; the gateway on {FIRST}"));
    let mut dns = Dns::start(&ns, dir.path(), NAME, "10.77.0.1");
    let mut gateway = Gateway::start(&ns, &rivulet, dir.path(), FIRST);
    // No address to fall back on: 0.0.0.0 gives only the port; the name must be looked up.
    let by_name = ["--gateway", "0.0.0.0:7780", "--gateway-host", NAME, "--dns", "10.77.0.1"];
    let mut sim = Sim::start(&ns, simulator, 1, &by_name);
    let first = sim.wait_all("the device linked through the name", |_, d| d.connected && d.registered_below >= 1);
    let at_first = Cli::new(|| ns.command(&rivulet), FIRST, PATIENCE);
    let info = sim.eventually("sim-0's info answer", || device_info(&at_first, "sim-0"));
    step(&format!("linked by name ({}), info: {info}", summary(&first)));
    let asked_before = dns.queries(NAME);
    assert!(asked_before >= 1, "the device linked without asking DNS for {NAME}:\n{}", dns.log());

    gateway.kill_9();
    dns.stop();
    step(&format!("gateway killed; {NAME} is now 10.77.0.3, the gateway on {MOVED}"));
    dns = Dns::start(&ns, dir.path(), NAME, "10.77.0.3");
    gateway = Gateway::start(&ns, &rivulet, dir.path(), MOVED);
    let after = sim.wait_all("the device linked at the moved address", |_, d| d.connected && d.links >= 2);
    assert!(after["sim-0"].resumed, "the session resumed at the new address: {after:?}");
    let moved = Cli::new(|| ns.command(&rivulet), MOVED, PATIENCE);
    let info = sim.eventually("sim-0's info answer at the moved address", || device_info(&moved, "sim-0"));
    assert!(info["links"].as_u64() >= Some(2), "{info}");
    assert!(dns.queries(NAME) >= 1, "the device found the moved gateway without asking DNS again:\n{}", dns.log());
    step(&format!("linked again at {MOVED} by name, info: {info}"));
    drop(gateway);
}

/// The check above fails on a lost event, a repeated one, or too few; passes on the real order.
#[test]
fn the_check_catches_lost_and_repeated_events() {
    use serde_json::json;
    let event = |instance: u64, [group, kind]: [&str; 2], payload: Value| {
        let event_type = ["device", "sim-0", group, kind];
        json!({ "id": [1, 1, instance], "type": event_type, "payload": payload })
    };
    let counters = |telemetry: u64| json!({ "telemetry": telemetry, "dropped": 2 });
    let stored = vec![
        event(1, ["state", "led"], json!(false)),
        event(2, ["telemetry", "temperature"], json!(21.5)),
        event(3, ["telemetry", "uptime"], json!(100)),
        event(4, ["telemetry", "counters"], counters(3)),
        event(5, ["telemetry", "temperature"], json!(21.6)),
        event(6, ["telemetry", "uptime"], json!(200)),
        event(7, ["telemetry", "counters"], counters(6)),
    ];
    let seen = Status { registered_below: 7, ..Status::default() };
    assert_eq!(check_stored_once(&stored, &seen), Ok(2));

    let mut lost = stored.clone();
    lost.remove(1);
    assert!(
        check_stored_once(&lost, &Status { registered_below: 6, ..seen.clone() }).is_err_and(|e| e.contains("lost"))
    );
    let mut repeated = stored.clone();
    repeated.insert(2, stored[1].clone());
    assert!(check_stored_once(&repeated, &seen).is_err_and(|e| e.contains("stored twice")));
    let mut repeated_uptime = stored.clone();
    repeated_uptime.insert(3, stored[2].clone());
    assert!(check_stored_once(&repeated_uptime, &seen).is_err());
    assert!(
        check_stored_once(&stored[..6], &seen).is_err_and(|e| e.contains("acknowledged")),
        "fewer than acknowledged"
    );
    assert!(check_stored_once(&stored[1..], &Status::default()).is_err(), "the LED's state first");
}

/// The link status a device printed last (`rivulet-device-sim`'s stdout).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Status {
    connected: bool,
    links: u32,
    resumed: bool,
    registered_below: u32,
    outbox: u32,
    registrations_refused: u32,
}

impl Status {
    /// `sim-3 connected=true links=2 ... registered_below=57 outbox=2 ...` into its name and status.
    fn parse(line: &str) -> Option<(String, Status)> {
        let mut words = line.split_whitespace();
        let name = words.next()?.to_string();
        let fields: BTreeMap<&str, &str> = words.filter_map(|word| word.split_once('=')).collect();
        let number = |key: &str| fields.get(key)?.parse::<u32>().ok();
        let status = Status {
            connected: *fields.get("connected")? == "true",
            links: number("links")?,
            resumed: *fields.get("resumed")? == "true",
            registered_below: number("registered_below")?,
            outbox: number("outbox")?,
            registrations_refused: number("registrations_refused")?,
        };
        Some((name, status))
    }
}

fn summary(statuses: &BTreeMap<String, Status>) -> String {
    let acknowledged: Vec<u32> = statuses.values().map(|s| s.registered_below).collect();
    let waiting: u32 = statuses.values().map(|s| s.outbox).sum();
    format!(
        "acknowledged per device {}..={}, {waiting} registrations waiting in the outboxes",
        acknowledged.iter().min().unwrap_or(&0),
        acknowledged.iter().max().unwrap_or(&0)
    )
}

/// An event's id, `[server, session, instance]`: the gateway's order of arrival, across restarts.
fn id(event: &Value) -> (u64, u64, u64) {
    let part = |i: usize| event["id"][i].as_u64().unwrap_or(u64::MAX);
    (part(0), part(1), part(2))
}

fn event_type(event: &Value) -> String {
    let segments = event["type"].as_array().map(|s| s.iter().filter_map(Value::as_str).collect::<Vec<_>>());
    segments.unwrap_or_default().join("/")
}

/// Checks one device's stored events, in id order, against what it saw acknowledged; returns
/// how many readings it dropped (its last `counters` says).
///
/// The application numbers its registrations from 0 (the LED's state, first) and every
/// `counters` payload carries `telemetry`, the number of registrations queued before it, which is
/// its own sequence number. A device's registrations reach the store in sequence order, so the
/// `k`-th stored event must be registration `k`: a lost event shifts every later `counters` to a
/// higher index than its `telemetry`, a stored duplicate to a lower one (and repeats an `uptime`
/// or `counters` payload, which never repeat). Everything below `registered_below` was
/// acknowledged, so at least that many events must be there.
fn check_stored_once(stored: &[Value], seen: &Status) -> Result<u64, String> {
    if seen.registrations_refused != 0 {
        return Err(format!("{} registrations refused", seen.registrations_refused));
    }
    if (stored.len() as u64) < u64::from(seen.registered_below) {
        return Err(format!(
            "{} events stored, but the device saw {} acknowledged (registered_below)",
            stored.len(),
            seen.registered_below
        ));
    }
    let first = stored.first().map(event_type).unwrap_or_default();
    if !first.ends_with("/state/led") {
        return Err(format!("the first stored event is {first:?}, not the LED's state"));
    }
    let (mut last_uptime, mut dropped) = (None, 0);
    for (index, event) in stored.iter().enumerate() {
        let kind = event_type(event);
        let payload = &event["payload"];
        if kind.ends_with("/telemetry/counters") {
            let telemetry = payload["telemetry"].as_u64();
            if telemetry != Some(index as u64) {
                let what = if telemetry > Some(index as u64) { "lost" } else { "stored twice" };
                return Err(format!(
                    "stored event {index} is registration {telemetry:?} (its counters say): events before it were \
                     {what} ({event})"
                ));
            }
            dropped = payload["dropped"].as_u64().unwrap_or(0);
        } else if kind.ends_with("/telemetry/uptime") {
            let uptime = payload.as_u64();
            if uptime.is_none() || uptime <= last_uptime {
                return Err(format!("stored event {index}: uptime {uptime:?} after {last_uptime:?}, stored twice?"));
            }
            last_uptime = uptime;
        } else if !(kind.ends_with("/telemetry/temperature") || (index == 0 && kind.ends_with("/state/led"))) {
            return Err(format!("stored event {index} is unexpected: {event}"));
        }
    }
    Ok(dropped)
}

/// Fails the test unless it runs as root with a TUN/TAP device: a test that cannot make TAPs
/// must not pass by doing nothing.
fn require_root_and_tun() {
    let effective = effective_uid();
    assert!(
        effective == Some(0),
        "tests/tap_devices.rs must run as root (here the effective uid is {}): it makes a network \
         namespace and TAP devices; run `cargo test` as root, as CI does, or under sudo",
        effective.map_or("unknown".to_string(), |uid| uid.to_string())
    );
    assert!(
        Path::new("/dev/net/tun").exists(),
        "/dev/net/tun is missing: the kernel's TUN/TAP driver is not available here (load it with \
         `modprobe tun`; in a container, pass the device in, e.g. `--device /dev/net/tun`)"
    );
}

/// Installs util-linux (`unshare`, `nsenter`, `setpriv`) and iproute2 (`ip`) with apt-get when
/// one is missing; we are root by now.
fn ensure_tools() {
    let present = |tool: &str, arg: &str| succeeds(Command::new(tool).arg(arg));
    ensure_installed(
        || ["unshare", "nsenter", "setpriv"].iter().all(|tool| present(tool, "--version")) && present("ip", "-V"),
        &["util-linux", "iproute2"],
        "unshare, nsenter, setpriv (util-linux) or ip (iproute2)",
    );
}

/// The network namespace: held by a process that made it, its TAPs and their addresses, and
/// then sleeps. The TAPs, the addresses and the namespace go when the last process in it ends.
struct Namespace {
    holder: Child,
}

impl Namespace {
    fn create(devices: usize) -> Namespace {
        let script = format!(
            "set -e
             ip link set lo up
             for n in $(seq 0 {last}); do
               ip tuntap add name rvtap$n mode tap
               ip link set rvtap$n up
               ip addr add 10.77.$n.1/24 dev rvtap$n
             done
             ip -brief address
             echo ready
             exec sleep infinity",
            last = devices - 1
        );
        let mut command = Command::new("setpriv");
        command.args(["--pdeathsig", "KILL", "--", "unshare", "--net", "--", "sh", "-c", &script]);
        eprintln!(
            "+ setpriv --pdeathsig KILL -- unshare --net -- sh -c '<lo up; rvtap0..rvtap{}: 10.77.N.1/24>'",
            devices - 1
        );
        let mut holder = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn unshare");
        let stdout = lines(holder.stdout.take().expect("piped stdout"));
        let mut stderr = holder.stderr.take().expect("piped stderr");
        let namespace = Namespace { holder };
        let deadline = Instant::now() + PATIENCE;
        loop {
            match stdout.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) if line == "ready" => break,
                Ok(line) => eprintln!("  {line}"),
                Err(_) => {
                    let mut error = String::new();
                    let _ = stderr.read_to_string(&mut error);
                    panic!("could not make the network namespace and its TAPs: {}", error.trim());
                }
            }
        }
        namespace
    }

    /// Runs `args` inside the namespace to the end; fails the test if it fails.
    fn run(&self, args: &[&str]) {
        let (program, rest) = args.split_first().expect("a program");
        let status = self.command(program).args(rest).status().expect("run a command in the namespace");
        assert!(status.success(), "{args:?} in the namespace: {status}");
    }

    /// `program`, to run inside the namespace.
    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new("nsenter");
        command.arg(format!("--net=/proc/{}/ns/net", self.holder.id())).arg("--").arg(program);
        command
    }

    /// `program` inside the namespace, killed (SIGKILL) when the thread that spawns it ends.
    fn daemon(&self, program: &Path) -> Command {
        let mut command = self.command("setpriv");
        command.args(["--pdeathsig", "KILL", "--"]).arg(program);
        command
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

/// A `rivulet gateway` process in the namespace, killed when dropped.
struct Gateway {
    child: Child,
    log: PathBuf,
}

impl Gateway {
    /// Starts the gateway on `listen` with its store in `dir/data` and waits for its listening line.
    ///
    /// `--insecure`: the gateway refuses a listener on anything but loopback without `[[clients]]`,
    /// and 10.77.0.1 is not loopback. That is fine here: the namespace is this test's own, its
    /// only interfaces are `lo` and the TAPs whose other ends are the simulated devices, so nothing
    /// else can reach the listener (and the devices do not log in).
    fn start(ns: &Namespace, rivulet: &Path, dir: &Path, listen: &str) -> Gateway {
        let log = dir.join("gateway.log");
        let mut command = ns.daemon(rivulet);
        command.args(["gateway", "--listen", listen, "--insecure", "--data"]).arg(dir.join("data"));
        eprintln!("+ {command:?}");
        command.current_dir(dir).env_remove("RIVULET_TOKEN").env("NO_COLOR", "1");
        let (child, stdout) = spawn_logged(&mut command, &log);
        let gateway = Gateway { child, log };
        let deadline = Instant::now() + PATIENCE;
        loop {
            match stdout.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) if line.starts_with("rivulet gateway listening on ") => return gateway,
                Ok(_) => {}
                Err(_) => panic!("the gateway did not start listening:\n{}", gateway.log_tail()),
            }
        }
    }

    /// SIGKILL: no chance to close links or write anything; then waits for it to be gone.
    fn kill_9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        format!("gateway log (last lines):\n{}", lines[lines.len().saturating_sub(30)..].join("\n"))
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The log sits in the test's temporary directory, which goes next.
        if std::thread::panicking() {
            eprintln!("{}", self.log_tail());
        }
    }
}

/// dnsmasq in the namespace, answering for one name with one address, listening on 10.77.0.1 (the
/// kernel side of rvtap0, the devices' DNS server) and logging each query; killed when dropped.
struct Dns {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl Dns {
    fn start(ns: &Namespace, dir: &Path, name: &str, address: &str) -> Dns {
        let mut command = ns.daemon(Path::new("dnsmasq"));
        command.args([
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--pid-file=",
            "--bind-interfaces",
            "--listen-address=10.77.0.1",
            "--log-queries",
            "--log-facility=-",
        ]);
        command.arg(format!("--address=/{name}/{address}")).current_dir(dir);
        eprintln!("+ {command:?}");
        let mut child =
            command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("spawn dnsmasq");
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = lines(child.stderr.take().expect("piped stderr"));
        let deadline = Instant::now() + PATIENCE;
        // Its first lines say it started (or why not); after that a thread keeps the query log.
        loop {
            match stderr.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) if line.contains("started") => break,
                Ok(line) if line.contains("FAILED") || line.contains("failed") => panic!("dnsmasq: {line}"),
                Ok(_) => {}
                Err(_) => panic!("dnsmasq did not start"),
            }
        }
        let kept = log.clone();
        std::thread::spawn(move || {
            for line in stderr {
                eprintln!("[dnsmasq] {line}");
                kept.lock().unwrap_or_else(|e| e.into_inner()).push(line);
            }
        });
        Dns { child, log }
    }

    /// Queries for `name`'s IPv4 address so far (`query[A] NAME from ...` lines).
    fn queries(&self, name: &str) -> usize {
        let needle = format!("query[A] {name} ");
        self.log.lock().unwrap_or_else(|e| e.into_inner()).iter().filter(|line| line.contains(&needle)).count()
    }

    fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).join("\n")
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The simulator in the namespace, killed when dropped. Its stdout's status lines update
/// `statuses`; its log (stderr) is echoed with a `[sim]` prefix and kept for failure messages.
struct Sim {
    child: Child,
    devices: usize,
    statuses: Arc<Mutex<BTreeMap<String, Status>>>,
    reader: Option<std::thread::JoinHandle<()>>,
    log: Arc<Mutex<Vec<String>>>,
}

impl Sim {
    /// `devices` simulated devices, with the simulator's other `options`.
    fn start(ns: &Namespace, simulator: &Path, devices: usize, options: &[&str]) -> Sim {
        let mut command = ns.daemon(simulator);
        command.args(["--devices", &devices.to_string()]).args(options);
        eprintln!("+ {command:?}");
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn rivulet-device-sim");
        let statuses = Arc::new(Mutex::new(BTreeMap::new()));
        let reader = Some(Self::read_statuses(child.stdout.take().expect("piped stdout"), statuses.clone()));
        let log = Arc::new(Mutex::new(Vec::new()));
        echo_lines(child.stderr.take().expect("piped stderr"), "[sim]", log.clone());
        Sim { child, devices, statuses, reader, log }
    }

    fn read_statuses(
        stdout: ChildStdout,
        statuses: Arc<Mutex<BTreeMap<String, Status>>>,
    ) -> std::thread::JoinHandle<()> {
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                match Status::parse(&line) {
                    Some((name, status)) => {
                        statuses.lock().unwrap_or_else(|e| e.into_inner()).insert(name, status);
                    }
                    None => eprintln!("[sim stdout] {line}"),
                }
            }
        })
    }

    fn statuses(&self) -> BTreeMap<String, Status> {
        self.statuses.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Polls `probe` until it gives a value, checking each time that the simulator still runs.
    fn eventually<T>(&mut self, what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the simulator exited ({status}):\n{}", self.log_tail());
            }
            if let Some(value) = probe() {
                return value;
            }
            if Instant::now() > deadline {
                panic!("no {what} within {PATIENCE:?}; statuses: {:#?}\n{}", self.statuses(), self.log_tail());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until every device has a status and `ok(name, status)` holds for each; returns them.
    fn wait_all(&mut self, what: &str, ok: impl Fn(&str, &Status) -> bool) -> BTreeMap<String, Status> {
        let (statuses, devices) = (self.statuses.clone(), self.devices);
        self.eventually(what, || {
            let statuses = statuses.lock().unwrap_or_else(|e| e.into_inner());
            (statuses.len() == devices && statuses.iter().all(|(name, status)| ok(name, status)))
                .then(|| statuses.clone())
        })
    }

    /// Waits up to `patience` for a moment when some device has registrations not yet
    /// acknowledged; returns how many (0 if no such moment came).
    fn in_flight_soon(&self, patience: Duration) -> u32 {
        let deadline = Instant::now() + patience;
        loop {
            let waiting = self.statuses().values().map(|s| s.outbox).sum();
            if waiting > 0 || Instant::now() > deadline {
                return waiting;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Kills the simulator (SIGKILL, as a power cut) and returns each device's last status line.
    fn stop(mut self) -> BTreeMap<String, Status> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(reader) = self.reader.take() {
            let _ = reader.join(); // the pipe is closed: every line is in
        }
        self.statuses()
    }

    fn log_tail(&self) -> String {
        let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        format!("simulator log (last lines):\n{}", log[log.len().saturating_sub(30)..].join("\n"))
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `rivulet request NAME 1`: the device's info, or `None` while it cannot answer.
fn device_info(cli: &Cli, name: &str) -> Option<Value> {
    cli.request(name, RQ_INFO).and_then(|answer| serde_json::from_slice(&answer).ok())
}

/// Every stored event of `pattern`, oldest first (the CLI follows the pages).
fn timeseries(cli: &Cli, pattern: &str) -> Vec<Value> {
    let stdout = cli.ok(&["query", "timeseries", pattern, "--ascending"]);
    stdout.lines().map(|line| serde_json::from_str(line).expect("a JSON event per line")).collect()
}
