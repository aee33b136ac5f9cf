//! One comparison run: every workload against every system, each cell against a fresh broker,
//! repeated (repeats interleaved, so a busy minute on the shared machine spreads over all systems
//! instead of landing on one), with the broker's CPU time from `/proc` around each cell.

use std::time::{Duration, Instant};

use rumqttc::QoS;

use crate::brokers::{self, Broker, Kind, Paths};
use crate::drive::{Amount, Workload, drive};
use crate::measure::Outcome;
use crate::{mqtt, nats, relay, rivulet};

/// After the last publication, how long without a new delivery ends a cell (`rivulet bench
/// --drain` for the gateway rows).
pub const IDLE: Duration = Duration::from_secs(3);
/// After a cell, before the broker's CPU time is read again: it finishes closing the connections.
const SETTLE: Duration = Duration::from_millis(200);
/// A broker whose resident memory passes this is killed (and the cell reported failed).
const MEMORY_LIMIT_MIB: u64 = 6 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
pub enum System {
    Rivulet,
    RivuletPersisted,
    /// The gateway with `volatile = ["bench/*"]`: routed, never stored.
    RivuletVolatile,
    /// The gateway with `[store] engine = "log"`: durable, on the append-only log store.
    RivuletLog,
    MosquittoQos0,
    MosquittoQos1,
    /// QoS 1 against mosquitto with `persistence true`, subscribers keeping their sessions.
    MosquittoPersistent,
    Nats,
    /// Publishing into a file-backed stream with acknowledgements, an ordered consumer per subscriber.
    #[value(name = "jetstream")]
    JetStream,
    Relay,
}

impl System {
    pub const ALL: [System; 10] = [
        System::Rivulet,
        System::RivuletPersisted,
        System::RivuletVolatile,
        System::RivuletLog,
        System::MosquittoQos0,
        System::MosquittoQos1,
        System::MosquittoPersistent,
        System::Nats,
        System::JetStream,
        System::Relay,
    ];

    pub fn label(self) -> &'static str {
        match self {
            System::Rivulet => "Rivulet gateway",
            System::RivuletPersisted => "Rivulet gateway, --persisted",
            System::RivuletVolatile => "Rivulet gateway, volatile",
            System::RivuletLog => "Rivulet gateway, log store",
            System::MosquittoQos0 => "mosquitto QoS 0",
            System::MosquittoQos1 => "mosquitto QoS 1",
            System::MosquittoPersistent => "mosquitto QoS 1, persistent",
            System::Nats => "NATS core",
            System::JetStream => "NATS JetStream",
            System::Relay => "raw TCP relay",
        }
    }

    pub fn kind(self) -> Kind {
        match self {
            System::Rivulet | System::RivuletPersisted => Kind::Rivulet,
            System::RivuletVolatile => Kind::RivuletVolatile,
            System::RivuletLog => Kind::RivuletLog,
            System::MosquittoQos0 | System::MosquittoQos1 => Kind::Mosquitto,
            System::MosquittoPersistent => Kind::MosquittoPersistent,
            System::Nats => Kind::Nats,
            System::JetStream => Kind::JetStream,
            System::Relay => Kind::Relay,
        }
    }

    /// The persisted row is one workload's (and the paced one's), not every workload's.
    pub fn runs(self, workload: &Workload) -> bool {
        self != System::RivuletPersisted
            || (workload.publishers == 1 && workload.subscribers == 1 && workload.size == 64)
    }
}

/// The workloads of a run: the 1→1 ones publish for `seconds`; the fan-out and fan-in ones a
/// number of messages (times `scale`), since publishing as fast as the clients go for a time
/// queues up more there than the slower systems deliver in a minute (mosquitto took 45 s to
/// deliver 3 s of 1→100 publishing in a trial).
pub fn workloads(seconds: f64, scale: f64) -> Vec<Workload> {
    let workload = |name: &str, publishers, subscribers, size, amount, rate| Workload {
        name: name.into(),
        publishers,
        subscribers,
        size,
        amount,
        rate,
    };
    let messages = |count: f64| Amount::Messages(((count * scale).round() as u64).max(1));
    vec![
        workload("1→1 64 B", 1, 1, 64, Amount::Seconds(seconds), None),
        workload("1→1 1 KiB", 1, 1, 1024, Amount::Seconds(seconds), None),
        // 500,000 deliveries each.
        workload("1→100 64 B", 1, 100, 64, messages(5000.0), None),
        workload("1→100 1 KiB", 1, 100, 1024, messages(5000.0), None),
        // 100,000 deliveries each.
        workload("100→1 64 B", 100, 1, 64, messages(1000.0), None),
        workload("100→1 1 KiB", 100, 1, 1024, messages(1000.0), None),
        workload("1→1 64 B at 10k msg/s", 1, 1, 64, Amount::Seconds(seconds), Some(10_000)),
    ]
}

/// One cell of one repeat.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Run {
    pub system: System,
    pub workload: String,
    pub repeat: u32,
    pub outcome: Option<Outcome>,
    pub error: Option<String>,
    /// The broker's CPU seconds over the cell (connecting and closing the clients included).
    pub broker_cpu_s: f64,
    /// The load generator's CPU seconds over the cell (`rivulet bench`'s, or this program's).
    pub generator_cpu_s: f64,
    pub wall_s: f64,
    pub broker_peak_rss_mib: Option<f64>,
    pub load_average: f64,
    /// CPU (in cores) that neither the broker nor the generator used while the cell ran: the
    /// other work on the shared machine.
    pub others_cores: f64,
    /// The gateway CPU per message `rivulet bench` reported itself, as a cross-check.
    pub self_reported_cpu_us_per_msg: Option<f64>,
}

impl Run {
    fn per_delivery(&self, seconds: f64) -> Option<f64> {
        let delivered = self.outcome.as_ref()?.delivered;
        (delivered > 0).then(|| seconds * 1e6 / delivered as f64)
    }

    pub fn broker_cpu_us_per_msg(&self) -> Option<f64> {
        self.per_delivery(self.broker_cpu_s)
    }

    pub fn generator_cpu_us_per_msg(&self) -> Option<f64> {
        self.per_delivery(self.generator_cpu_s)
    }
}

pub struct Runner {
    pub paths: Paths,
    pub runtime: tokio::runtime::Runtime,
    /// Distinguishes this run's topics.
    pub run_id: String,
}

impl Runner {
    /// Runs one cell against a fresh broker. A broker that does not start is an error of the whole
    /// run; whatever fails after that is the cell's, recorded in it.
    pub fn cell(&self, system: System, workload: &Workload, repeat: u32, tag: &str) -> Result<Run, String> {
        let broker = Broker::start(system.kind(), &self.paths, tag)?;
        let guard = broker.guard(MEMORY_LIMIT_MIB);
        let load_average = brokers::load_average();
        let (busy_before, _) = brokers::machine_ticks();
        let broker_before = broker.cpu_seconds()?;
        let own_before = brokers::own_cpu_seconds();
        let started = Instant::now();

        let result = self.generate(system, workload, &broker, tag);

        std::thread::sleep(SETTLE);
        let broker_after = broker.cpu_seconds();
        let own_after = brokers::own_cpu_seconds();
        let (busy_after, _) = brokers::machine_ticks();
        let wall_s = started.elapsed().as_secs_f64();
        let guarded = guard.finish();
        let broker_peak_rss_mib = broker.peak_rss_mib();
        let log = broker.log.clone();
        let stopped = broker.stop();

        let broker_cpu_s = broker_after.as_ref().map_or(f64::NAN, |after| after - broker_before);
        let generator_cpu_s = own_after - own_before;
        let machine_cpu_s = busy_after.saturating_sub(busy_before) as f64 / brokers::clock_ticks();
        let others_cores = ((machine_cpu_s - broker_cpu_s - generator_cpu_s) / wall_s).max(0.0);
        let (mut outcome, self_reported, mut error) = match result {
            Ok((outcome, reported)) => (Some(outcome), reported, None),
            Err(e) => (None, None, Some(e)),
        };
        if let (Some(outcome), Some(warning)) = (outcome.as_mut(), warnings(&log)) {
            outcome.notes.push(warning);
        }
        for problem in
            [broker_after.err(), guarded.err().map(|e| format!("{}: {e}", system.kind().name())), stopped.err()]
                .into_iter()
                .flatten()
        {
            let joined = match error.take() {
                Some(earlier) => format!("{earlier}; {problem}"),
                None => problem,
            };
            error = Some(joined);
        }
        if let Some(e) = error.as_mut() {
            e.push_str(&format!(" (broker log: {})", log.display()));
        }
        Ok(Run {
            system,
            workload: workload.name.clone(),
            repeat,
            outcome,
            error,
            broker_cpu_s,
            generator_cpu_s,
            wall_s,
            broker_peak_rss_mib,
            load_average,
            others_cores,
            self_reported_cpu_us_per_msg: self_reported,
        })
    }

    fn generate(
        &self,
        system: System,
        workload: &Workload,
        broker: &Broker,
        tag: &str,
    ) -> Result<(Outcome, Option<f64>), String> {
        let limit = workload.amount.limit();
        let run = format!("{}-{tag}", self.run_id).replace(['.', ' '], "-");
        let port = broker.kind.port();
        match system {
            // The volatile and log rows differ in the gateway's config only (brokers/*.toml).
            System::Rivulet | System::RivuletPersisted | System::RivuletVolatile | System::RivuletLog => {
                let persisted = system == System::RivuletPersisted;
                rivulet::bench(rivulet::command(&self.paths.rivulet, port, workload, persisted, IDLE), limit)
            }
            System::MosquittoQos0 | System::MosquittoQos1 | System::MosquittoPersistent => {
                let qos = if system == System::MosquittoQos0 { QoS::AtMostOnce } else { QoS::AtLeastOnce };
                let persistent_sessions = system == System::MosquittoPersistent;
                let protocol = mqtt::Mqtt { port, qos, persistent_sessions, run };
                self.runtime.block_on(within(limit, drive(&protocol, workload, IDLE))).map(|o| (o, None))
            }
            System::Nats => {
                let protocol = nats::Nats { port, run };
                self.runtime.block_on(within(limit, drive(&protocol, workload, IDLE))).map(|o| (o, None))
            }
            System::JetStream => {
                let protocol = nats::JetStream { nats: nats::Nats { port, run } };
                let generate = async {
                    protocol.create_stream().await?;
                    drive(&protocol, workload, IDLE).await
                };
                self.runtime.block_on(within(limit, generate)).map(|o| (o, None))
            }
            System::Relay => {
                let protocol = relay::Relay { port };
                self.runtime.block_on(within(limit, drive(&protocol, workload, IDLE))).map(|o| (o, None))
            }
        }
    }
}

/// What a broker logged as a warning or an error during a cell (the gateway says so when it cuts
/// off a slow subscriber), summed up in one note: how many such lines, and the first.
fn warnings(log: &std::path::Path) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    let lines: Vec<String> = text
        .lines()
        .map(strip_ansi)
        // The gateway's tracing levels; mosquitto's warnings have no level (only "dropped" matters).
        .filter(|line| ["WARN", "ERROR", "dropped", "Error:"].iter().any(|word| line.contains(word)))
        .collect();
    let first = lines.first()?;
    Some(format!("{} warning(s) in the broker's log, the first: {}", lines.len(), first.trim()))
}

/// `line` without terminal colour codes (ESC [ … m).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

async fn within(limit: Duration, generator: impl Future<Output = Result<Outcome, String>>) -> Result<Outcome, String> {
    tokio::time::timeout(limit, generator)
        .await
        .map_err(|_| format!("the load generator did not finish within {limit:?}"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_codes_are_stripped_from_log_lines() {
        let line = "\u{1b}[2m2026-11-29T18:26:29Z\u{1b}[0m \u{1b}[33m WARN\u{1b}[0m closing connection 3: too slow";
        assert_eq!(strip_ansi(line), "2026-11-29T18:26:29Z  WARN closing connection 3: too slow");
    }
}
