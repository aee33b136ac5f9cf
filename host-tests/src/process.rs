//! Processes for the tests that run real programs (`tests/qemu_device.rs`, `tests/tap_devices.rs`):
//! the `rivulet` binary, a command run to its end with a deadline, a missing tool installed with
//! apt-get, and a child's output read line by line.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Where concurrent test runs take turns to install with apt-get (`flock(2)`, as `flock(1)` takes it).
const INSTALL_LOCK: &str = "/tmp/rivulet-apt-install.lock";
/// How long apt-get waits for dpkg's lock, held by another apt (ours or not).
const APT_LOCK_TIMEOUT: &str = "DPkg::Lock::Timeout=600";

/// The `rivulet` binary next to the running test's profile directory (`target/debug/rivulet` for
/// `target/debug/deps/<test>-*`), which `cargo test --workspace` builds for the gateway's own
/// tests; built here when missing (refresh it with `cargo build -p rivulet-gateway` after
/// changing the gateway).
pub fn gateway_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's path");
    let profile = exe.parent().and_then(Path::parent).expect("target/<profile>/deps/<test>");
    let rivulet = profile.join("rivulet");
    if !rivulet.is_file() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("host-tests sits in the workspace");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut args = vec!["build", "-p", "rivulet-gateway", "--bin", "rivulet"];
        if profile.file_name().is_some_and(|p| p == "release") {
            args.push("--release");
        }
        eprintln!("+ cargo {} ({} is missing)", args.join(" "), rivulet.display());
        let status = Command::new(cargo).args(&args).current_dir(root).status().expect("run cargo");
        assert!(status.success() && rivulet.is_file(), "building the gateway failed ({status})");
    }
    rivulet
}

/// Runs `command` to its end, with no stdin, and returns what it wrote; both pipes are drained
/// on threads of their own meanwhile, so that a long output cannot block it. Fails the test,
/// naming the command, if it cannot start or is not done within `patience` (it is killed then).
pub fn run_to_end(command: &mut Command, patience: Duration) -> Output {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    let stdout = read_to_end(child.stdout.take());
    let stderr = read_to_end(child.stderr.take());
    let deadline = Instant::now() + patience;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap_or_else(|e| panic!("waiting for {command:?}: {e}")) {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{command:?} did not finish within {patience:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output { status, stdout: stdout.join().unwrap_or_default(), stderr: stderr.join().unwrap_or_default() }
}

/// Reads `pipe` (if any) to its end on a thread of its own; what came before an error counts.
fn read_to_end(pipe: Option<impl Read + Send + 'static>) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        bytes
    })
}

/// Starts `command`, a long-lived process such as `rivulet gateway`, with no stdin and its stderr
/// appended to the file `log`; returns it and the lines of its stdout. Fails the test, naming the
/// command, if it cannot start.
pub fn spawn_logged(command: &mut Command, log: &Path) -> (Child, Receiver<String>) {
    let log = File::options().create(true).append(true).open(log).expect("the log file");
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    let stdout = lines(child.stdout.take().expect("piped stdout"));
    (child, stdout)
}

/// Runs `command` quietly; true if it ran and succeeded.
pub fn succeeds(command: &mut Command) -> bool {
    command.stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

/// This process's effective user id (`Uid:` in `/proc/self/status` lists the real, effective,
/// saved and file-system ids), if it can be read.
pub fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let ids = status.lines().find_map(|line| line.strip_prefix("Uid:"))?;
    ids.split_whitespace().nth(1)?.parse().ok()
}

/// Makes sure `check` holds, installing `packages` with apt-get when it does not, as CI does;
/// `what` names what is missing. Installs only as root with apt-get at hand; otherwise fails the
/// test with what to install: a missing tool never passes silently.
///
/// Concurrent test runs take turns through a lock file (`flock`), checking again once it is
/// theirs, and apt-get waits for dpkg's own lock.
pub fn ensure_installed(check: impl Fn() -> bool, packages: &[&str], what: &str) {
    if check() {
        return;
    }
    let list = packages.join(" ");
    let root = effective_uid() == Some(0);
    let apt = succeeds(Command::new("apt-get").arg("--version"));
    assert!(
        root && apt,
        "{what} is missing and cannot be installed here (needs root and apt-get): install {list}, e.g. \
         `sudo apt-get install {list}` (Debian/Ubuntu) or your distribution's equivalent"
    );
    let lock = File::options().create(true).append(true).open(INSTALL_LOCK).expect("the install lock file");
    lock.lock().expect("take the install lock");
    if check() {
        return; // another test run installed it while this one waited
    }
    eprintln!("+ apt-get install -y {list} ({what} is missing)");
    let apt_get = |args: &[&str]| {
        Command::new("apt-get")
            .args(["-o", APT_LOCK_TIMEOUT])
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .status()
            .expect("run apt-get")
    };
    let mut status = apt_get(&["update", "-qq"]);
    if status.success() {
        status = apt_get(&[&["install", "-y", "-qq"][..], packages].concat());
    }
    assert!(
        status.success() && check(),
        "installing {list} failed ({status}); install it by hand: apt-get install -y {list}"
    );
}

/// Lines of a child's pipe, read by a thread of their own, until the pipe closes or the receiver
/// goes away.
pub fn lines(pipe: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Lines of a child's pipe, read by a thread of their own: each echoed to stderr after `prefix`
/// (`[qemu] ...`) and kept in `kept`, for failure messages.
pub fn echo_lines(pipe: impl Read + Send + 'static, prefix: &'static str, kept: Arc<Mutex<Vec<String>>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            eprintln!("{prefix} {line}");
            kept.lock().unwrap_or_else(|e| e.into_inner()).push(line);
        }
    });
}

/// The `rivulet` CLI against a gateway: `rivulet ARGS --gateway GATEWAY`, without
/// `RIVULET_TOKEN`, each call run to its end within `patience`.
pub struct Cli<'a> {
    rivulet: Box<dyn Fn() -> Command + 'a>,
    gateway: String,
    patience: Duration,
}

impl<'a> Cli<'a> {
    /// `rivulet()` makes the command that runs the binary: `Command::new(path)`, or the same
    /// through `nsenter` into a network namespace, with a working directory if it needs one.
    pub fn new(rivulet: impl Fn() -> Command + 'a, gateway: impl ToString, patience: Duration) -> Cli<'a> {
        Cli { rivulet: Box::new(rivulet), gateway: gateway.to_string(), patience }
    }

    /// The gateway's address, as passed to `--gateway`.
    pub fn gateway(&self) -> &str {
        &self.gateway
    }

    /// Runs `rivulet ARGS --gateway GATEWAY` to its end.
    pub fn output(&self, args: &[&str]) -> Output {
        let mut command = (self.rivulet)();
        command.args(args).args(["--gateway", &self.gateway]).env_remove("RIVULET_TOKEN");
        run_to_end(&mut command, self.patience)
    }

    /// Runs a command that must succeed; returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let output = self.output(args);
        assert!(output.status.success(), "rivulet {args:?}: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// `rivulet request DEVICE TYPE`: the device's answer, or `None` (the reason goes to stderr)
    /// while it cannot answer, e.g. before it is connected.
    pub fn request(&self, device: &str, request_type: u64) -> Option<Vec<u8>> {
        let output = self.output(&["request", device, &request_type.to_string()]);
        if !output.status.success() {
            eprintln!("  request {device} {request_type}: {}", String::from_utf8_lossy(&output.stderr).trim());
            return None;
        }
        Some(output.stdout)
    }
}
