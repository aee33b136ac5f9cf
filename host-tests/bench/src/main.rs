//! `compare`: one honest, repeatable comparison run on one machine of the Rivulet gateway against
//! mosquitto (QoS 0 and 1), nats-server (core) and a raw TCP relay (the ceiling), with the same
//! workloads and the same measurements for each; then a profile of the gateway. `run.sh` beside
//! this crate builds everything and runs `compare run`; docs/BENCHMARKS.md keeps the results.
//!
//! Subcommands: `run` (the comparison), `report` (write the docs again from a results file),
//! `relay` (the relay server, started by `run` as a broker process of its own).

mod brokers;
mod chart;
mod drive;
mod measure;
mod mqtt;
mod nats;
mod profile;
mod relay;
mod report;
mod rivulet;
mod runner;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use clap::Parser;

use crate::brokers::Paths;
use crate::report::{BEGIN_COMPARE, BEGIN_PROFILE, END_COMPARE, END_PROFILE, Machine, Results};
use crate::runner::{Runner, System};

#[derive(Debug, Parser)]
#[command(about = "Compare the Rivulet gateway with mosquitto, NATS and a raw TCP relay")]
enum Cli {
    /// Run every workload against every system, then profile the gateway.
    Run(RunArgs),
    /// Write the docs again from the results file of an earlier run.
    Report(ReportArgs),
    /// Serve the raw TCP relay (started by `run`; see src/relay.rs).
    Relay {
        #[arg(long)]
        listen: std::net::SocketAddr,
    },
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// The gateway's `rivulet` binary (`cargo build --release -p rivulet-gateway` at the root).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/release/rivulet"))]
    rivulet: PathBuf,
    /// Publishing time of the 1→1 cells, in seconds.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Scales the message counts of the fan-out and fan-in cells (0.1 for a quick trial).
    #[arg(long, default_value_t = 1.0)]
    messages_scale: f64,
    /// Runs of each cell.
    #[arg(long, default_value_t = 3)]
    repeats: u32,
    /// Only these systems [default: all].
    #[arg(long, value_enum, value_delimiter = ',')]
    systems: Vec<System>,
    /// Only the workloads whose names contain one of these (e.g. `1→1`).
    #[arg(long, value_delimiter = ',')]
    workloads: Vec<String>,
    /// Seconds of perf sampling of the gateway under 1→1 64 B; 0 for no profile.
    #[arg(long, default_value_t = 5.0)]
    profile_seconds: f64,
    /// Where the results go (JSON), for `compare report`.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/target/results.json"))]
    results: PathBuf,
    #[command(flatten)]
    docs: DocsArgs,
    /// How the report shows the command that made it [default: this command line].
    #[arg(long)]
    shown_command: Option<String>,
    /// Keep the work directory (broker logs, perf.data) even when everything went well.
    #[arg(long)]
    keep_work: bool,
}

#[derive(Debug, clap::Args)]
struct DocsArgs {
    /// Markdown file whose generated sections are written (replaced between their markers).
    #[arg(long)]
    docs: Option<PathBuf>,
    /// SVG chart of msg/s per system and workload.
    #[arg(long)]
    svg: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct ReportArgs {
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/target/results.json"))]
    results: PathBuf,
    #[command(flatten)]
    docs: DocsArgs,
}

fn main() {
    let result = match Cli::parse() {
        Cli::Run(args) => run(args),
        Cli::Report(args) => report(args),
        Cli::Relay { listen } => tokio::runtime::Runtime::new()
            .map_err(|e| format!("cannot start the relay's runtime: {e}"))
            .and_then(|runtime| runtime.block_on(relay::serve(listen))),
    };
    if let Err(e) = result {
        eprintln!("compare: {e}");
        std::process::exit(1);
    }
}

/// The first line a command prints, or what went wrong.
fn first_line(program: &str, args: &[&str]) -> String {
    match Command::new(program).args(args).output() {
        Ok(output) => {
            let text = if output.stdout.is_empty() { output.stderr } else { output.stdout };
            String::from_utf8_lossy(&text).lines().next().unwrap_or_default().trim().to_string()
        }
        Err(e) => format!("{program}: {e}"),
    }
}

fn utc_now() -> String {
    first_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"])
}

fn run(args: RunArgs) -> Result<(), String> {
    let rivulet = std::fs::canonicalize(&args.rivulet).map_err(|e| {
        format!(
            "no gateway binary at {} ({e}): cargo build --release -p rivulet-gateway at the root",
            args.rivulet.display()
        )
    })?;
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let work = std::env::temp_dir().join(format!("rivulet-compare-{}", std::process::id()));
    std::fs::create_dir_all(&work).map_err(|e| format!("cannot create {}: {e}", work.display()))?;
    let paths = Paths {
        kept: crate_dir.join("target"),
        rivulet,
        compare: std::env::current_exe().map_err(|e| format!("where is this program? {e}"))?,
        configs: crate_dir.join("brokers"),
        work: work.clone(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the load generator's runtime: {e}"))?;
    let runner = Runner { paths, runtime, run_id: format!("{}", std::process::id()) };

    let systems: Vec<System> = if args.systems.is_empty() {
        System::ALL.to_vec()
    } else {
        System::ALL.into_iter().filter(|s| args.systems.contains(s)).collect()
    };
    let workloads: Vec<_> = runner::workloads(args.seconds, args.messages_scale)
        .into_iter()
        .filter(|w| args.workloads.is_empty() || args.workloads.iter().any(|name| w.name.contains(name.as_str())))
        .collect();
    if workloads.is_empty() {
        return Err(format!("no workload matches {:?}", args.workloads));
    }
    let cells: Vec<_> = (1..=args.repeats)
        .flat_map(|repeat| {
            let systems = &systems;
            workloads.iter().flat_map(move |w| systems.iter().filter(|s| s.runs(w)).map(move |&s| (repeat, w, s)))
        })
        .collect();

    let versions = vec![
        first_line("mosquitto", &["-h"]),
        first_line("nats-server", &["--version"]),
        first_line("rustc", &["--version"]),
    ];
    let commit = first_line("git", &["-C", &crate_dir.display().to_string(), "rev-parse", "--short", "HEAD"]);
    let shown_command = args.shown_command.clone().unwrap_or_else(|| std::env::args().collect::<Vec<_>>().join(" "));
    let shown_command = shown_command.trim().to_string();
    let mut results = Results {
        command: shown_command,
        started_utc: utc_now(),
        total_seconds: 0.0,
        repeats: args.repeats,
        machine: Machine::describe(brokers::load_average(), versions, commit),
        workloads: workloads.clone(),
        runs: Vec::new(),
        profiles: Vec::new(),
    };
    let started = Instant::now();
    eprintln!("compare: {} cells, work directory {}", cells.len(), work.display());
    for (n, (repeat, workload, system)) in cells.iter().enumerate() {
        let tag = format!("{}", n + 1);
        let run = runner.cell(*system, workload, *repeat, &tag)?;
        let summary = match (&run.outcome, &run.error) {
            (_, Some(e)) => format!("FAILED: {e}"),
            (Some(o), None) => format!(
                "{} msg/s, lost {}, p50 {} µs, broker {} µs/msg",
                report::si(o.msgs_per_sec),
                o.lost,
                o.latency_us_p50.unwrap_or(0),
                run.broker_cpu_us_per_msg().map_or("–".into(), |v| format!("{v:.2}"))
            ),
            (None, None) => "no outcome".into(),
        };
        eprintln!(
            "[{:>3}/{}] {:>5.0} s  {} · {} · run {repeat}: {summary}",
            n + 1,
            cells.len(),
            started.elapsed().as_secs_f64(),
            workload.name,
            system.label()
        );
        results.runs.push(run);
    }
    if args.profile_seconds > 0.0 {
        // 64 B is the comparison's reference load, on each path (durable on either store,
        // volatile); 1 KiB shows what grows with the payload.
        let profiled =
            [(System::Rivulet, 64), (System::RivuletLog, 64), (System::RivuletVolatile, 64), (System::Rivulet, 1024)];
        for (system, size) in profiled {
            eprintln!("compare: profiling {} under 1→1 {size} B for {} s", system.label(), args.profile_seconds);
            let profile = profile::profile(&runner, system, size, args.profile_seconds);
            if let Err(e) = &profile {
                eprintln!("compare: the profile failed: {e}");
            }
            results.profiles.push(profile);
        }
    }
    results.total_seconds = started.elapsed().as_secs_f64();
    results.machine.load_after = brokers::load_average();
    save(&results, &args.results)?;
    eprintln!("compare: results in {} after {:.1} min", args.results.display(), results.total_seconds / 60.0);
    write_docs(&results, &args.docs)?;
    let failed = results.runs.iter().filter(|run| run.error.is_some()).count();
    if failed == 0 && !args.keep_work {
        let _ = std::fs::remove_dir_all(&work);
    } else {
        eprintln!("compare: broker logs kept in {}", work.display());
    }
    Ok(())
}

fn save(results: &Results, path: &Path) -> Result<(), String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let json = serde_json::to_string_pretty(results).map_err(|e| format!("cannot encode the results: {e}"))?;
    std::fs::write(path, json).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn report(args: ReportArgs) -> Result<(), String> {
    let text = std::fs::read_to_string(&args.results)
        .map_err(|e| format!("cannot read {} ({e}): run `compare run` first", args.results.display()))?;
    let results: Results =
        serde_json::from_str(&text).map_err(|e| format!("{} is not a results file: {e}", args.results.display()))?;
    write_docs(&results, &args.docs)
}

/// Writes the sections (and the chart) where asked, and always prints the comparison section.
fn write_docs(results: &Results, docs: &DocsArgs) -> Result<(), String> {
    if let Some(svg) = &docs.svg {
        chart::write(results, svg)?;
        eprintln!("compare: wrote {}", svg.display());
    }
    // The chart is linked relative to the Markdown file when both sit in one directory.
    let svg_link = docs.svg.as_ref().map(|svg| match (svg.parent(), docs.docs.as_ref().and_then(|d| d.parent())) {
        (Some(a), Some(b)) if a == b => {
            svg.file_name().map_or(svg.display().to_string(), |f| f.to_string_lossy().into())
        }
        _ => svg.display().to_string(),
    });
    let compare = report::compare_section(results, svg_link.as_deref());
    let profile = report::profile_section(results);
    match &docs.docs {
        Some(path) => {
            let document = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let document = report::replace_section(&document, BEGIN_COMPARE, END_COMPARE, &compare)?;
            let document = report::replace_section(&document, BEGIN_PROFILE, END_PROFILE, &profile)?;
            std::fs::write(path, document).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            eprintln!("compare: wrote the sections of {}", path.display());
        }
        None => println!("{compare}\n{profile}"),
    }
    Ok(())
}
