//! Interop with the real cs.packetstream 20240630 from PyPI: its `PacketConnection` against our
//! example server, our example client and our library against a Python server built on it, and
//! raw-byte checks of the ERQ/EOF shutdown in both directions. The venv comes from
//! `../shared/reference/peer-setup/setup_venv.sh` (see `rivulet_host_tests::peers`).

use std::time::Duration;

use rivulet_host_tests::peers::PeerProcess;
use rivulet_tokio::packet::{CallError, PacketConfig, PacketConnection};

/// The real library is thread-based and slow to start: generous, and never hit when all is well.
const PEER_TIMEOUT: Duration = Duration::from_secs(60);

fn our_server() -> (PeerProcess, String) {
    let mut server = PeerProcess::spawn_example("packetstream_server", &["--listen", "127.0.0.1:0"]);
    let port = server.read_listening_port();
    (server, port.to_string())
}

#[test]
fn python_client_against_our_server() {
    let (_server, port) = our_server();
    let client = PeerProcess::spawn("ps_client.py", &["--port", &port]);
    let out = client.wait_success(PEER_TIMEOUT);
    let checks = [
        "echo",
        "reverse",
        "fail",
        "flags_len",
        "empty_echo",
        "echo_flags_zero",
        "pipelined_100",
        "echo_1mib",
        "big_flags",
        "clean_shutdown",
        "server_closed",
    ];
    for check in checks {
        assert!(
            out.stdout.lines().any(|line| line == format!("ok {check}")),
            "check {check} did not pass:\n{}",
            out.stdout
        );
    }
}

#[test]
fn raw_shutdown_bytes_of_our_server() {
    let (_server, port) = our_server();
    // ERQ/EOF from the client: our server answers ERQ then EOF and closes.
    PeerProcess::spawn("ps_raw_shutdown.py", &["--port", &port]).wait_success(PEER_TIMEOUT);
    // A request after the client's ERQ is refused with the library's reason.
    PeerProcess::spawn("ps_raw_shutdown.py", &["--port", &port, "--after-erq"]).wait_success(PEER_TIMEOUT);
    // A request on a channel other than 0 is refused on that channel.
    PeerProcess::spawn("ps_raw_shutdown.py", &["--port", &port, "--bad-channel"]).wait_success(PEER_TIMEOUT);
}

#[test]
fn our_client_against_python_server() {
    let mut server = PeerProcess::spawn("ps_server.py", &["--port", "0"]);
    let port = server.read_listening_port();
    let addr = format!("127.0.0.1:{port}");
    let client = PeerProcess::spawn_example("packetstream_client", &["--connect", &addr]);
    let out = client.wait_success(PEER_TIMEOUT);
    assert!(out.stdout.contains("ok close"), "{}", out.stdout);
    // The Python server exits 0 only after a clean ERQ/EOF exchange with us.
    server.wait_success(PEER_TIMEOUT);
}

async fn python_server(args: &[&str]) -> (PeerProcess, PacketConnection) {
    let mut server = PeerProcess::spawn("ps_server.py", args);
    let port = tokio::task::block_in_place(|| server.read_listening_port());
    let config = PacketConfig { request_timeout: Some(PEER_TIMEOUT), ..PacketConfig::default() };
    let conn = PacketConnection::connect(("127.0.0.1", port), config).await.expect("connect to the Python server");
    (server, conn)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_server_answers_out_of_order_and_all_kinds() {
    let (server, conn) = python_server(&["--port", "0"]).await;
    let (done_tx, mut done) = tokio::sync::mpsc::unbounded_channel();
    // The Python handler sleeps on "slow:" echoes, so the fast one overtakes it.
    let slow = async {
        let reply = conn.call(0, 0, "slow:first").await;
        done_tx.send("slow").expect("receiver alive");
        reply
    };
    let fast = async {
        tokio::task::yield_now().await;
        let reply = conn.call(0, 0, "fast").await;
        done_tx.send("fast").expect("receiver alive");
        reply
    };
    let (slow, fast) = tokio::join!(slow, fast);
    assert_eq!(slow.expect("slow echo").payload, b"slow:first");
    assert_eq!(fast.expect("fast echo").payload, b"fast");
    assert_eq!((done.recv().await, done.recv().await), (Some("fast"), Some("slow")), "answers matched by tag");

    let reversed = conn.call(1, 0, "abcdef").await.expect("reverse");
    assert_eq!(reversed.payload, b"fedcba");
    assert_eq!(conn.call(2, 0, "x").await, Err(CallError::Refused("exception during handler".into())));
    let flags = conn.call(3, 1 << 40, "12345").await.expect("flags");
    assert_eq!((flags.flags, flags.payload.as_slice()), ((1 << 40) + 1, &b"5"[..]));
    let big: Vec<u8> = (0..1_500_000u32).map(|i| (i % 251) as u8).collect();
    assert_eq!(conn.call(0, 0, big.clone()).await.expect("large echo").payload, big);

    // Our ERQ/EOF, then the server's: both sides end cleanly.
    conn.close().await.expect("clean close");
    tokio::task::block_in_place(|| server.wait_success(PEER_TIMEOUT));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_server_closes_first() {
    let (server, conn) = python_server(&["--port", "0", "--close-first"]).await;
    assert_eq!(conn.call(0, 0, "hello").await.expect("answered before the close").payload, b"hello");
    // The server sent ERQ and EOF after that answer: our side answers with its own and ends.
    conn.finished().await.expect("the link ends cleanly");
    tokio::task::block_in_place(|| server.wait_success(PEER_TIMEOUT));
}
