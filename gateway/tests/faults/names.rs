//! What a client says about itself, in the log: names are bounded and cannot forge log lines.

use rivulet_core::session::MAX_CLIENT_NAME;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::gateway::{Gateway, within};
use crate::raw::{Answer, a_new_client_gets_through, init_frame, raw_init, read_answer};

/// A client name with a newline and an escape sequence is logged on its own line, escaped: it
/// cannot start a forged `ERROR` line or colour the operator's terminal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_name_cannot_forge_a_log_line() {
    let gateway = Gateway::start(&[]);
    let forged = "x\n2026-12-07T20:00:00.000000Z ERROR rivulet: the store is lost \u{1b}[2J";
    let (stream, answer) = raw_init(gateway.addr, forged).await;
    assert_eq!(answer, Answer::Accepted, "a strange name is still a name");
    gateway.clients_become(1).await;
    drop(stream);
    gateway.clients_become(0).await;
    let log = gateway.stop();
    assert!(!log.lines().any(|line| line.starts_with("2026-12-07T20:00:00")), "a forged line in the log:\n{log}");
    assert!(!log.contains('\u{1b}'), "an escape sequence reached the log:\n{log}");
    assert!(
        log.contains(r"x\n2026-12-07T20:00:00.000000Z ERROR rivulet: the store is lost \u{1b}[2J"),
        "the name, escaped:\n{log}"
    );
}

/// A 60 KB client name is refused at init with the limit, counted, and logged without it; a name
/// of exactly the limit is taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_name_over_the_limit_is_refused_with_the_limit() {
    let gateway = Gateway::start(&[]);
    let long = "n".repeat(60_000);
    let mut stream = within("connect", TcpStream::connect(gateway.addr)).await.expect("a TCP connection");
    stream.write_all(&init_frame(&long)).await.expect("send the init");
    match read_answer(&mut stream, &long).await {
        Answer::Refused(reason) => assert_eq!(
            reason,
            format!("the client name is 60000 bytes; the longest a server takes is {MAX_CLIENT_NAME}")
        ),
        other => panic!("a 60 KB name: {other:?}"),
    }
    assert_eq!(gateway.metrics().await.get("rivulet_clients_refused_total"), 1);
    let (at_limit, answer) = raw_init(gateway.addr, &"n".repeat(MAX_CLIENT_NAME)).await;
    assert_eq!(answer, Answer::Accepted, "a name of {MAX_CLIENT_NAME} bytes");
    drop(at_limit);
    a_new_client_gets_through(gateway.addr, "after-long-names").await;
    let log = gateway.stop();
    assert!(!log.contains(&long), "the long name is not logged");
}
