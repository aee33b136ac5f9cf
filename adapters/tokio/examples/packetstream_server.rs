//! A cs.packetstream server for interop tests; runs until killed.
//!
//! ```text
//! cargo run -p rivulet-tokio --example packetstream_server -- --listen 127.0.0.1:PORT
//! ```
//!
//! Request types: 0 echoes the payload, 1 reverses it, 2 always fails with a reason, 3 answers
//! with flags + 1 and the payload's length as decimal text.

use rivulet_tokio::packet::{self, PacketConfig, PacketReply, PacketRequest};

async fn answer(request: PacketRequest) -> Result<PacketReply, String> {
    let PacketRequest { rq_type, flags, mut payload } = request;
    match rq_type {
        0 => Ok(PacketReply::new(0, payload)),
        1 => {
            payload.reverse();
            Ok(PacketReply::new(0, payload))
        }
        2 => Err("request type 2 always fails".into()),
        3 => {
            let flags = flags.checked_add(1).ok_or("flags + 1 overflows")?;
            Ok(PacketReply::new(flags, payload.len().to_string()))
        }
        other => Err(format!("unknown request type {other}")),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let listen = match args.as_slice() {
        [flag, addr] if flag == "--listen" => addr.clone(),
        _ => {
            eprintln!("usage: packetstream_server --listen ADDR:PORT");
            std::process::exit(2);
        }
    };
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!("listening {}", listener.local_addr()?);
    packet::serve(listener, PacketConfig::default(), answer).await
}
