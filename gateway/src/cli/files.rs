//! `rivulet send-file`, `rivulet files` and `rivulet fetch-file` (docs/FILES.md): the sending and
//! fetching side of `rivulet_core::files`, to the gateway itself or, with `--to`/`--from`, to a
//! client (a device) or a gateway it links to, through `RQ_FORWARD`.
//!
//! Both sides keep a window of chunks in flight and go on after a lost link: the client
//! reconnects by itself, the sender offers again and sends from what the receiver holds; a
//! fetch keeps its partial file (`.NAME.HASH.part` beside the destination) and reads on from its
//! end, also in a later run.

use std::collections::BTreeMap;
use std::future::Future;
use std::io::{Read as _, Seek, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rivulet_core::files::{
    self, Answer, Chunk, Digest, Done, FileError, FileInfo, FileRequest, Hex, Offer, Read, Sha256,
};
use rivulet_tokio::packet::{CallError, PacketReply};
use rivulet_tokio::{Client, ClientError};

use super::{DEFAULT_GATEWAY, Login, client};
use crate::access::Ring;
use crate::frontend::native::{Forward, RQ_FORWARD, forward};

/// Chunks in flight at most, whatever the receiver allows.
const MOST_IN_FLIGHT: u16 = 16;
/// The smallest chunk a send goes down to when a packet on the way is too small.
const SMALLEST_CHUNK: u64 = 512;
/// Attempts (each after a lost link or a lost transfer) before a send or fetch gives up.
const MOST_ATTEMPTS: u32 = 100;
/// Bytes a fetch asks for in one read.
const READ_BYTES: u32 = 60 * 1024;

#[derive(Debug, Clone, clap::Args)]
pub struct SendFileArgs {
    /// The file to send.
    pub path: PathBuf,
    /// Where to: a client (a device) by name, or a gateway the gateway links to (`GATEWAY` or
    /// `GATEWAY/DEVICE`) [default: the gateway itself].
    #[arg(long)]
    pub to: Option<String>,
    /// The file's name there [default: the file name of PATH].
    #[arg(long = "as", value_name = "NAME")]
    pub file_name: Option<String>,
    /// Largest chunk, in bytes [default: what the receiver takes].
    #[arg(long)]
    pub chunk: Option<u32>,
    /// How long to wait for a lost link to come back before giving up, in seconds.
    #[arg(long, default_value_t = 60)]
    pub retry_for: u64,
    #[arg(long, default_value = DEFAULT_GATEWAY)]
    pub gateway: String,
    #[command(flatten)]
    pub login: Login,
}

#[derive(Debug, Clone, clap::Args)]
pub struct FilesArgs {
    /// Ask a gateway the gateway links to instead (its name).
    #[arg(long)]
    pub from: Option<String>,
    #[arg(long, default_value = DEFAULT_GATEWAY)]
    pub gateway: String,
    #[command(flatten)]
    pub login: Login,
}

#[derive(Debug, Clone, clap::Args)]
pub struct FetchFileArgs {
    /// The file's name at the gateway.
    #[arg(value_name = "NAME")]
    pub file: String,
    /// Where to write it [default: NAME in the current directory].
    pub dest: Option<PathBuf>,
    /// Fetch from a gateway the gateway links to instead (its name).
    #[arg(long)]
    pub from: Option<String>,
    #[arg(long, default_value_t = 60)]
    pub retry_for: u64,
    #[arg(long, default_value = DEFAULT_GATEWAY)]
    pub gateway: String,
    #[command(flatten)]
    pub login: Login,
}

/// Why a transfer stopped.
#[derive(Debug)]
enum Failure {
    /// The link is gone for now: wait for it, then go on.
    Link(ClientError),
    /// For good, with this message.
    Fatal(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Link(e) => e.fmt(f),
            Failure::Fatal(why) => f.write_str(why),
        }
    }
}

/// Where requests go: the gateway, or a named client or gateway through it.
struct Route {
    client: Arc<Client>,
    to: Option<String>,
}

type Answering = Pin<Box<dyn Future<Output = Result<PacketReply, ClientError>> + Send>>;

impl Route {
    fn send(&self, request: &FileRequest<'_>) -> Result<Answering, String> {
        let mut body = vec![0u8; encoded_len(request)];
        let len = request.encode(&mut body).map_err(|e| e.to_string())?;
        body.truncate(len);
        let (rq_type, payload) = match &self.to {
            None => (request.rq_type(), body),
            Some(to) => {
                let forward = Forward { client: to.clone(), rq_type: request.rq_type(), flags: 0, payload: body };
                (RQ_FORWARD, forward::encode(&forward).map_err(|e| e.to_string())?)
            }
        };
        let client = self.client.clone();
        Ok(Box::pin(async move { client.request(rq_type, 0, payload).await }))
    }

    async fn ask(&self, request: &FileRequest<'_>) -> Result<PacketReply, Failure> {
        self.send(request).map_err(Failure::Fatal)?.await.map_err(failure)
    }

    async fn close(self) {
        // The requests' tasks hold the client until they end; they have by now.
        if let Ok(client) = Arc::try_unwrap(self.client) {
            client.close().await;
        }
    }

    fn target(&self) -> &str {
        self.to.as_deref().unwrap_or("the gateway")
    }
}

fn encoded_len(request: &FileRequest<'_>) -> usize {
    match request {
        FileRequest::Chunk(chunk) => files::chunk_overhead(chunk.name) + chunk.data.len(),
        _ => 256,
    }
}

/// A request's error: a lost link is worth waiting for, on the way (the target is not
/// connected now, or its link broke) as well as to the gateway, and so is a receiver that lost
/// the transfer (it is offered again); a refusal for any other reason is not.
fn failure(e: ClientError) -> Failure {
    match e {
        ClientError::Disconnected | ClientError::NotConnected | ClientError::TimedOut => Failure::Link(e),
        ClientError::Refused(reason) if transient(&reason) => Failure::Link(ClientError::Refused(reason)),
        other => Failure::Fatal(other.to_string()),
    }
}

/// Whether a refusal says the target is away for now (the broker's `call` and the target's
/// link say so in these words) or lost the transfer.
fn transient(reason: &str) -> bool {
    let away = [CallError::Disconnected.to_string(), CallError::TimedOut.to_string()];
    reason.ends_with(&FileError::NotOffered.to_string())
        || reason.contains("device busy")
        || (reason.starts_with("no client ") && reason.ends_with(" is connected"))
        || away.iter().any(|why| reason.ends_with(why.as_str()))
}

fn answer(reply: &PacketReply) -> Result<Answer, Failure> {
    files::decode(&reply.payload).map_err(|_| Failure::Fatal("the receiver's answer is not a file answer".into()))
}

/// Waits until the client is connected again, at most `until`.
async fn reconnected(client: &Client, until: Instant, why: &ClientError) -> Result<(), String> {
    let mut states = client.state_changes();
    let wait = tokio::time::timeout_at(until.into(), states.wait_for(|s| s.connected));
    match wait.await {
        Ok(Ok(_)) => Ok(()),
        _ => Err(format!("the link did not come back ({why}); run the command again to resume")),
    }
}

/// SHA-256 and size of the file at `path`.
fn hash_file(path: &Path) -> Result<(u64, Digest), String> {
    let mut file = std::fs::File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let (mut hash, mut size, mut buf) = (Ring::new(), 0u64, vec![0u8; 1 << 16]);
    loop {
        match file.read(&mut buf).map_err(|e| format!("cannot read {}: {e}", path.display()))? {
            0 => return Ok((size, hash.finalize())),
            n => {
                hash.update(&buf[..n]);
                size += n as u64;
            }
        }
    }
}

fn rate(bytes: u64, started: Instant) -> String {
    let seconds = started.elapsed().as_secs_f64().max(1e-6);
    format!("{:.1} s, {:.1} MB/s", seconds, bytes as f64 / seconds / 1e6)
}

/// `rivulet send-file`.
pub async fn send_file(args: SendFileArgs) -> Result<(), String> {
    let name = match &args.file_name {
        Some(name) => name.clone(),
        None => args.path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string(),
    };
    files::check_name(&name).map_err(|e| format!("{name:?}: {e} (choose one with --as)"))?;
    let (size, sha256) = hash_file(&args.path)?;
    let route =
        Route { client: Arc::new(client(&args.gateway, &args.login, "rivulet-send-file").await?), to: args.to.clone() };
    let target = route.target().to_owned();
    let started = Instant::now();
    let offer = Offer { name: &name, size, sha256 };
    let path = args.path.as_path();
    let (route_ref, offer_ref) = (&route, &offer);
    let result =
        with_retries(&route, args.retry_for, "send", || send_once(route_ref, offer_ref, path, args.chunk)).await;
    route.close().await;
    let digest = result.map_err(|e| format!("sending {name} to {}: {e}", target))?;
    crate::out!("sent {name} ({size} bytes, SHA-256 {}) to {} in {}", Hex(&digest), target, rate(size, started));
    Ok(())
}

/// Runs `attempt` until it succeeds or fails for good. After a lost link (to the gateway, or the
/// gateway's to the target) it waits for the client to link again and a pause (0.2 s, doubling
/// up to 5 s), then attempts again, which goes on from what was done; it gives up when the
/// failures have gone on for `retry_for` seconds (an attempt that lasted a while ends a streak),
/// or after [`MOST_ATTEMPTS`].
async fn with_retries<T, F: Future<Output = Result<T, Failure>>>(
    route: &Route,
    retry_for: u64,
    what: &str,
    attempt: impl Fn() -> F,
) -> Result<T, String> {
    const FIRST_PAUSE: Duration = Duration::from_millis(200);
    let (mut streak, mut pause) = (None, FIRST_PAUSE);
    for _ in 0..MOST_ATTEMPTS {
        let began = Instant::now();
        let why = match attempt().await {
            Ok(done) => return Ok(done),
            Err(Failure::Fatal(why)) => return Err(why),
            Err(Failure::Link(why)) => why,
        };
        if began.elapsed() > Duration::from_secs(2) {
            (streak, pause) = (None, FIRST_PAUSE);
        }
        let until = *streak.get_or_insert_with(Instant::now) + Duration::from_secs(retry_for);
        if Instant::now() >= until {
            return Err(format!("{why}, for {retry_for} s; run the command again to resume"));
        }
        eprintln!("{}: {why}; trying again to {what} the rest", route.target());
        reconnected(&route.client, until, &why).await?;
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(5));
    }
    Err(format!("{MOST_ATTEMPTS} attempts did not get it done; run the command again to resume"))
}

/// One offer and what follows it, until done or the link fails.
async fn send_once(route: &Route, offer: &Offer<'_>, path: &Path, chunk_limit: Option<u32>) -> Result<Digest, Failure> {
    let mut file =
        std::fs::File::open(path).map_err(|e| Failure::Fatal(format!("cannot read {}: {e}", path.display())))?;
    let Answer::Ready { held, max_chunk, window } = answer(&route.ask(&FileRequest::Offer(*offer)).await?)? else {
        return Err(Failure::Fatal("the receiver did not answer the offer".into()));
    };
    if held > 0 && held < offer.size {
        eprintln!("{} holds {held} of {} bytes already: sending the rest", route.target(), offer.size);
    }
    let mut chunk = u64::from(chunk_limit.unwrap_or(max_chunk).min(max_chunk).max(1));
    let window = usize::from(window.clamp(1, MOST_IN_FLIGHT));
    let (mut next, mut held, mut stalled) = (held, held, 0);
    let mut in_flight = tokio::task::JoinSet::new();
    let mut data = vec![0u8; chunk as usize];
    while held < offer.size {
        while in_flight.len() < window && next < offer.size {
            let len = chunk.min(offer.size - next) as usize;
            file.seek(SeekFrom::Start(next))
                .and_then(|_| file.read_exact(&mut data[..len]))
                .map_err(|e| Failure::Fatal(format!("cannot read the file: {e}")))?;
            let request = FileRequest::Chunk(Chunk { name: offer.name, offset: next, data: &data[..len] });
            let answering = route.send(&request).map_err(Failure::Fatal)?;
            let (offset, len) = (next, len as u64);
            in_flight.spawn(async move { (offset, len, answering.await) });
            next += len;
        }
        let Some(done) = in_flight.join_next().await else { break };
        let (offset, len, reply) = done.map_err(|e| Failure::Fatal(e.to_string()))?;
        let reply = match reply {
            // Larger than a packet somewhere on the way (a gateway with a smaller max_packet
            // than the receiver's): smaller chunks, from where this one was.
            Err(ClientError::TooLarge | ClientError::OverServerLimit(_)) if chunk > SMALLEST_CHUNK => {
                chunk = (chunk / 2).max(SMALLEST_CHUNK);
                next = next.min(offset);
                continue;
            }
            reply => reply.map_err(failure)?,
        };
        match answer(&reply)? {
            Answer::Held(now) => {
                // Answers may come in another order than their chunks were taken, so a smaller
                // count is no proof; answers that move nothing for long are: the receiver lost
                // the transfer (another offer of that name replaced it, say). Offer again.
                stalled = if now > held { 0 } else { stalled + 1 };
                if stalled > 4 * window {
                    return Err(Failure::Link(ClientError::Refused(format!(
                        "the receiver stays at {now} bytes (this sender had {held} taken)"
                    ))));
                }
                held = held.max(now);
                // Not taken (it came early, or again): send on from what the receiver holds.
                // Chunks still in flight may be taken meanwhile; one sent twice is not taken
                // twice.
                if now < offset + len {
                    next = next.min(held);
                }
            }
            _ => return Err(Failure::Fatal("the receiver did not answer a chunk".into())),
        }
    }
    match answer(&route.ask(&FileRequest::Done(Done { name: offer.name })).await?)? {
        Answer::Complete(digest) if digest == offer.sha256 => Ok(digest),
        Answer::Complete(digest) => Err(Failure::Fatal(format!(
            "the receiver holds {} with SHA-256 {}, not {}",
            offer.name,
            Hex(&digest),
            Hex(&offer.sha256)
        ))),
        _ => Err(Failure::Fatal("the receiver did not answer done".into())),
    }
}

/// The files a gateway holds.
async fn list(route: &Route) -> Result<Vec<(String, u64, Digest)>, Failure> {
    let reply = route.ask(&FileRequest::List).await?;
    let infos: Vec<FileInfo<'_>> =
        postcard::from_bytes(&reply.payload).map_err(|_| Failure::Fatal("the answer is not a file list".into()))?;
    Ok(infos.into_iter().map(|i| (i.name.to_string(), i.size, i.sha256)).collect())
}

/// `rivulet files`.
pub async fn list_files(args: FilesArgs) -> Result<(), String> {
    let route =
        Route { client: Arc::new(client(&args.gateway, &args.login, "rivulet-files").await?), to: args.from.clone() };
    let target = route.target().to_owned();
    let listed = list(&route).await;
    route.close().await;
    let files = listed.map_err(|e| format!("{target}: {e}"))?;
    for (name, size, digest) in files {
        crate::out!("{}  {size:>12}  {name}", Hex(&digest));
    }
    Ok(())
}

/// `rivulet fetch-file`.
pub async fn fetch_file(args: FetchFileArgs) -> Result<(), String> {
    files::check_name(&args.file).map_err(|e| format!("{:?}: {e}", args.file))?;
    let dest = args.dest.clone().unwrap_or_else(|| PathBuf::from(&args.file));
    let route = Route {
        client: Arc::new(client(&args.gateway, &args.login, "rivulet-fetch-file").await?),
        to: args.from.clone(),
    };
    let target = route.target().to_owned();
    let started = Instant::now();
    let (route_ref, name, dest_ref) = (&route, args.file.as_str(), dest.as_path());
    let result = with_retries(&route, args.retry_for, "fetch", || fetch_once(route_ref, name, dest_ref)).await;
    route.close().await;
    let (size, digest) = result.map_err(|e| format!("fetching {} from {}: {e}", args.file, target))?;
    crate::out!(
        "fetched {} ({size} bytes, SHA-256 {}) into {} in {}",
        args.file,
        Hex(&digest),
        dest.display(),
        rate(size, started)
    );
    Ok(())
}

/// The partial file of a fetch: beside the destination, named by the file's hash so that a
/// changed file never continues another's bytes.
fn partial_path(dest: &Path, digest: &Digest) -> PathBuf {
    let name = dest.file_name().and_then(|n| n.to_str()).unwrap_or("fetch");
    dest.with_file_name(format!(".{name}.{}.part", Hex(&digest[..8])))
}

/// A read of `len` bytes at `offset`, answering with its range.
fn read(
    route: &Route,
    name: &str,
    offset: u64,
    len: u32,
) -> Result<impl Future<Output = (u64, u32, Result<PacketReply, ClientError>)> + Send + 'static, Failure> {
    let answering = route.send(&FileRequest::Read(Read { name, offset, len })).map_err(Failure::Fatal)?;
    Ok(async move { (offset, len, answering.await) })
}

/// One pass of a fetch: from the end of the partial file to the end, in order; then the hash.
async fn fetch_once(route: &Route, name: &str, dest: &Path) -> Result<(u64, Digest), Failure> {
    let files = list(route).await?;
    let Some((_, size, digest)) = files.into_iter().find(|(n, _, _)| n == name) else {
        return Err(Failure::Fatal(format!("{} holds no file {name:?} (see `rivulet files`)", route.target())));
    };
    let part = partial_path(dest, &digest);
    let io = |e: std::io::Error| Failure::Fatal(format!("{}: {e}", part.display()));
    let mut file = std::fs::OpenOptions::new().create(true).read(true).append(true).open(&part).map_err(io)?;
    // What an earlier run fetched counts: hash it, then read on.
    let (mut hash, mut held, mut buf) = (Ring::new(), 0u64, vec![0u8; 1 << 16]);
    loop {
        match file.read(&mut buf).map_err(io)? {
            0 => break,
            n => {
                hash.update(&buf[..n]);
                held += n as u64;
            }
        }
    }
    if held > size {
        return Err(Failure::Fatal(format!("{} is longer than the file: delete it", part.display())));
    }
    let mut next = held;
    let mut arrived: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    let mut in_flight = tokio::task::JoinSet::new();
    while held < size {
        while in_flight.len() < usize::from(MOST_IN_FLIGHT) && next < size {
            let len = u64::from(READ_BYTES).min(size - next) as u32;
            in_flight.spawn(read(route, name, next, len)?);
            next += u64::from(len);
        }
        let Some(done) = in_flight.join_next().await else { break };
        let (offset, len, reply) = done.map_err(|e| Failure::Fatal(e.to_string()))?;
        let bytes = reply.map_err(failure)?.payload;
        if bytes.is_empty() {
            return Err(Failure::Fatal(format!("{name} ended early at {offset} bytes: it changed; fetch it again")));
        }
        // A short read (a smaller packet on the way): the rest of its range is asked again.
        let got = bytes.len() as u32;
        if got < len {
            in_flight.spawn(read(route, name, offset + u64::from(got), len - got)?);
        }
        arrived.insert(offset, bytes);
        while let Some(bytes) = arrived.remove(&held) {
            file.write_all(&bytes).map_err(io)?;
            hash.update(&bytes);
            held += bytes.len() as u64;
        }
    }
    file.sync_all().map_err(io)?;
    let received = hash.finalize();
    if received != digest {
        let _ = std::fs::remove_file(&part);
        let mismatch = FileError::Mismatch { offered: digest, received };
        return Err(Failure::Fatal(mismatch.to_string()));
    }
    std::fs::rename(&part, dest).map_err(|e| Failure::Fatal(format!("cannot write {}: {e}", dest.display())))?;
    Ok((size, received))
}
