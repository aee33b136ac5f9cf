//! The README's quick start, as a test: a gateway in a fresh directory, `rivulet sub` in one
//! process, `rivulet pub` in another; the event arrives, and `rivulet query latest` returns it.
//! Then a restart keeps the event and instance numbers continue.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const RIVULET: &str = env!("CARGO_BIN_EXE_rivulet");
/// Turns a hang into a failure; never reached when things work.
const PATIENCE: Duration = Duration::from_secs(30);

/// A child process killed when dropped, with its stdout lines on a channel.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Running {
    fn spawn(args: &[&str], dir: &std::path::Path) -> Running {
        let mut child = Command::new(RIVULET)
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn rivulet");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Running { child, lines }
    }

    fn line(&self) -> String {
        self.lines.recv_timeout(PATIENCE).expect("a line from rivulet in time")
    }

    /// Waits for the gateway's `listening on ADDR` line and returns ADDR.
    fn listening_addr(&self) -> String {
        let line = self.line();
        let addr = line.split_whitespace().nth(4).expect("`rivulet gateway listening on ADDR ...`");
        assert!(line.starts_with("rivulet gateway listening on "), "unexpected first line {line:?}");
        addr.to_string()
    }

    /// Stops with SIGTERM, as a service manager would, and waits for a clean exit.
    fn terminate(mut self) {
        let pid = self.child.id().to_string();
        let status = Command::new("kill").args(["-TERM", &pid]).status().expect("run kill");
        assert!(status.success());
        let deadline = std::time::Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                assert!(status.success(), "gateway exited with {status} after SIGTERM");
                return;
            }
            assert!(std::time::Instant::now() < deadline, "gateway did not stop after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run(args: &[&str], dir: &std::path::Path) -> Output {
    let output = Command::new(RIVULET).args(args).current_dir(dir).output().expect("run rivulet");
    assert!(
        output.status.success(),
        "rivulet {args:?} failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn quick_start_pub_sub_query_and_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let gateway = Running::spawn(&["gateway", "--listen", "127.0.0.1:0"], dir.path());
    let addr = gateway.listening_addr();

    let sub = Running::spawn(&["sub", "--gateway", &addr, "--count", "1", "sensor/*"], dir.path());
    // `sub` is subscribed once it is connected; publish until it has seen one (the first
    // publication may come before its subscription is in place).
    let mut published = Vec::new();
    let received = loop {
        let out = run(&["pub", "--gateway", &addr, "sensor/room1/temp", "21.5"], dir.path());
        published.push(stdout(&out));
        if let Ok(line) = sub.lines.recv_timeout(Duration::from_millis(300)) {
            break line;
        }
        assert!(published.len() < 50, "`rivulet sub` never received an event");
    };
    assert!(received.contains(r#""type":["sensor","room1","temp"]"#), "{received}");
    assert!(received.contains(r#""payload":21.5"#), "{received}");
    assert!(published.iter().any(|p| p.trim() == received.trim()), "sub printed what pub registered");

    let latest = stdout(&run(&["query", "latest", "sensor/*", "--gateway", &addr], dir.path()));
    let last_published = published.last().expect("published").trim().to_string();
    assert_eq!(latest.trim(), last_published, "latest is the newest event of the type");
    let instance = |event: &str| -> u64 {
        let id = event.split("\"id\":[").nth(1).and_then(|rest| rest.split(']').next()).expect("an id");
        id.split(',').nth(2).and_then(|i| i.parse().ok()).expect("an instance number")
    };
    let last_instance = instance(&last_published);
    gateway.terminate();

    // Restart on the same directory: the event is still there, and new ones count on.
    let gateway = Running::spawn(&["gateway", "--listen", "127.0.0.1:0"], dir.path());
    let addr = gateway.listening_addr();
    let latest = stdout(&run(&["query", "latest", "--gateway", &addr], dir.path()));
    assert_eq!(latest.trim(), last_published, "the stored event survives a restart");
    let next = stdout(&run(&["pub", "--gateway", &addr, "sensor/room1/temp", "22"], dir.path()));
    assert!(instance(&next) > last_instance, "instance numbers continue: {next} after {last_published}");
    gateway.terminate();
}

#[test]
fn clear_errors_for_bad_input_and_no_gateway() {
    let dir = tempfile::tempdir().expect("temp dir");
    let fail = |args: &[&str]| -> String {
        let output = Command::new(RIVULET).args(args).current_dir(dir.path()).output().expect("run rivulet");
        assert!(!output.status.success(), "rivulet {args:?} should fail");
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let no_gateway = fail(&["pub", "--gateway", "127.0.0.1:1", "a/b", "1"]);
    assert!(no_gateway.contains("rivulet gateway"), "says how to start one: {no_gateway}");
    let bad_json = fail(&["pub", "--gateway", "127.0.0.1:1", "a/b", "{not json"]);
    assert!(bad_json.contains("not JSON"), "{bad_json}");
    let bad_pattern = fail(&["sub", "--gateway", "127.0.0.1:1", "a/*/b"]);
    assert!(bad_pattern.contains("last segment"), "{bad_pattern}");
}
