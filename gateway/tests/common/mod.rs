//! What the process tests share: the real `rivulet` binary, spawned in the background
//! ([`Running`]) or run to its end ([`run`], [`ok`], [`fails`]), never waiting longer than
//! [`PATIENCE`]; and a test PKI for the TLS tests ([`certificates`]).

// Each test binary (quickstart, auth, crash) uses only a part of this module.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub const RIVULET: &str = env!("CARGO_BIN_EXE_rivulet");
/// Turns a hang into a failure; never reached when things work.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// `rivulet args` in `dir`, with `env` and no RIVULET_TOKEN unless `env` sets it.
fn command(args: &[&str], dir: &Path, env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(RIVULET);
    command.args(args).env_remove("RIVULET_TOKEN").envs(env.iter().copied()).current_dir(dir).stdin(Stdio::null());
    command
}

/// A child process killed when dropped, with its stdout lines on a channel.
pub struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Running {
    /// Starts `rivulet args` in `dir`, with `env` (and no RIVULET_TOKEN unless `env` sets it);
    /// its stderr goes to the test's.
    pub fn spawn(args: &[&str], dir: &Path, env: &[(&str, &str)]) -> Running {
        let mut child =
            command(args, dir, env).stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().expect("spawn rivulet");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        // Reads stdout to its end, so the child never blocks on a full pipe.
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

    /// The next line of stdout; fails the test if none comes within [`PATIENCE`].
    pub fn line(&self) -> String {
        self.lines.recv_timeout(PATIENCE).expect("a line from rivulet in time")
    }

    /// The next line of stdout if one comes within `wait` (and stdout is still open).
    pub fn line_within(&self, wait: Duration) -> Option<String> {
        self.lines.recv_timeout(wait).ok()
    }

    /// Waits for the gateway's `listening on ADDR` line and returns ADDR.
    pub fn listening_addr(&self) -> String {
        let line = self.line();
        assert!(line.starts_with("rivulet gateway listening on "), "unexpected first line {line:?}");
        let addr = line.split_whitespace().nth(4).expect("`rivulet gateway listening on ADDR ...`");
        addr.to_string()
    }

    /// Waits for the gateway's `listening on ADDR` line and returns ADDR's port.
    pub fn listening_port(&self) -> u16 {
        let addr = self.listening_addr();
        addr.rsplit(':').next().and_then(|port| port.parse().ok()).expect("ADDR ends with a port")
    }

    /// Stops with SIGTERM, as a service manager would, and waits for a clean exit.
    pub fn terminate(mut self) {
        let pid = self.child.id().to_string();
        let status = Command::new("kill").args(["-TERM", &pid]).status().expect("run kill");
        assert!(status.success());
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                assert!(status.success(), "gateway exited with {status} after SIGTERM");
                return;
            }
            assert!(Instant::now() < deadline, "gateway did not stop after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops with SIGKILL (`kill -9`: no chance to clean up) and waits for the end.
    pub fn kill(mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("wait");
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `rivulet args` in `dir` to its end, with `env` (and no RIVULET_TOKEN unless `env` sets
/// it); fails the test if it takes longer than [`PATIENCE`].
pub fn run(args: &[&str], dir: &Path, env: &[(&str, &str)]) -> Output {
    let mut child =
        command(args, dir, env).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn rivulet");
    // Drain both pipes while waiting, so that a long output cannot block the child.
    let stdout = read_to_end(child.stdout.take().expect("piped stdout"));
    let stderr = read_to_end(child.stderr.take().expect("piped stderr"));
    let deadline = Instant::now() + PATIENCE;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("rivulet {args:?} did not finish");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = stdout.join().expect("stdout reader");
    let stderr = stderr.join().expect("stderr reader");
    Output { status, stdout, stderr }
}

/// Reads `pipe` to its end on a thread of its own.
fn read_to_end(mut pipe: impl Read + Send + 'static) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        pipe.read_to_end(&mut bytes).expect("read rivulet's output");
        bytes
    })
}

/// Runs a command that must succeed; returns its stdout.
pub fn ok(args: &[&str], dir: &Path, env: &[(&str, &str)]) -> String {
    let output = run(args, dir, env);
    assert!(
        output.status.success(),
        "rivulet {args:?} failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Runs a command that must fail; returns its stderr.
pub fn fails(args: &[&str], dir: &Path, env: &[(&str, &str)]) -> String {
    let output = run(args, dir, env);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!output.status.success(), "rivulet {args:?} should fail; stderr: {stderr}");
    assert_ne!(output.status.code(), Some(0));
    stderr
}

/// Writes `ca.pem`, `other-ca.pem` (trusted by nobody here) and a server certificate for
/// 127.0.0.1 and localhost signed by the first (`server.pem`, `server.key`).
pub fn certificates(dir: &Path) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca = |name: &str| {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        (params, key)
    };
    let (ca_params, ca_key) = ca("test CA");
    std::fs::write(dir.join("ca.pem"), ca_params.self_signed(&ca_key).unwrap().pem()).unwrap();
    let (other, other_key) = ca("someone else");
    std::fs::write(dir.join("other-ca.pem"), other.self_signed(&other_key).unwrap().pem()).unwrap();
    let key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    let cert = server.signed_by(&key, &Issuer::new(ca_params, ca_key)).unwrap();
    std::fs::write(dir.join("server.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("server.key"), key.serialize_pem()).unwrap();
}
