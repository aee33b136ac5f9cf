//! Where the gateway's CPU time goes under a 1→1 load (64 B; 1 KiB too): `perf record -e cpu-clock` (software
//! sampling; this VM has no hardware counters) on the gateway's pid while `rivulet bench` drives
//! it, then every sampled stack from `perf script`, summed two ways:
//!
//! - by kind of work: walking each stack from the leaf up, the first frame that a rule below
//!   recognises decides (so `malloc` called from the codec counts as allocation, a `tcp_sendmsg`
//!   under the connection task as TCP);
//! - by stage, inclusive: the share of samples whose stack passes through a stage's functions
//!   (the group commit, the notification fan-out, socket reads, socket writes, …).
//!
//! Call graphs are unwound with DWARF (`--call-graph dwarf`): the release build has no frame
//! pointers, and `-g` (frame pointers) gives kernel stacks but garbage above a Rust leaf.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::brokers::{Broker, Kind};
use crate::drive::{Amount, Workload};
use crate::rivulet;
use crate::runner::{Runner, System};

/// Sampling frequency (Hz) and stack bytes copied per sample.
const FREQUENCY: u32 = 2000;
const STACK_BYTES: u32 = 16384;
/// The load runs this long before sampling starts, and this long after it ends.
const WARM_UP: Duration = Duration::from_millis(1500);
const COOL_DOWN: f64 = 1.5;

/// Kinds of work, checked in this order against each frame, leaf first.
const KINDS: &[(&str, &[&str])] = &[
    (
        "allocation (malloc/free)",
        &[
            "malloc",
            "_int_free",
            "cfree",
            "__libc_free",
            "realloc",
            "calloc",
            "__rust_alloc",
            "__rust_dealloc",
            "__rust_realloc",
            "unlink_chunk",
            "tcache",
            "alloc::raw_vec::finish_grow",
        ],
    ),
    ("memory copies, clones and drops", &["memmove", "memcpy", "memset", "::clone", "drop_in_place", "__memcmp"]),
    (
        "store commit (redb, file writes, fsync)",
        &[
            "redb::",
            "rivulet_gateway::store",
            "ext4_",
            "jbd2",
            "fsync",
            "pwrite",
            "generic_perform_write",
            "filemap_",
            "iomap",
            "blk_",
            "submit_bio",
            "file_write_and_wait",
        ],
    ),
    (
        "TCP send/receive (kernel)",
        &[
            "tcp_",
            "sock_",
            "__sys_sendto",
            "__sys_recvfrom",
            "sendmsg",
            "recvmsg",
            "skb",
            "ip_",
            "__netif",
            "net_rx_action",
            "__dev_queue_xmit",
            "loopback_xmit",
            "inet_",
            "__libc_recv",
            "__send",
        ],
    ),
    (
        "tokio scheduling and wake-ups (runtime, futex, epoll)",
        &[
            "tokio::runtime",
            "futex",
            "schedule",
            "try_to_wake_up",
            "ep_poll",
            "epoll",
            "mio::",
            "wake_up",
            "sched_",
            "pick_next",
            "finish_task_switch",
            "std::thread::park",
            "hrtimer",
            "__x64_sys_nanosleep",
        ],
    ),
    ("tokio channels, Notify, watch, Mutex", &["tokio::sync"]),
    (
        "encoding and decoding (wire, postcard, model)",
        &["postcard", "serde", "rivulet_core::wire", "rivulet_core::model", "leb128"],
    ),
    ("protocol state machine (rivulet_core::session, driver)", &["rivulet_core::session", "rivulet_core::driver"]),
    (
        "connection tasks, routing, broker (rivulet_tokio::server, rivulet_gateway::broker)",
        &[
            "rivulet_core::owned",
            "rivulet_tokio::fanout",
            "rivulet_tokio::server",
            "rivulet_tokio::link",
            "rivulet_gateway::broker",
            "rivulet_gateway::frontend",
            "rivulet_gateway::access",
            "rivulet_tokio::",
        ],
    ),
    ("time and tracing", &["clock_gettime", "SystemTime", "Instant::now", "tracing"]),
];

/// Stages: a sample counts for every stage one of whose functions is on its stack. (Much is
/// inlined: `Fanout::publish` shows up as `Broker::publish`.)
const STAGES: &[(&str, &[&str])] = &[
    (
        "group commit: redb write + fsync (spawn_blocking)",
        &["RedbStore as rivulet_gateway::store::EventStore>::commit", "redb::"],
    ),
    (
        "committer task around it (gathering batches, copying events, latest table, waking registrants)",
        &["rivulet_gateway::broker::commit::committer"],
    ),
    (
        "admitting registrations: ids, event copies, queueing notifications (Broker::publish, Fanout::publish)",
        &["<impl rivulet_gateway::broker::Broker>::publish"],
    ),
    ("a connection's store worker (batching its registrations)", &["rivulet_tokio::server::pipeline::store_worker"]),
    (
        "taking a registration in (Task::on_register: ACL check, owned copy)",
        &["rivulet_tokio::server::connection::Task<H>>::on_register", "RegisterEvent as core::convert::From"],
    ),
    (
        "writing notifications out (Task::notify: encoding, framing)",
        &["rivulet_tokio::server::connection::Task<H>>::notify"],
    ),
    ("socket reads (recv)", &["__libc_recv", "sock_recvmsg", "sock_read_iter", "__libc_read"]),
    ("socket writes (send, write)", &["__send", "sock_sendmsg", "sock_write_iter", "__libc_write", "writev"]),
    ("thread wake-ups (futex wake, reschedule IPIs)", &["futex_wake", "reschedule_ipi", "try_to_wake_up"]),
    (
        "parking idle threads (futex wait, epoll_wait, context switches)",
        &["futex_wait", "ep_poll", "epoll_wait", "finish_task_switch"],
    ),
    ("page faults", &["exc_page_fault"]),
];

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Share {
    pub name: String,
    /// Fraction of the sampled CPU time.
    pub share: f64,
    /// The functions that put samples here, with their fraction of all samples.
    pub top: Vec<(String, f64)>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Profile {
    /// The gateway's set-up: the default (durable) or volatile.
    #[serde(default = "durable")]
    pub system: System,
    /// Payload bytes of the profiled 1→1 load.
    pub size: usize,
    pub perf_command: String,
    pub bench_command: String,
    pub samples: u64,
    pub sampled_cpu_seconds: f64,
    pub sampled_seconds: f64,
    /// What `rivulet bench` reported for the profiled run (perf's unwinding slows the gateway).
    pub msgs_per_sec: f64,
    pub broker_cpu_us_per_msg: Option<f64>,
    pub kinds: Vec<Share>,
    pub stages: Vec<Share>,
    pub threads: Vec<Share>,
    pub perf_data: String,
}

/// One sampled stack: leaf first.
struct Sample {
    thread: u32,
    weight: f64,
    frames: Vec<String>,
}

fn short(symbol: &str) -> String {
    // Generic arguments make Rust symbols unreadably long; keep the path and the method.
    let mut out = String::new();
    let mut depth = 0;
    for c in symbol.chars() {
        match c {
            '<' if depth > 0 || !out.is_empty() && !out.ends_with(' ') => {
                depth += 1;
                if depth == 1 {
                    out.push_str("<…>");
                }
            }
            '>' if depth > 0 => depth -= 1,
            _ if depth > 0 => {}
            _ => out.push(c),
        }
    }
    if out.chars().count() > 90 { out.chars().take(89).chain(['…']).collect() } else { out }
}

fn matches(frame: &str, patterns: &[&str]) -> bool {
    patterns.iter().any(|p| frame.contains(p)) || (patterns.contains(&"malloc") && frame == "free")
}

/// Profiles a fresh gateway under 1 publisher → 1 subscriber with `size`-byte payloads.
/// What results written before profiles named their system profiled.
fn durable() -> System {
    System::Rivulet
}

/// Profiles the gateway set up as `system` (`Rivulet`, `RivuletLog` or `RivuletVolatile`) under
/// 1→1 `size` B.
pub fn profile(runner: &Runner, system: System, size: usize, seconds: f64) -> Result<Profile, String> {
    let version = Command::new("perf").arg("--version").output();
    if !version.as_ref().is_ok_and(|o| o.status.success()) {
        return Err("perf does not run here (Debian: apt-get install linux-perf)".into());
    }
    let kind = system.kind();
    let slug = match kind {
        Kind::Rivulet => String::new(),
        Kind::RivuletLog => "-log".into(),
        _ => "-volatile".into(),
    };
    let broker = Broker::start(kind, &runner.paths, &format!("profile-{size}{slug}"))?;
    let workload = Workload {
        name: format!("profile 1→1 {size} B"),
        publishers: 1,
        subscribers: 1,
        size,
        amount: Amount::Seconds(WARM_UP.as_secs_f64() + seconds + COOL_DOWN),
        rate: None,
    };
    let command = rivulet::command(&runner.paths.rivulet, kind.port(), &workload, false, crate::runner::IDLE);
    let bench_command = std::iter::once("target/release/rivulet".to_string())
        .chain(command.get_args().map(|arg| arg.to_string_lossy().into_owned()))
        .collect::<Vec<_>>()
        .join(" ");
    let cpu_before = broker.cpu_seconds()?;
    let limit = workload.amount.limit();
    let bench = std::thread::spawn(move || rivulet::bench(command, limit));
    std::thread::sleep(WARM_UP);

    std::fs::create_dir_all(&runner.paths.kept)
        .map_err(|e| format!("cannot create {}: {e}", runner.paths.kept.display()))?;
    let data = runner.paths.kept.join(format!("perf-{size}{slug}.data"));
    let mut perf = Command::new("perf");
    perf.args(["record", "-e", "cpu-clock", "-F", &FREQUENCY.to_string()])
        .args(["--call-graph", &format!("dwarf,{STACK_BYTES}")])
        .args(["-p", &broker.pid().to_string(), "-o"])
        .arg(&data)
        .args(["--", "sleep", &seconds.to_string()]);
    let perf_command = format!(
        "perf record -e cpu-clock -F {FREQUENCY} --call-graph dwarf,{STACK_BYTES} -p <gateway pid> -- sleep {seconds}"
    );
    let recorded = perf.stdin(Stdio::null()).output().map_err(|e| format!("cannot run perf record: {e}"))?;
    let benched = bench.join().map_err(|_| "the profiled rivulet bench panicked".to_string())?;
    let cpu_after = broker.cpu_seconds();
    let stopped = broker.stop();
    if !recorded.status.success() {
        return Err(format!(
            "perf record failed ({}): {}",
            recorded.status,
            String::from_utf8_lossy(&recorded.stderr).trim()
        ));
    }
    let (outcome, _) = benched.map_err(|e| format!("the profiled load failed: {e}"))?;
    stopped?;
    let broker_cpu_us_per_msg = cpu_after
        .ok()
        .filter(|_| outcome.delivered > 0)
        .map(|after| (after - cpu_before) * 1e6 / outcome.delivered as f64);

    let samples = read_samples(&data)?;
    if samples.is_empty() {
        return Err(format!("perf recorded no samples of the gateway ({})", data.display()));
    }
    let total: f64 = samples.iter().map(|s| s.weight).sum();
    Ok(Profile {
        system,
        size,
        perf_command,
        bench_command,
        samples: samples.len() as u64,
        sampled_cpu_seconds: total / 1e9,
        sampled_seconds: seconds,
        msgs_per_sec: outcome.msgs_per_sec,
        broker_cpu_us_per_msg,
        kinds: by_kind(&samples, total),
        stages: by_stage(&samples, total),
        threads: by_thread(&samples, total),
        // As the docs show it: from the repository's root.
        perf_data: match data.strip_prefix(env!("CARGO_MANIFEST_DIR")) {
            Ok(inside) => format!("host-tests/bench/{}", inside.display()),
            Err(_) => data.display().to_string(),
        },
    })
}

/// The samples of `perf script` (weight = the sample's period in ns).
fn read_samples(data: &std::path::Path) -> Result<Vec<Sample>, String> {
    let mut script = Command::new("perf")
        .arg("script")
        .arg("-i")
        .arg(data)
        .args(["-F", "comm,tid,period,ip,sym,dso", "--no-inline"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run perf script: {e}"))?;
    let stdout = script.stdout.take().ok_or("perf script has no output")?;
    let samples = parse_script(std::io::BufReader::new(stdout).lines().map_while(Result::ok));
    let status = script.wait().map_err(|e| format!("perf script: {e}"))?;
    if !status.success() {
        return Err(format!("perf script -i {} failed ({status})", data.display()));
    }
    Ok(samples)
}

/// Parses `perf script -F comm,tid,period,ip,sym,dso` output: a header line per sample (comm,
/// tid, period), then one indented line per frame (`address symbol (dso)`), then a blank line.
fn parse_script(lines: impl Iterator<Item = String>) -> Vec<Sample> {
    let mut samples = Vec::new();
    let mut current: Option<Sample> = None;
    for line in lines {
        if line.trim().is_empty() {
            samples.extend(current.take());
        } else if !line.starts_with(char::is_whitespace) {
            samples.extend(current.take());
            // The command name may hold spaces: tid and period are the last two fields.
            let mut fields = line.split_whitespace().rev();
            let weight = fields.next().and_then(|p| p.parse().ok()).unwrap_or(0.0);
            let thread = fields.next().and_then(|t| t.parse().ok()).unwrap_or(0);
            current = Some(Sample { thread, weight, frames: Vec::new() });
        } else if let Some(sample) = current.as_mut() {
            let Some((_, rest)) = line.trim_start().split_once(' ') else { continue };
            let symbol = rest.rsplit_once(" (").map_or(rest, |(symbol, _)| symbol);
            sample.frames.push(symbol.to_string());
        }
    }
    samples.extend(current);
    samples
}

fn shares(named: HashMap<String, (f64, HashMap<String, f64>)>, total: f64) -> Vec<Share> {
    let mut shares: Vec<Share> = named
        .into_iter()
        .map(|(name, (weight, functions))| {
            let mut top: Vec<(String, f64)> = functions.into_iter().map(|(f, w)| (f, w / total)).collect();
            top.sort_by(|a, b| b.1.total_cmp(&a.1));
            top.truncate(4);
            Share { name, share: weight / total, top }
        })
        .collect();
    shares.sort_by(|a, b| b.share.total_cmp(&a.share));
    shares
}

fn by_kind(samples: &[Sample], total: f64) -> Vec<Share> {
    let mut named: HashMap<String, (f64, HashMap<String, f64>)> = HashMap::new();
    for sample in samples {
        let decided = sample.frames.iter().find_map(|frame| {
            KINDS.iter().find(|(_, patterns)| matches(frame, patterns)).map(|(kind, _)| (*kind, frame))
        });
        let (kind, frame) = match decided {
            Some((kind, frame)) => (kind.to_string(), frame.as_str()),
            None => {
                let leaf = sample.frames.first().map_or("[no stack]", String::as_str);
                ("other".to_string(), leaf)
            }
        };
        let entry = named.entry(kind).or_default();
        entry.0 += sample.weight;
        *entry.1.entry(short(frame)).or_default() += sample.weight;
    }
    shares(named, total)
}

fn by_stage(samples: &[Sample], total: f64) -> Vec<Share> {
    let mut named: HashMap<String, (f64, HashMap<String, f64>)> = HashMap::new();
    for (stage, patterns) in STAGES {
        let entry = named.entry(stage.to_string()).or_default();
        for sample in samples {
            if let Some(frame) = sample.frames.iter().find(|frame| matches(frame, patterns)) {
                entry.0 += sample.weight;
                *entry.1.entry(short(frame)).or_default() += sample.weight;
            }
        }
    }
    shares(named, total)
}

/// Async worker threads against the blocking pool (where the store commits run). A thread is an
/// async worker if any of its stacks reaches tokio's worker loop (many stop earlier: unwinding
/// through a task's poll does not always succeed), a blocking-pool thread if its stacks reach the
/// pool but never the worker loop.
fn by_thread(samples: &[Sample], total: f64) -> Vec<Share> {
    let mut seen: HashMap<u32, (bool, bool)> = HashMap::new();
    for sample in samples {
        let on = |what: &str| sample.frames.iter().any(|frame| frame.contains(what));
        let entry = seen.entry(sample.thread).or_default();
        entry.0 |= on("multi_thread::worker::run");
        entry.1 |= on("blocking::pool");
    }
    let mut named: HashMap<String, (f64, HashMap<String, f64>)> = HashMap::new();
    for sample in samples {
        let thread = match seen.get(&sample.thread) {
            Some((true, _)) => "tokio async workers",
            Some((false, true)) => "tokio blocking pool (spawn_blocking: the store commits)",
            _ => "other threads",
        };
        let entry = named.entry(thread.to_string()).or_default();
        entry.0 += sample.weight;
        *entry.1.entry(format!("thread {}", sample.thread)).or_default() += sample.weight;
    }
    shares(named, total)
}

impl Profile {
    /// The tables of the profile section; `cpu_us_per_msg` (the gateway's median CPU per message
    /// in the comparison's 1→1 64 B cells) turns shares into µs per message.
    pub fn write_markdown(&self, out: &mut String, cpu_us_per_msg: Option<f64>) {
        let _ = writeln!(
            out,
            "```\n{}\n{}\n```\n\n{} samples, {:.2} CPU seconds of the gateway over {} s of sampling ({:.2} cores). The \
             profiled load delivered {} msg/s at {} µs of gateway CPU per message: sampling with DWARF unwinding costs \
             the gateway time, so read shares, not absolute numbers; the µs/msg column applies the shares to the \
             unprofiled median of the comparison ({}). The samples stay in {} (`perf report -i` it).\n",
            self.bench_command,
            self.perf_command,
            self.samples,
            self.sampled_cpu_seconds,
            self.sampled_seconds,
            self.sampled_cpu_seconds / self.sampled_seconds.max(f64::EPSILON),
            crate::report::si(self.msgs_per_sec),
            self.broker_cpu_us_per_msg.map_or("–".into(), |v| format!("{v:.1}")),
            cpu_us_per_msg.map_or("not measured".into(), |v| format!("{v:.2} µs/msg")),
            self.perf_data,
        );
        let table = |out: &mut String, title: &str, what: &str, shares: &[Share], note: &str| {
            let _ = writeln!(
                out,
                "**{title}**{note}\n\n| {what} | share of gateway CPU | ≈ µs per message | where (share of all samples) |\n|---|---|---|---|"
            );
            for share in shares {
                let top: Vec<String> =
                    share.top.iter().map(|(f, s)| format!("`{}` {:.1} %", f.replace('|', "\\|"), s * 100.0)).collect();
                let _ = writeln!(
                    out,
                    "| {} | {:.1} % | {} | {} |",
                    share.name,
                    share.share * 100.0,
                    cpu_us_per_msg.map_or("–".into(), |cpu| format!("{:.2}", cpu * share.share)),
                    top.join(", ")
                );
            }
            let _ = writeln!(out);
        };
        table(
            out,
            "By kind of work",
            "area",
            &self.kinds,
            " (each sample counted once: the first frame from the leaf up that a rule of src/profile.rs recognises)",
        );
        table(
            out,
            "By stage",
            "stage",
            &self.stages,
            " (inclusive: a sample counts for every stage on its stack, so these overlap and do not add up)",
        );
        table(out, "By thread", "threads", &self.threads, "");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCRIPT: &str = "tokio-rt-worker 31914     500000 \n\
        \t           96565 _int_free (/usr/lib/x86_64-linux-gnu/libc.so.6)\n\
        \t          3a97a2 core::ptr::drop_in_place<rivulet_gateway::store::Commit> (/work/rivulet)\n\
        \t          3a8601 rivulet_gateway::broker::commit::committer::{{closure}} (/work/rivulet)\n\
        \t          5fe81d tokio::runtime::blocking::pool::Inner::run (/work/rivulet)\n\
        \n\
        tokio rt worker 31915     250000 \n\
        \tffffffff8200ec4c tcp_sendmsg ([kernel.kallsyms])\n\
        \t          10aba4 __send (/usr/lib/x86_64-linux-gnu/libc.so.6)\n\
        \t          2fe99a rivulet_tokio::server::Task<H>::on_register (/work/rivulet)\n\
        \n\
        tokio-rt-worker 31915     250000 \n\
        \t          7198a2 core::str::converts::from_utf8 (/work/rivulet)\n";

    #[test]
    fn script_output_is_read_into_weighted_stacks_and_classified() {
        let samples = parse_script(SCRIPT.lines().map(String::from));
        assert_eq!(samples.len(), 3);
        assert_eq!(samples[1].weight, 250000.0);
        assert_eq!(samples[1].frames, ["tcp_sendmsg", "__send", "rivulet_tokio::server::Task<H>::on_register"]);
        let kinds = by_kind(&samples, 1e6);
        let share = |name: &str| kinds.iter().find(|k| k.name.starts_with(name)).map(|k| k.share);
        assert_eq!(share("allocation"), Some(0.5));
        assert_eq!(share("TCP"), Some(0.25));
        assert_eq!(share("other"), Some(0.25));
        let stages = by_stage(&samples, 1e6);
        let stage = |name: &str| stages.iter().find(|s| s.name.starts_with(name)).map(|s| s.share);
        assert_eq!(stage("committer"), Some(0.5));
        assert_eq!(stage("socket writes"), Some(0.25));
        let threads = by_thread(&samples, 1e6);
        let thread = |name: &str| threads.iter().find(|t| t.name.starts_with(name)).map(|t| t.share);
        assert_eq!((thread("tokio blocking"), thread("other")), (Some(0.5), Some(0.5)));
    }

    #[test]
    fn long_rust_symbols_lose_their_generic_arguments() {
        assert_eq!(short("core::ptr::drop_in_place<rivulet_gateway::store::Commit>"), "core::ptr::drop_in_place<…>");
        assert_eq!(
            short("<tokio::sync::notify::Notified as core::ops::drop::Drop>::drop"),
            "<tokio::sync::notify::Notified as core::ops::drop::Drop>::drop"
        );
        assert_eq!(
            short("rivulet_tokio::server::Task<H>::run::{{closure}}"),
            "rivulet_tokio::server::Task<…>::run::{{closure}}"
        );
    }
}
