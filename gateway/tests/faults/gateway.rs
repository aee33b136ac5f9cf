//! The gateway under test: the real `rivulet gateway` process, its metrics, status, log and memory.

use std::fs::File;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::{self, PATIENCE, RIVULET};

pub(crate) async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, future).await.unwrap_or_else(|_| panic!("{what}: no result in {PATIENCE:?}"))
}

// ---------------------------------------------------------------------------------------------
// The gateway process

/// `rivulet gateway` in a temporary directory, with its metrics endpoint, its stderr in a log
/// file (read at the end for panics) and its stdout read to the end on a thread. Killed when
/// dropped (a failing test); [`Gateway::stop`] stops it with SIGTERM instead.
pub(crate) struct Gateway {
    child: Child,
    dir: tempfile::TempDir,
    pub(crate) addr: SocketAddr,
    metrics: SocketAddr,
    pub(crate) tls: Option<SocketAddr>,
}

impl Gateway {
    /// Starts the gateway with `flags` after the common ones and waits until it listens.
    pub(crate) fn start(flags: &[&str]) -> Gateway {
        let dir = tempfile::tempdir().expect("a temporary directory");
        Self::start_in(dir, flags)
    }

    /// The same, with a TLS listener (a self-signed certificate) beside the plain one.
    pub(crate) fn start_with_tls(flags: &[&str]) -> Gateway {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let key = rcgen::KeyPair::generate().expect("a key");
        let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).expect("params");
        let cert = params.self_signed(&key).expect("a certificate");
        std::fs::write(dir.path().join("server.pem"), cert.pem()).expect("write the certificate");
        std::fs::write(dir.path().join("server.key"), key.serialize_pem()).expect("write the key");
        let tls = ["--tls-listen", "127.0.0.1:0", "--tls-cert", "server.pem", "--tls-key", "server.key"];
        Self::start_in(dir, &[&tls[..], flags].concat())
    }

    /// The gateway on a disk that is full once its files reach `kib` KiB: run under bash with
    /// `ulimit -f` (writes past it fail with `EFBIG`; SIGXFSZ ignored so the write fails instead
    /// of killing the process).
    pub(crate) fn start_with_file_limit(kib: u64, flags: &[&str]) -> Gateway {
        Self::start_limited(&format!("trap '' XFSZ; ulimit -f {kib}"), flags)
    }

    /// The gateway with `config` as its config file (`--config gateway.toml`).
    pub(crate) fn start_with_config(config: &str, flags: &[&str]) -> Gateway {
        let dir = tempfile::tempdir().expect("a temporary directory");
        std::fs::write(dir.path().join("gateway.toml"), config).expect("write the config");
        Self::start_in(dir, &[&["--config", "gateway.toml"], flags].concat())
    }

    /// The gateway with at most `n` open file descriptors (`ulimit -n`).
    pub(crate) fn start_with_fd_limit(n: u64, flags: &[&str]) -> Gateway {
        Self::start_limited(&format!("ulimit -n {n}"), flags)
    }

    /// The gateway started by bash after `limits` (shell commands).
    fn start_limited(limits: &str, flags: &[&str]) -> Gateway {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut bash = Command::new("bash");
        let script = format!("{limits}; exec \"$0\" \"$@\"");
        bash.args(["-c", &script, RIVULET]);
        Self::start_command(dir, bash, flags)
    }

    fn start_in(dir: tempfile::TempDir, flags: &[&str]) -> Gateway {
        Self::start_command(dir, Command::new(RIVULET), flags)
    }

    /// Starts `command` (`rivulet`, or what runs it) with `gateway` and the flags.
    fn start_command(dir: tempfile::TempDir, mut command: Command, flags: &[&str]) -> Gateway {
        let log = File::create(dir.path().join("gateway.log")).expect("the log file");
        let mut child = command
            .args(["gateway", "--listen", "127.0.0.1:0", "--metrics", "127.0.0.1:0", "--data", "data"])
            .args(["--commit-ms", "2"])
            .args(flags)
            .current_dir(dir.path())
            .env_remove("RIVULET_TOKEN")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("spawn rivulet gateway");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = std_mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                // The receiver goes after the start; keep reading so the gateway never blocks.
                let _ = tx.send(line);
            }
        });
        let (mut addr, mut metrics, mut tls) = (None, None, None);
        let parse = |text: &str| text.parse::<SocketAddr>().ok();
        loop {
            let line = lines.recv_timeout(PATIENCE).expect("the gateway's start lines");
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["rivulet", "gateway", "listening", "on", at, ..] => addr = parse(at),
                ["metrics:", url] => {
                    metrics = url.strip_prefix("http://").and_then(|u| u.strip_suffix("/metrics")).and_then(parse);
                }
                ["TLS:", at, ..] => tls = parse(at),
                ["stop", "with", "Ctrl-C"] => break,
                _ => {}
            }
        }
        let addr = addr.expect("a `listening on ADDR` line");
        let metrics = metrics.expect("a `metrics: http://ADDR/metrics` line");
        Gateway { child, dir, addr, metrics, tls }
    }

    /// The current counters and gauges.
    pub(crate) async fn metrics(&self) -> Metrics {
        let mut stream = within("metrics", TcpStream::connect(self.metrics)).await.expect("the metrics endpoint");
        stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: gateway\r\n\r\n").await.expect("send the scrape");
        let mut page = String::new();
        within("scrape", stream.read_to_string(&mut page)).await.expect("read the scrape");
        assert!(page.starts_with("HTTP/1.1 200 OK"), "{page}");
        Metrics(page)
    }

    /// Waits until `metric` reaches `at_least` (it only grows), and returns it.
    pub(crate) async fn metric_reaches(&self, metric: &str, at_least: u64) -> u64 {
        let reaching = async {
            loop {
                let value = self.metrics().await.get(metric);
                if value >= at_least {
                    return value;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        match tokio::time::timeout(PATIENCE, reaching).await {
            Ok(value) => value,
            Err(_) => panic!("{metric} did not reach {at_least} in {PATIENCE:?}; the gateway's log:\n{}", self.log()),
        }
    }

    /// The gateway's directory (its working directory).
    pub(crate) fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Where its metrics endpoint listens.
    pub(crate) fn metrics_addr(&self) -> SocketAddr {
        self.metrics
    }

    /// What the gateway logged so far.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("gateway.log")).expect("the gateway's log")
    }

    /// Waits until the gateway lists exactly `n` clients with an accepted link.
    pub(crate) async fn clients_become(&self, n: u64) {
        within(&format!("{n} clients listed"), async {
            while self.metrics().await.get("rivulet_connections") != n {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
    }

    /// Resident memory (`VmRSS`) and its peak so far (`VmHWM`), in KiB.
    pub(crate) fn memory_kib(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).expect("/proc/PID/status");
        let field = |name: &str| -> u64 {
            let line = status.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("{name} in {status}"));
            line.split_whitespace().nth(1).and_then(|kib| kib.parse().ok()).expect("a number of kB")
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// `rivulet status` against this gateway: its JSON.
    pub(crate) async fn status(&self) -> serde_json::Value {
        let (addr, dir) = (self.addr.to_string(), self.dir.path().to_path_buf());
        let stdout = tokio::task::spawn_blocking(move || common::ok(&["status", "--gateway", &addr], &dir, &[]))
            .await
            .expect("rivulet status");
        serde_json::from_str(&stdout).expect("status is JSON")
    }

    /// Stops with SIGTERM, waits for a clean exit, and checks the log for panics. Returns the log.
    pub(crate) fn stop(mut self) -> String {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().expect("run kill").success());
        let deadline = Instant::now() + PATIENCE;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status;
            }
            assert!(Instant::now() < deadline, "the gateway did not stop after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        };
        let log = self.log();
        assert!(status.success(), "the gateway exited with {status}; its log:\n{log}");
        assert!(!log.contains("panicked"), "the gateway panicked; its log:\n{log}");
        log
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One scrape of `/metrics`.
pub(crate) struct Metrics(String);

impl Metrics {
    /// A family's value: the sum of its samples (one per front-end, say).
    pub(crate) fn get(&self, name: &str) -> u64 {
        let of_family =
            |sample: &&str| sample.strip_prefix(name).is_some_and(|rest| rest.is_empty() || rest.starts_with('{'));
        let values: Vec<f64> = (self.0.lines())
            .filter_map(|l| l.split_once(' '))
            .filter(|(sample, _)| of_family(sample))
            .filter_map(|(_, value)| value.parse().ok())
            .collect();
        assert!(!values.is_empty(), "no metric {name} in\n{}", self.0);
        values.iter().sum::<f64>() as u64
    }
}
