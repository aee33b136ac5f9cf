//! The QEMU firmware (`firmware/qemu`, the same application as the Nucleo board's) against the
//! real gateway: `rivulet gateway --serial-listen`, and `qemu-system-arm -machine mps2-an386`
//! whose UART0 dials it (`-serial tcp:ADDR`, client mode). Through the `rivulet` CLI, as a person
//! would, it checks that the device connects, that its telemetry reaches the store, that it
//! carries out a command (`command/<name>/led`), that it answers `rivulet request <name> 1`
//! (info), and that it comes back, session resumed, after the gateway restarts. Then a real
//! hat-event client (`hat_eventer_peer.py mixed`, on the gateway's `--hat-listen`) commands the
//! LED off while `rivulet sub`/`rivulet pub` run beside it: the device obeys once, and each of
//! them sees every event that concerns it exactly once. Last, `rivulet send-file` sends it a
//! firmware image and the gateway is killed with SIGKILL in the middle: the transfer resumes
//! from what the device holds and the device verifies the image's SHA-256.
//!
//! Before that it builds the firmware with CI's own command (`cd firmware && cargo build
//! --release --locked`; a no-op once CI has built it) and installs what is missing: QEMU with
//! apt-get when running as root, the thumbv7em target with rustup. Whatever it cannot install
//! fails the test with the command to run: a missing tool never passes silently.
//!
//! The gateway is `target/<profile>/rivulet`, which `cargo test --workspace` builds for the
//! gateway's own tests; run alone, the test builds it when it is missing (refresh it with
//! `cargo build -p rivulet-gateway` after changing the gateway). The device's name is
//! `RIVULET_DEVICE_NAME` if set (the firmware reads the same variable at build time), else `qemu`.
//!
//! Time is real; every wait has a generous deadline that only turns a hang into a failure. QEMU
//! and the gateway are killed when their guards drop, on every path; QEMU also runs under
//! `timeout`, so even a killed test leaves no emulator behind for long.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rivulet_device_app::RQ_INFO;
use rivulet_host_tests::peers::PeerProcess;
use rivulet_host_tests::process::{Cli, echo_lines, ensure_installed, gateway_binary, spawn_logged, succeeds};
use serde_json::Value;

/// Turns a hang into a failure; never reached when things work.
const PATIENCE: Duration = Duration::from_secs(90);
/// The device's reconnect after a gateway restart: its init, sent while QEMU's line was down,
/// times out (10 s) before the next one goes over the new line.
const RECONNECT_PATIENCE: Duration = Duration::from_secs(120);
/// QEMU's own hard limit, should the test be killed before its guard can run.
const QEMU_LIFETIME_S: u32 = 900;
const TARGET: &str = "thumbv7em-none-eabihf";

#[test]
fn qemu_device_reports_obeys_answers_and_survives_a_gateway_restart() {
    let started = Instant::now();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("host-tests sits in the workspace");
    let name = std::env::var("RIVULET_DEVICE_NAME").unwrap_or_else(|_| "qemu".to_string());
    assert!(rivulet_device_app::config::is_valid_name(&name), "RIVULET_DEVICE_NAME {name:?} is not a device name");
    ensure_qemu();
    ensure_target(&root.join("firmware"));
    let elf = build_firmware(&root.join("firmware"));
    let rivulet = gateway_binary();
    let dir = tempfile::tempdir().expect("a temporary directory");

    let mut gateway = Gateway::start(&rivulet, dir.path(), "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0");
    let (cli, serial, hat) = (gateway.addr, gateway.serial, gateway.hat);
    let mut qemu = Qemu::start(&elf, serial);
    let run = Cli::new(
        || {
            let mut command = Command::new(&rivulet);
            command.current_dir(dir.path());
            command
        },
        cli,
        PATIENCE,
    );

    // The device connects and its telemetry reaches the gateway's store.
    let uptime_type = format!("device/{name}/telemetry/uptime");
    let first = eventually("the device's telemetry in the store", &mut qemu, PATIENCE, || {
        let latest = latest_events(&run, &format!("device/{name}/telemetry/*"));
        let types: Vec<String> = latest.iter().map(event_type).collect();
        let counters = latest.iter().find(|e| event_type(e) == format!("device/{name}/telemetry/counters"));
        let uptime = latest.iter().find(|e| event_type(e) == uptime_type);
        match (uptime, counters) {
            (Some(uptime), Some(counters)) if counters["payload"]["links"].as_u64() >= Some(1) => Some(uptime.clone()),
            _ => {
                eprintln!("  telemetry so far: {types:?}");
                None
            }
        }
    });
    assert!(first["payload"].as_u64().is_some(), "uptime is a number of milliseconds: {first}");
    eprintln!("telemetry stored after {:.1} s: {first}", started.elapsed().as_secs_f64());

    // It answers `rivulet request <name> 1` with its info.
    let info = eventually("the info answer", &mut qemu, PATIENCE, || device_info(&run, &name));
    eprintln!("info: {info}");
    assert_eq!(info["board"], "qemu-mps2-an386", "{info}");
    assert!(info["version"].as_str().is_some_and(|v| v.contains('.')), "the firmware's version: {info}");
    assert_eq!(info["led"], false, "the LED starts off: {info}");
    assert_eq!(info["period_ms"], 1000, "{info}");
    assert!(info["stack_used"].as_u64().is_some_and(|used| used > 0), "QEMU measures its stack: {info}");

    // A command event turns the LED on: the info answer and the state event show it.
    run.ok(&["pub", &format!("command/{name}/led"), "true"]);
    let info = eventually("the LED on after the command", &mut qemu, PATIENCE, || {
        device_info(&run, &name).filter(|info| info["led"] == true)
    });
    assert!(info["commands"].as_u64() >= Some(1), "{info}");
    let led_type = format!("device/{name}/state/led");
    eventually("the LED's state event, on", &mut qemu, PATIENCE, || {
        latest_events(&run, &led_type).into_iter().find(|e| e["payload"] == true)
    });
    qemu.expect_console("LED on");

    // A request type the device does not know is refused, with the reason.
    let refused = run.output(&["request", &name, "99"]);
    assert!(!refused.status.success(), "request 99 should be refused");
    let reason = String::from_utf8_lossy(&refused.stderr);
    assert!(reason.contains("unknown request type"), "{reason}");

    // The gateway restarts on the same addresses; the device links again, resumes its session,
    // and its telemetry goes on into the same store.
    let before = first["id"][1].as_u64().expect("an event id's session");
    gateway.terminate();
    let restarted = Instant::now();
    gateway = Gateway::start(&rivulet, dir.path(), &cli.to_string(), &serial.to_string(), &hat.to_string());
    let after = eventually("telemetry after the gateway restart", &mut qemu, RECONNECT_PATIENCE, || {
        latest_events(&run, &uptime_type).into_iter().find(|e| e["id"][1].as_u64() > Some(before))
    });
    eprintln!("telemetry again {:.1} s after the restart: {after}", restarted.elapsed().as_secs_f64());
    let info = eventually("the info answer after the restart", &mut qemu, PATIENCE, || device_info(&run, &name));
    eprintln!("info after the restart: {info}");
    assert!(info["links"].as_u64() >= Some(2), "a second link: {info}");
    assert_eq!(info["led"], true, "the device kept its state: {info}");
    qemu.expect_console("session resumed: true");

    // Mixed: a real hat client, native clients (`rivulet sub`, `rivulet pub`) and the device on
    // the one gateway. hat commands the LED off; everyone sees what concerns them exactly once.
    mixed(&run, &mut qemu, &name, hat, &info, dir.path());

    // A firmware image to the device, the gateway killed with SIGKILL in the middle: the send
    // goes on from what the device holds once both are back, and the device checks the hash.
    gateway = image_across_a_kill(gateway, &rivulet, &mut qemu, &name, dir.path());

    drop(qemu);
    gateway.terminate();
    eprintln!("the QEMU device test took {:.1} s", started.elapsed().as_secs_f64());
}

/// The mixed part of the test: `rivulet sub` (native) and a Python hat client
/// (`hat_eventer_peer.py mixed`) subscribe; the hat client registers `mixed/hat` and the command
/// `command/<name>/led false`; `rivulet pub` registers `mixed/native` and, once the device has
/// obeyed, `mixed/end`. `info` is the device's info before.
fn mixed(run: &Cli, qemu: &mut Qemu, name: &str, hat: SocketAddr, info: &Value, dir: &Path) {
    let led_type = format!("device/{name}/state/led");
    let mut command = Command::new(gateway_binary());
    command
        .args(["sub", "mixed/*", &led_type, "--gateway", run.gateway()])
        .current_dir(dir)
        .env_remove("RIVULET_TOKEN");
    let (mut sub, sub_lines) = spawn_logged(&mut command, &dir.join("sub.log"));
    let next_event = |what: &str| -> Value {
        let line = sub_lines.recv_timeout(PATIENCE).unwrap_or_else(|_| panic!("`rivulet sub`: no {what}"));
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("`rivulet sub` printed {line:?}: {e}"))
    };
    // `rivulet sub` is subscribed once it prints what is published after it connected.
    let mut pings = 0;
    loop {
        run.ok(&["pub", "mixed/ping", "0"]);
        pings += 1;
        if let Ok(line) = sub_lines.recv_timeout(Duration::from_millis(300)) {
            assert!(line.contains(r#""type":["mixed","ping"]"#), "{line}");
            break;
        }
        assert!(pings < 50, "`rivulet sub` never subscribed");
    }
    let peer = PeerProcess::spawn("hat_eventer_peer.py", &["mixed", &hat.port().to_string(), name]);
    let mut native = Vec::new();
    let record = |event: Value, native: &mut Vec<Value>| {
        // Pings published before the subscription held may still come: not counted.
        if event_type(&event) != "mixed/ping" {
            native.push(event);
        }
    };
    while !native.iter().any(|e| event_type(e) == "mixed/hat") {
        record(next_event("event from the hat client"), &mut native);
    }
    run.ok(&["pub", "mixed/native", r#"{"from":"native"}"#]);
    let commands = info["commands"].as_u64().expect("the device counts commands");
    let obeyed = eventually("the LED off by hat's command", qemu, PATIENCE, || {
        device_info(run, name).filter(|info| info["led"] == false)
    });
    assert_eq!(obeyed["commands"].as_u64(), Some(commands + 1), "hat's command reached the device once: {obeyed}");
    run.ok(&["pub", "mixed/end", "true"]);
    while !native.iter().any(|e| event_type(e) == "mixed/end") {
        record(next_event("the end marker"), &mut native);
    }
    let _ = sub.kill();
    let _ = sub.wait();
    let out = peer.wait_success(PATIENCE);
    let seen: Value =
        serde_json::from_str(out.stdout.lines().last().unwrap_or("")).expect("the hat client's JSON line");

    // The native subscriber: hat's event, the device's answer to hat's command, the native
    // events, each once.
    let types: Vec<String> = native.iter().map(event_type).collect();
    assert_eq!(types.iter().filter(|t| **t == led_type).count(), 1, "{types:?}");
    let others: Vec<&String> = types.iter().filter(|t| **t != led_type).collect();
    assert_eq!(others, ["mixed/hat", "mixed/native", "mixed/end"], "each once, in order");
    assert_eq!(native[types.iter().position(|t| *t == "mixed/hat").unwrap_or(0)]["payload"]["from"], "hat");
    assert_eq!(native[types.iter().position(|t| *t == led_type).unwrap_or(0)]["payload"], false);

    // The hat client (the peer checked its ids ran strictly upward: nothing twice): its own
    // events and the native ones once each, the device's LED state once, and its telemetry.
    let got = seen["got"].as_array().expect("the hat client's events");
    let hat_type =
        |e: &Value| e["type"].as_array().map(|s| s.iter().filter_map(Value::as_str).collect::<Vec<_>>().join("/"));
    let hat_types: Vec<String> = got.iter().filter_map(hat_type).collect();
    let count = |t: &str| hat_types.iter().filter(|s| *s == t).count();
    for once in ["mixed/hat", "mixed/native", "mixed/end", &format!("command/{name}/led"), &led_type] {
        assert_eq!(count(once), 1, "{once} once: {hat_types:?}");
    }
    let led = got.iter().find(|e| hat_type(e).as_deref() == Some(led_type.as_str())).expect("the LED's state");
    assert_eq!(led["payload"]["json"], false, "the device's JSON reached hat as JSON: {led}");
    assert!(count(&format!("device/{name}/telemetry/uptime")) >= 1, "telemetry reached hat: {hat_types:?}");
    eprintln!("mixed: hat saw {} events, `rivulet sub` {}", got.len(), native.len());
}

/// `rivulet send-file image.bin --to <name>` (96 KiB); once the device has 16 KiB of it, kill -9
/// of the gateway and a new one on the same addresses. The send resumes from what the device
/// holds (not from zero), and the device verifies the image (its SHA-256 on what its flash
/// holds) and says so on its console. Returns the new gateway.
fn image_across_a_kill(mut gateway: Gateway, rivulet: &Path, qemu: &mut Qemu, name: &str, dir: &Path) -> Gateway {
    let image: Vec<u8> = (0..96 * 1024u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8).collect();
    std::fs::write(dir.join("image.bin"), &image).expect("write the image");
    let sha256: String =
        ring::digest::digest(&ring::digest::SHA256, &image).as_ref().iter().map(|b| format!("{b:02x}")).collect();
    let (cli, serial, hat) = (gateway.addr, gateway.serial, gateway.hat);
    let mut send = Command::new(rivulet);
    send.args(["send-file", "image.bin", "--to", name, "--gateway", &cli.to_string(), "--retry-for", "150"])
        .current_dir(dir)
        .env_remove("RIVULET_TOKEN");
    let sending =
        std::thread::spawn(move || rivulet_host_tests::process::run_to_end(&mut send, RECONNECT_PATIENCE * 2));
    let console = qemu.console.clone();
    // Its progress lines: `image: HELD of 98304 bytes`, every 16 KiB.
    let progressed = move || {
        let console = console.lock().unwrap_or_else(|e| e.into_inner());
        console.iter().any(|l| l.contains("image: ") && l.ends_with(" of 98304 bytes")).then_some(())
    };
    eventually("the device receiving the image", qemu, PATIENCE, progressed);
    gateway.kill();
    let killed = Instant::now();
    let gateway = Gateway::start(rivulet, dir, &cli.to_string(), &serial.to_string(), &hat.to_string());
    let output = sending.join().expect("the sender's thread");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "send-file to the device failed: {stderr}");
    assert!(stderr.contains("bytes already: sending the rest"), "it resumed, not from zero: {stderr}");
    let verified = format!("image image.bin verified: 98304 bytes, SHA-256 {sha256}");
    qemu.expect_console(&verified);
    eprintln!("image sent across a gateway kill, verified {:.1} s after it", killed.elapsed().as_secs_f64());
    gateway
}

/// A JSON event's type as a path.
fn event_type(event: &Value) -> String {
    event["type"]
        .as_array()
        .map(|s| s.iter().filter_map(Value::as_str).collect::<Vec<_>>().join("/"))
        .unwrap_or_default()
}

/// Polls `probe` until it gives a value, checking each time that QEMU still runs; fails after
/// `patience` with the console's lines.
fn eventually<T>(what: &str, qemu: &mut Qemu, patience: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + patience;
    loop {
        qemu.check();
        if let Some(value) = probe() {
            return value;
        }
        if Instant::now() > deadline {
            panic!("no {what} within {patience:?}; QEMU's console:\n{}", qemu.console().join("\n"));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Installs QEMU with apt-get when it is missing and we are root, as CI does; otherwise fails
/// with what to install.
fn ensure_qemu() {
    ensure_installed(
        || succeeds(Command::new("qemu-system-arm").arg("--version")),
        &["qemu-system-arm"],
        "qemu-system-arm",
    );
}

/// Adds the firmware's target with rustup when the toolchain lacks it (rust-toolchain.toml lists
/// it, but rustup may be told not to install on its own); otherwise fails with the command.
fn ensure_target(firmware: &Path) {
    let installed = Command::new("rustup").args(["target", "list", "--installed"]).current_dir(firmware).output();
    if let Ok(output) = &installed
        && String::from_utf8_lossy(&output.stdout).lines().any(|line| line.trim() == TARGET)
    {
        return;
    }
    eprintln!("+ rustup target add {TARGET}");
    let added = Command::new("rustup").args(["target", "add", TARGET]).current_dir(firmware).status();
    assert!(
        added.is_ok_and(|s| s.success()),
        "the {TARGET} target is missing and `rustup target add {TARGET}` failed: add it to the toolchain \
         rust-toolchain.toml names"
    );
}

/// Builds the firmware with CI's command (a no-op when CI built it already) and returns the QEMU
/// ELF. A first build takes a few minutes (embassy-stm32 for the board is part of it).
fn build_firmware(firmware: &Path) -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!("+ cd {} && cargo build --release --locked", firmware.display());
    let started = Instant::now();
    let output = Command::new(cargo)
        .args(["build", "--release", "--locked"])
        .current_dir(firmware)
        // The firmware has its own target directory and target (firmware/.cargo/config.toml).
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET")
        .stdin(Stdio::null())
        .output()
        .expect("run cargo");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the firmware build failed ({}):\n{stderr}", output.status);
    eprintln!("  {} ({:.1} s)", stderr.lines().last().unwrap_or("").trim(), started.elapsed().as_secs_f64());
    let elf = firmware.join("target").join(TARGET).join("release/rivulet-qemu");
    assert!(elf.is_file(), "the build made no {}", elf.display());
    elf
}

/// A `rivulet gateway` process, killed when dropped.
struct Gateway {
    child: Child,
    addr: SocketAddr,
    serial: SocketAddr,
    hat: SocketAddr,
}

impl Gateway {
    /// Starts the gateway with its store in `dir/data` and waits for its listening lines.
    fn start(rivulet: &Path, dir: &Path, listen: &str, serial_listen: &str, hat_listen: &str) -> Gateway {
        let mut command = Command::new(rivulet);
        command
            .args(["gateway", "--listen", listen, "--serial-listen", serial_listen, "--hat-listen", hat_listen])
            .arg("--data")
            .arg(dir.join("data"))
            .current_dir(dir)
            .env_remove("RIVULET_TOKEN");
        let (mut child, lines) = spawn_logged(&mut command, &dir.join("gateway.log"));
        // `rivulet gateway listening on ADDR (store ...)`, then `  serial:    ADDR (...)` and
        // `  hat:       ADDR (...)`.
        let (mut addr, mut serial, mut hat) = (None, None, None);
        while addr.is_none() || serial.is_none() || hat.is_none() {
            let Ok(line) = lines.recv_timeout(PATIENCE) else {
                let _ = child.kill();
                panic!("the gateway did not print its addresses; log: {}", dir.join("gateway.log").display());
            };
            let word = |prefix: &str| line.strip_prefix(prefix).and_then(|rest| rest.split_whitespace().next());
            if let Some(a) = word("rivulet gateway listening on ") {
                addr = a.parse().ok();
            }
            if let Some(s) = word("  serial:") {
                serial = s.parse().ok();
            }
            if let Some(h) = word("  hat:") {
                hat = h.parse().ok();
            }
        }
        let (Some(addr), Some(serial), Some(hat)) = (addr, serial, hat) else { unreachable!("all parsed above") };
        eprintln!("gateway: clients on {addr}, serial lines on {serial}, hat clients on {hat}");
        Gateway { child, addr, serial, hat }
    }

    /// SIGKILL: no chance to close anything.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, as a service manager stops it (it closes every link first), then waits.
    fn terminate(&mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + PATIENCE;
        while self.child.try_wait().ok().flatten().is_none() {
            assert!(Instant::now() < deadline, "the gateway did not stop after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// QEMU running the firmware, killed (with the `timeout` that wraps it) when dropped. UART0 dials
/// the gateway's serial listener and redials every second after it went away; UART1, the
/// firmware's console, is read into `console`.
struct Qemu {
    child: Child,
    console: Arc<Mutex<Vec<String>>>,
}

impl Qemu {
    fn start(elf: &Path, serial: SocketAddr) -> Qemu {
        let mut command = Command::new("timeout");
        command
            .args(["-s", "KILL", &QEMU_LIFETIME_S.to_string(), "qemu-system-arm"])
            .args(["-machine", "mps2-an386", "-cpu", "cortex-m4", "-nographic", "-monitor", "none"])
            .args(["-serial", &format!("tcp:{serial},reconnect=1"), "-serial", "stdio", "-kernel"])
            .arg(elf)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        eprintln!("+ {command:?}");
        let mut child = command.spawn().expect("spawn timeout qemu-system-arm");
        let console = Arc::new(Mutex::new(Vec::new()));
        echo_lines(child.stdout.take().expect("piped stdout"), "[qemu]", console.clone());
        echo_lines(child.stderr.take().expect("piped stderr"), "[qemu]", console.clone());
        Qemu { child, console }
    }

    fn console(&self) -> Vec<String> {
        self.console.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Fails at once if QEMU exited or the firmware panicked.
    fn check(&mut self) {
        let console = self.console();
        if let Some(panic) = console.iter().find(|line| line.starts_with("panicked")) {
            panic!("the firmware panicked: {panic}\n{}", console.join("\n"));
        }
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("QEMU exited ({status}):\n{}", console.join("\n"));
        }
    }

    /// Fails unless a console line contains `text` (the lines come asynchronously: waits a bit).
    fn expect_console(&mut self, text: &str) {
        let console = self.console.clone();
        eventually(&format!("console line with {text:?}"), self, Duration::from_secs(10), || {
            let console = console.lock().unwrap_or_else(|e| e.into_inner());
            console.iter().any(|line| line.contains(text)).then_some(())
        });
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        // `timeout` leads its own process group (it calls setpgid): end it and QEMU together.
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `rivulet query latest PATTERN`: one JSON event per line.
fn latest_events(cli: &Cli, pattern: &str) -> Vec<Value> {
    cli.ok(&["query", "latest", pattern]).lines().filter_map(|line| serde_json::from_str(line).ok()).collect()
}

/// `rivulet request NAME 1`: the device's info, or `None` while it is not connected.
fn device_info(cli: &Cli, name: &str) -> Option<Value> {
    cli.request(name, RQ_INFO).and_then(|answer| serde_json::from_slice(&answer).ok())
}
