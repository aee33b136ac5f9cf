//! `rivulet`: the gateway (`rivulet gateway`) and the commands people use with it.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use rivulet_gateway::cli::{
    self, CredentialArgs, FetchFileArgs, FilesArgs, PubArgs, QueryArgs, RequestArgs, SendFileArgs, StatusArgs, SubArgs,
};
use rivulet_gateway::config::GatewayArgs;
use rivulet_gateway::gateway;

#[derive(Parser)]
#[command(name = "rivulet", version, about = "Rivulet: an event gateway for devices, and its command line")]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway: accept clients, store their events, notify subscribers (until Ctrl-C).
    Gateway(Box<GatewayArgs>),
    /// Register one event.
    Pub(PubArgs),
    /// Print events matching patterns as they are registered, one JSON line each.
    Sub(SubArgs),
    /// Ask the gateway's history.
    Query(QueryArgs),
    /// Show the gateway's connections, counters and store size.
    Status(StatusArgs),
    /// Call a connected client's (a device's) request handler and print its answer.
    Request(RequestArgs),
    /// Send a file to the gateway, to a device through it (`--to DEVICE`) or to a linked
    /// gateway (`--to GATEWAY`): in chunks, resumed after a lost link, its SHA-256 checked.
    SendFile(SendFileArgs),
    /// List the files a gateway holds: SHA-256, size, name.
    Files(FilesArgs),
    /// Fetch a file the gateway holds, resumed after a lost link, its SHA-256 checked.
    FetchFile(FetchFileArgs),
    /// Measure a gateway: publishers and subscribers on their own connections, throughput,
    /// latency percentiles, losses and the gateway's CPU per message.
    Bench(rivulet_gateway::bench::BenchArgs),
    /// Make a client for a gateway's config: prints a new token (once) and its `[[clients]]` entry.
    Credential(CredentialArgs),
}

fn main() -> ExitCode {
    let args = Args::parse();
    rivulet_gateway::logging::init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("rivulet: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match args.command {
            Command::Gateway(args) => gateway::run(*args).await,
            Command::Pub(args) => cli::publish(args).await,
            Command::Sub(args) => cli::subscribe(args).await,
            Command::Query(args) => cli::query(args).await,
            Command::Status(args) => cli::status(args).await,
            Command::Request(args) => cli::request(args).await,
            Command::SendFile(args) => cli::send_file(args).await,
            Command::Files(args) => cli::list_files(args).await,
            Command::FetchFile(args) => cli::fetch_file(args).await,
            Command::Bench(args) => rivulet_gateway::bench::run(args).await,
            Command::Credential(args) => cli::credential(args),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rivulet: {e}");
            ExitCode::FAILURE
        }
    }
}
