//! The hat-client load of `host-tests/bench/hat/hat_load.py` on Rivulet's tokio hat client, so a
//! hat server can be measured with a load that costs less than the Python one (which runs on one
//! core and bounds the rate it can reach):
//!
//!     rivulet-hat-load PORT [--clients N] [--events E] [--batch B]
//!
//! N clients register E events each in requests of B, with response, awaiting each (as hat
//! clients do), with a small JSON payload; one client subscribed to `load/*` counts what it is
//! notified. Prints one JSON line, the same fields as hat_load.py: published, notified, seconds
//! (from the first request to the last notification), events per second, and this process's
//! CPU seconds. Gives up waiting for notifications 30 s after the last registration.

use std::time::{Duration, Instant};

use rivulet_tokio::hat::{self, HatOptions};
use rivulet_tokio::model::{EventPath, Payload, RegisterEvent};

struct Args {
    port: u16,
    clients: usize,
    events: usize,
    batch: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = std::env::args().skip(1);
    let port = args.next().ok_or("usage: rivulet-hat-load PORT [--clients N] [--events E] [--batch B]")?;
    let mut parsed =
        Args { port: port.parse().map_err(|e| format!("PORT {port:?}: {e}"))?, clients: 4, events: 5000, batch: 100 };
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        let value: usize = value.parse().map_err(|e| format!("{flag} {value:?}: {e}"))?;
        match flag.as_str() {
            "--clients" => parsed.clients = value,
            "--events" => parsed.events = value,
            "--batch" => parsed.batch = value.max(1),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(parsed)
}

/// This process's user + system CPU seconds (`/proc/self/stat` counts in USER_HZ, 100 on Linux).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after_name = stat.rsplit_once(") ").map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

async fn publisher(addr: String, index: usize, events: usize, batch: usize) -> Result<usize, String> {
    let (client, _events) =
        hat::connect(addr, HatOptions::new(format!("load-{index}"))).await.map_err(|e| e.to_string())?;
    let event_type = EventPath::new(["load".to_string(), index.to_string()]);
    let mut sent = 0;
    while sent < events {
        let count = batch.min(events - sent);
        let request = (sent..sent + count)
            .map(|i| RegisterEvent::new(event_type.clone(), Some(Payload::Json(i.to_string()))))
            .collect();
        client.register_with_response(request).await.map_err(|e| format!("registration failed: {e}"))?;
        sent += count;
    }
    client.close().await;
    Ok(sent)
}

async fn run(args: Args) -> Result<String, String> {
    let addr = format!("127.0.0.1:{}", args.port);
    let mut options = HatOptions::new("load-subscriber");
    options.subscriptions = vec![EventPath::new(["load", "*"])];
    let (subscriber, mut events) = hat::connect(addr.clone(), options).await.map_err(|e| e.to_string())?;
    let total = args.clients * args.events;
    let started = Instant::now();
    let cpu_started = cpu_seconds();
    let counting = tokio::spawn(async move {
        let (mut notified, mut last) = (0usize, None);
        while notified < total {
            match events.next_batch().await {
                Some(batch) => {
                    notified += batch.len();
                    last = Some(Instant::now());
                }
                None => break,
            }
        }
        (notified, last)
    });
    let publishers: Vec<_> =
        (0..args.clients).map(|i| tokio::spawn(publisher(addr.clone(), i, args.events, args.batch))).collect();
    let mut published = 0;
    for publisher in publishers {
        published += publisher.await.map_err(|e| e.to_string())??;
    }
    let (notified, last) = match tokio::time::timeout(Duration::from_secs(30), counting).await {
        Ok(counted) => counted.map_err(|e| e.to_string())?,
        Err(_) => (0, None),
    };
    let seconds = last.unwrap_or_else(Instant::now).duration_since(started).as_secs_f64();
    let load_cpu_s = cpu_seconds() - cpu_started;
    subscriber.close().await;
    let rate = if seconds > 0.0 { (published as f64 / seconds * 10.0).round() / 10.0 } else { 0.0 };
    Ok(format!(
        r#"{{"published": {published}, "notified": {notified}, "seconds": {seconds:.3}, "events_per_s": {rate}, "load_cpu_s": {load_cpu_s:.3}}}"#
    ))
}

fn main() -> std::process::ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("rivulet-hat-load: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a tokio runtime");
    match runtime.block_on(async { tokio::time::timeout(Duration::from_secs(600), run(args)).await }) {
        Ok(Ok(line)) => {
            println!("{line}");
            std::process::ExitCode::SUCCESS
        }
        Ok(Err(e)) => {
            eprintln!("rivulet-hat-load: {e}");
            std::process::ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!("rivulet-hat-load: not done in 600 s");
            std::process::ExitCode::FAILURE
        }
    }
}
