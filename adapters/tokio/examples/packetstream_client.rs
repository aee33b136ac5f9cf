//! A cs.packetstream client for interop tests: calls the four request types of
//! `packetstream_server`, a pipelined burst of 100 echoes and one 1 MiB echo, prints a line per
//! result, closes with ERQ/EOF, and exits non-zero on any mismatch.
//!
//! ```text
//! cargo run -p rivulet-tokio --example packetstream_client -- --connect 127.0.0.1:PORT
//! ```

use rivulet_tokio::packet::{CallError, PacketConfig, PacketConnection, PacketReply};

struct Checks {
    failed: usize,
}

impl Checks {
    fn check(&mut self, name: &str, got: Result<PacketReply, CallError>, ok: impl FnOnce(&PacketReply) -> bool) {
        match got {
            Ok(reply) if ok(&reply) => {
                println!("ok {name}: flags {} payload {} bytes", reply.flags, reply.payload.len())
            }
            Ok(reply) => {
                self.failed += 1;
                let shown = String::from_utf8_lossy(&reply.payload[..reply.payload.len().min(64)]).into_owned();
                println!("FAIL {name}: unexpected reply flags {} payload {shown:?}", reply.flags);
            }
            Err(e) => {
                self.failed += 1;
                println!("FAIL {name}: {e}");
            }
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let addr = match args.as_slice() {
        [flag, addr] if flag == "--connect" => addr.clone(),
        _ => {
            eprintln!("usage: packetstream_client --connect ADDR:PORT");
            std::process::exit(2);
        }
    };
    let conn = match PacketConnection::connect(&addr, PacketConfig::default()).await {
        Ok(conn) => conn,
        Err(e) => {
            println!("FAIL connect {addr}: {e}");
            std::process::exit(1);
        }
    };
    let mut checks = Checks { failed: 0 };

    checks.check("echo", conn.call(0, 0, "hello").await, |r| r.flags == 0 && r.payload == b"hello");
    checks.check("reverse", conn.call(1, 0, "abcdef").await, |r| r.payload == b"fedcba");
    match conn.call(2, 0, "x").await {
        Err(CallError::Refused(reason)) if !reason.is_empty() => println!("ok fail: refused with {reason:?}"),
        other => {
            checks.failed += 1;
            println!("FAIL fail: expected a refusal with a reason, got {other:?}");
        }
    }
    checks.check("flags", conn.call(3, 5, "12345").await, |r| r.flags == 6 && r.payload == b"5");

    // Pipelined: all 100 requests are out before the first answer is awaited.
    let burst: Vec<Vec<u8>> = (0..100).map(|i| format!("burst {i}").into_bytes()).collect();
    let calls = burst.iter().map(|payload| conn.call(0, 0, payload.clone()));
    let answers = join_all(calls).await;
    let matched =
        answers.iter().zip(&burst).filter(|(got, sent)| got.as_ref().is_ok_and(|r| &r.payload == *sent)).count();
    if matched == burst.len() {
        println!("ok pipelined: {matched} of {} echoes matched", burst.len());
    } else {
        checks.failed += 1;
        println!("FAIL pipelined: {matched} of {} echoes matched", burst.len());
    }

    let big: Vec<u8> = (0..1 << 20).map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    checks.check("large", conn.call(0, 0, big.clone()).await, |r| r.payload == big);

    match conn.close().await {
        Ok(()) => println!("ok close: ERQ and EOF exchanged"),
        Err(e) => {
            checks.failed += 1;
            println!("FAIL close: {e}");
        }
    }
    if checks.failed > 0 {
        println!("{} checks failed", checks.failed);
        std::process::exit(1);
    }
}

/// Polls every future together until all are done (the calls share one connection).
async fn join_all<F: Future>(futures: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut set = Vec::new();
    for future in futures {
        set.push(Box::pin(future));
    }
    let mut outputs: Vec<Option<F::Output>> = (0..set.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in set.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(value) => *output = Some(value),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending { std::task::Poll::Pending } else { std::task::Poll::Ready(()) }
    })
    .await;
    outputs.into_iter().flatten().collect()
}
