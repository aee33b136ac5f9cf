//! Starting and stopping the brokers (brokers/README.md), and what `/proc` says about them: CPU
//! time (utime + stime of all threads) and peak resident memory.

use std::fs::File;
use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

pub const RIVULET_PORT: u16 = 17780;
pub const MOSQUITTO_PORT: u16 = 18830;
pub const MOSQUITTO_PERSISTENT_PORT: u16 = 18831;
pub const NATS_PORT: u16 = 14222;
pub const JETSTREAM_PORT: u16 = 14223;
pub const RELAY_PORT: u16 = 17790;

/// What brokers/mosquitto-persistent.conf says where `persistence_location` goes: each cell's
/// own directory, so no cell loads the sessions an earlier one saved.
const PERSISTENCE_PLACEHOLDER: &str = "@PERSISTENCE_LOCATION@";

/// How long a broker may take to listen.
const START_PATIENCE: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Rivulet,
    /// The gateway with the bench's event types volatile (brokers/rivulet-volatile.toml).
    RivuletVolatile,
    /// The gateway on the log store (brokers/rivulet-log.toml).
    RivuletLog,
    Mosquitto,
    /// mosquitto with `persistence true` (brokers/mosquitto-persistent.conf).
    MosquittoPersistent,
    Nats,
    /// nats-server with JetStream and its file store in the cell's directory.
    JetStream,
    Relay,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Rivulet => "rivulet gateway",
            Kind::RivuletVolatile => "rivulet gateway (volatile bench/*)",
            Kind::RivuletLog => "rivulet gateway (store engine log)",
            Kind::Mosquitto => "mosquitto",
            Kind::MosquittoPersistent => "mosquitto (persistence true)",
            Kind::Nats => "nats-server",
            Kind::JetStream => "nats-server -js",
            Kind::Relay => "raw TCP relay",
        }
    }

    pub fn port(self) -> u16 {
        match self {
            Kind::Rivulet | Kind::RivuletVolatile | Kind::RivuletLog => RIVULET_PORT,
            Kind::Mosquitto => MOSQUITTO_PORT,
            Kind::MosquittoPersistent => MOSQUITTO_PERSISTENT_PORT,
            Kind::Nats => NATS_PORT,
            Kind::JetStream => JETSTREAM_PORT,
            Kind::Relay => RELAY_PORT,
        }
    }

    fn slug(self) -> &'static str {
        match self {
            Kind::Rivulet => "rivulet",
            Kind::RivuletVolatile => "rivulet-volatile",
            Kind::RivuletLog => "rivulet-log",
            Kind::Mosquitto => "mosquitto",
            Kind::MosquittoPersistent => "mosquitto-persistent",
            Kind::Nats => "nats",
            Kind::JetStream => "jetstream",
            Kind::Relay => "relay",
        }
    }
}

/// Where things are.
#[derive(Debug, Clone)]
pub struct Paths {
    /// `target/release/rivulet` of the root workspace.
    pub rivulet: PathBuf,
    /// This program (it is also the relay).
    pub compare: PathBuf,
    /// brokers/ with the configs.
    pub configs: PathBuf,
    /// Logs and data of this run.
    pub work: PathBuf,
    /// What outlives the run's work directory (perf.data): the crate's target/.
    pub kept: PathBuf,
}

pub struct Broker {
    pub kind: Kind,
    pub log: PathBuf,
    child: Child,
    data: Option<PathBuf>,
}

impl Broker {
    /// Starts a fresh broker of `kind` and waits until it listens; `tag` names its log and data.
    pub fn start(kind: Kind, paths: &Paths, tag: &str) -> Result<Broker, String> {
        let addr = SocketAddr::from(([127, 0, 0, 1], kind.port()));
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Err(format!(
                "cannot start {}: something already listens on {addr} (an earlier run's broker?); stop it first",
                kind.name()
            ));
        }
        let log = paths.work.join(format!("{}-{tag}.log", kind.slug()));
        let out = File::create(&log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| format!("cannot reopen {}: {e}", log.display()))?;
        let mut data = None;
        let mut command = match kind {
            Kind::Rivulet | Kind::RivuletVolatile | Kind::RivuletLog => {
                let dir = paths.work.join(format!("data-{tag}"));
                let config = format!("{}.toml", kind.slug());
                let mut command = Command::new(&paths.rivulet);
                command.arg("gateway").arg("--config").arg(paths.configs.join(config)).arg("--data").arg(&dir);
                data = Some(dir);
                command
            }
            Kind::Mosquitto => {
                let mut command = Command::new("mosquitto");
                command.arg("-c").arg(paths.configs.join("mosquitto.conf"));
                command
            }
            Kind::MosquittoPersistent => {
                let dir = paths.work.join(format!("mosquitto-data-{tag}"));
                std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
                // Started as root, mosquitto runs as the user `mosquitto` (its `user` option's
                // default) by the time it saves: without this it cannot write mosquitto.db there
                // ("Error: Permission denied." at shutdown). The directory is this cell's alone.
                std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777))
                    .map_err(|e| format!("cannot open {} to the mosquitto user: {e}", dir.display()))?;
                let config = persistent_mosquitto_config(paths, &dir, tag)?;
                data = Some(dir);
                let mut command = Command::new("mosquitto");
                command.arg("-c").arg(config);
                command
            }
            Kind::Nats => {
                let mut command = Command::new("nats-server");
                command.args(["-a", "127.0.0.1", "-p", &NATS_PORT.to_string()]);
                command
            }
            Kind::JetStream => {
                // nats-server creates the directory (and a `jetstream/` in it).
                let dir = paths.work.join(format!("jetstream-{tag}"));
                let mut command = Command::new("nats-server");
                command.args(["-a", "127.0.0.1", "-p", &JETSTREAM_PORT.to_string(), "-js", "-sd"]).arg(&dir);
                data = Some(dir);
                command
            }
            Kind::Relay => {
                let mut command = Command::new(&paths.compare);
                command.args(["relay", "--listen", &addr.to_string()]);
                command
            }
        };
        command.stdin(Stdio::null()).stdout(out).stderr(err);
        let child = command.spawn().map_err(|e| {
            format!("cannot start {} ({:?}): {e}; run.sh installs mosquitto and nats-server", kind.name(), command)
        })?;
        let mut broker = Broker { kind, log, child, data };
        broker.wait_listening(addr)?;
        Ok(broker)
    }

    fn wait_listening(&mut self, addr: SocketAddr) -> Result<(), String> {
        let until = Instant::now() + START_PATIENCE;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "{} exited ({status}) before listening on {addr}; its log {}:\n{}",
                    self.kind.name(),
                    self.log.display(),
                    tail(&self.log)
                ));
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if Instant::now() > until {
                return Err(format!(
                    "{} does not listen on {addr} after {START_PATIENCE:?}; its log {}:\n{}",
                    self.kind.name(),
                    self.log.display(),
                    tail(&self.log)
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU seconds (user + system, all threads) the broker has used so far.
    pub fn cpu_seconds(&self) -> Result<f64, String> {
        let stat = read_proc(self.pid(), "stat").map_err(|e| format!("{}: {e}", self.kind.name()))?;
        let times = proc_times(&stat).ok_or_else(|| format!("cannot read /proc/{}/stat: {stat}", self.pid()))?;
        Ok((times[0] + times[1]) as f64 / clock_ticks())
    }

    /// Peak resident memory in MiB (VmHWM).
    pub fn peak_rss_mib(&self) -> Option<f64> {
        status_kib(self.pid(), "VmHWM:").map(|kib| kib as f64 / 1024.0)
    }

    /// Watches the broker's resident memory; past `limit_mib` kills it (so a broker buffering
    /// without bound cannot take the machine down) and says so.
    pub fn guard(&self, limit_mib: u64) -> MemoryGuard<'_> {
        let (pid, stop, tripped) = (self.pid(), Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
        let (watching, tripping) = (stop.clone(), tripped.clone());
        let thread = std::thread::spawn(move || {
            while !watching.load(Relaxed) {
                if status_kib(pid, "VmRSS:").is_some_and(|kib| kib / 1024 > limit_mib) {
                    // SAFETY: kill(2) on the pid of our own child, which cannot have been reaped:
                    // `MemoryGuard::finish` joins this thread and borrows the broker, so it runs
                    // before `Broker::stop` waits for the child.
                    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                    tripping.store(true, Relaxed);
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        MemoryGuard { stop, tripped, limit_mib, thread: Some(thread), _broker: std::marker::PhantomData }
    }

    /// SIGTERM, then SIGKILL after 10 s; removes the data directory. Says if it had died.
    pub fn stop(mut self) -> Result<(), String> {
        let result = match self.child.try_wait() {
            Ok(Some(status)) => Err(format!(
                "{} had exited ({status}) before it was stopped; its log {}:\n{}",
                self.kind.name(),
                self.log.display(),
                tail(&self.log)
            )),
            _ => {
                // SAFETY: kill(2) on our own child, not reaped yet (try_wait said it runs).
                unsafe { libc::kill(self.pid() as i32, libc::SIGTERM) };
                let until = Instant::now() + Duration::from_secs(10);
                while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < until {
                    std::thread::sleep(Duration::from_millis(10));
                }
                if matches!(self.child.try_wait(), Ok(None)) {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    Err(format!("{} did not stop within 10 s of SIGTERM; killed", self.kind.name()))
                } else {
                    Ok(())
                }
            }
        };
        if let Some(data) = self.data.take() {
            let _ = std::fs::remove_dir_all(data);
        }
        result
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if let Some(data) = self.data.take() {
            let _ = std::fs::remove_dir_all(data);
        }
    }
}

pub struct MemoryGuard<'a> {
    stop: Arc<AtomicBool>,
    tripped: Arc<AtomicBool>,
    limit_mib: u64,
    thread: Option<std::thread::JoinHandle<()>>,
    /// The broker cannot be stopped (its child reaped) while this watches it.
    _broker: std::marker::PhantomData<&'a Broker>,
}

impl MemoryGuard<'_> {
    fn halt(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }

    /// Stops watching; an error if the broker had to be killed.
    pub fn finish(mut self) -> Result<(), String> {
        self.halt();
        match self.tripped.load(Relaxed) {
            true => Err(format!("killed: its resident memory passed {} MiB", self.limit_mib)),
            false => Ok(()),
        }
    }
}

impl Drop for MemoryGuard<'_> {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Writes brokers/mosquitto-persistent.conf with `dir` as its `persistence_location` into the
/// work directory; returns the path written.
fn persistent_mosquitto_config(paths: &Paths, dir: &Path, tag: &str) -> Result<PathBuf, String> {
    let template = paths.configs.join("mosquitto-persistent.conf");
    let text = std::fs::read_to_string(&template).map_err(|e| format!("cannot read {}: {e}", template.display()))?;
    if !text.contains(PERSISTENCE_PLACEHOLDER) {
        return Err(format!("{} has no {PERSISTENCE_PLACEHOLDER} to fill in", template.display()));
    }
    let config = paths.work.join(format!("mosquitto-persistent-{tag}.conf"));
    std::fs::write(&config, text.replace(PERSISTENCE_PLACEHOLDER, &dir.display().to_string()))
        .map_err(|e| format!("cannot write {}: {e}", config.display()))?;
    Ok(config)
}

/// The last lines of a log, for error messages.
pub fn tail(path: &Path) -> String {
    let mut text = String::new();
    if let Ok(mut file) = File::open(path) {
        let _ = file.read_to_string(&mut text);
    }
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(15)..].join("\n");
    if tail.is_empty() { "(empty)".into() } else { tail }
}

fn read_proc(pid: u32, file: &str) -> Result<String, String> {
    std::fs::read_to_string(format!("/proc/{pid}/{file}")).map_err(|e| format!("cannot read /proc/{pid}/{file}: {e}"))
}

/// utime, stime, cutime, cstime (clock ticks) from the text of a `/proc/PID/stat`.
pub fn proc_times(stat: &str) -> Option<[u64; 4]> {
    // After the command name in parentheses: state is field 3, utime field 14 … cstime field 17.
    let fields: Vec<&str> = stat.get(stat.rfind(')')? + 1..)?.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse().ok();
    Some([field(14)?, field(15)?, field(16)?, field(17)?])
}

/// CPU seconds this process used, plus those of its children it has waited for (`rivulet bench`).
pub fn own_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    proc_times(&stat).map_or(0.0, |t| t.iter().sum::<u64>() as f64 / clock_ticks())
}

fn status_kib(pid: u32, key: &str) -> Option<u64> {
    let status = read_proc(pid, "status").ok()?;
    let line = status.lines().find(|line| line.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

pub fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

/// Busy and total CPU time of the whole machine (clock ticks, all cores) from `/proc/stat`.
pub fn machine_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let values: Vec<u64> =
        stat.lines().next().unwrap_or_default().split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
    let total: u64 = values.iter().take(8).sum();
    let idle = values.get(3).copied().unwrap_or(0) + values.get(4).copied().unwrap_or(0);
    (total - idle.min(total), total)
}

/// The 1-minute load average.
pub fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_times_survive_spaces_and_parentheses_in_the_name() {
        let stat = "4242 (tokio (rt) w) S 1 4242 4242 0 -1 4194560 100 0 0 0 311 52 7 3 20 0 2 0 9 0 0";
        assert_eq!(proc_times(stat), Some([311, 52, 7, 3]));
        assert_eq!(proc_times("garbage"), None);
    }
}
