//! The Rivulet rows: `target/release/rivulet bench --json` against the gateway, its report read
//! as it is. It measures what the other generators measure, from the same payload header, with
//! two differences the report states: its clock starts before its clients connect (not at the
//! first publication), and after the last publication it waits at most `--drain` seconds in all
//! (the others wait until nothing new arrived for that long).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::drive::{Amount, Workload};
use crate::measure::Outcome;

/// What `rivulet bench --json` prints (the fields used here).
#[derive(Debug, serde::Deserialize)]
struct Report {
    published: u64,
    expected: u64,
    delivered: u64,
    lost: u64,
    duplicated: u64,
    seconds: f64,
    msgs_per_sec: f64,
    mb_per_sec: f64,
    latency_us_p50: Option<u64>,
    latency_us_p99: Option<u64>,
    latency_us_p999: Option<u64>,
    latency_us_max: Option<u64>,
    gateway_cpu_us_per_msg: Option<f64>,
}

/// The command line for `workload`.
pub fn command(rivulet: &Path, port: u16, workload: &Workload, persisted: bool, drain: Duration) -> Command {
    let mut command = Command::new(rivulet);
    command
        .arg("bench")
        .args(["--gateway", &format!("127.0.0.1:{port}"), "--json"])
        .args(["--publishers", &workload.publishers.to_string()])
        .args(["--subscribers", &workload.subscribers.to_string()])
        .args(["--size", &workload.size.to_string()])
        .args(["--drain", &drain.as_secs_f64().to_string()]);
    match workload.amount {
        Amount::Seconds(seconds) => command.args(["--duration", &seconds.to_string()]),
        Amount::Messages(count) => command.args(["--count", &count.to_string()]),
    };
    if let Some(rate) = workload.rate {
        command.args(["--rate", &rate.to_string()]);
    }
    if persisted {
        command.arg("--persisted");
    }
    command
}

/// Runs `rivulet bench`; the outcome and the gateway CPU per message it reported itself.
pub fn bench(mut command: Command, timeout: Duration) -> Result<(Outcome, Option<f64>), String> {
    let shown = format!("{command:?}");
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {shown}: {e}"))?;
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let output = match rx.recv_timeout(timeout) {
        Ok(output) => output.map_err(|e| format!("{shown}: {e}"))?,
        Err(_) => {
            // SAFETY: kill(2) on our own child, which the thread above has not reaped (it is
            // still waiting for it: no answer came).
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            let _ = rx.recv();
            return Err(format!("{shown} did not finish within {timeout:?}; killed"));
        }
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!(
            "{shown} failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim(),
            stdout.trim()
        ));
    }
    let line = stdout.lines().rev().find(|line| line.starts_with('{')).unwrap_or_default();
    let report: Report =
        serde_json::from_str(line).map_err(|e| format!("{shown} printed no JSON report ({e}): {stdout}"))?;
    let outcome = Outcome {
        published: report.published,
        expected: report.expected,
        delivered: report.delivered,
        lost: report.lost,
        duplicated: report.duplicated,
        seconds: report.seconds,
        msgs_per_sec: report.msgs_per_sec,
        mb_per_sec: report.mb_per_sec,
        latency_us_p50: report.latency_us_p50,
        latency_us_p99: report.latency_us_p99,
        latency_us_p999: report.latency_us_p999,
        latency_us_max: report.latency_us_max,
        notes: Vec::new(),
    };
    Ok((outcome, report.gateway_cpu_us_per_msg))
}
