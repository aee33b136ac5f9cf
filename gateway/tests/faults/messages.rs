//! What a clumsy client is told: over the gateway's packet limit, the limit is named and the link
//! goes on; the bench stops with the reason instead of reconnecting; the metrics endpoint answers
//! a malformed request with 400.

use rivulet_tokio::model::{Payload, RegisterEvent};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common;
use crate::gateway::{Gateway, within};
use crate::raw::a_new_client_gets_through;

/// `rivulet args` against `gateway`, to its end, off the async runtime: (success, stdout, stderr).
async fn cli(gateway: &Gateway, args: &[&str]) -> (bool, String, String) {
    let args: Vec<String> = args.iter().map(|a| a.replace("GATEWAY", &gateway.addr.to_string())).collect();
    let dir = gateway.dir().to_path_buf();
    let output = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        common::run(&args, &dir, &[])
    })
    .await
    .expect("rivulet ran");
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    (output.status.success(), text(&output.stdout), text(&output.stderr))
}

/// Against `--max-packet 4096`, a 10 KB `rivulet pub` fails with the gateway's limit, and a
/// `rivulet bench --size 10000` stops with it at once: neither is sent, no link is dropped for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payload_over_the_gateways_packet_limit_is_refused_with_the_limit() {
    let gateway = Gateway::start(&["--max-packet", "4096"]);
    let payload = format!("\"{}\"", "x".repeat(10_000));
    let (ok, _, stderr) = cli(&gateway, &["pub", "--gateway", "GATEWAY", "big/one", &payload]).await;
    assert!(!ok, "a 10 KB pub against a 4 KiB limit");
    assert!(stderr.contains("its packets are at most 4096 bytes"), "{stderr}");

    let bench = ["bench", "--gateway", "GATEWAY", "--size", "10000", "--count", "100", "--drain", "1"];
    let (ok, _, stderr) = cli(&gateway, &bench).await;
    assert!(!ok, "the bench fails");
    assert!(stderr.contains("its packets are at most 4096 bytes"), "{stderr}");

    let metrics = gateway.metrics().await;
    assert_eq!(metrics.get("rivulet_bad_input_total"), 0, "nothing oversize reached the gateway");
    // The pub, the bench's subscriber and publisher: one link each, no reconnect loop.
    assert_eq!(metrics.get("rivulet_connections_accepted_total"), 3);
    a_new_client_gets_through(gateway.addr, "after-big").await;
    gateway.stop();
}

/// Reads the metrics endpoint's answer to `request`.
async fn scrape(gateway: &Gateway, request: &[u8]) -> String {
    let mut stream = within("metrics", TcpStream::connect(gateway.metrics_addr())).await.expect("connect");
    stream.write_all(request).await.expect("send");
    let mut answer = Vec::new();
    within("the answer", stream.read_to_end(&mut answer)).await.expect("read");
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_endpoint_tells_a_bad_request_from_a_wrong_method() {
    let gateway = Gateway::start(&[]);
    let garbled = scrape(&gateway, b"hello\r\n\r\n").await;
    assert!(garbled.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{garbled}");
    assert!(garbled.ends_with("request line without a method and a target\n"), "{garbled}");
    let not_utf8 = scrape(&gateway, b"GET /\xff\r\n\r\n").await;
    assert!(not_utf8.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{not_utf8}");
    let post = scrape(&gateway, b"POST /metrics HTTP/1.1\r\n\r\n").await;
    assert!(post.starts_with("HTTP/1.1 405 Method Not Allowed\r\n") && post.contains("Allow: GET"), "{post}");
    let elsewhere = scrape(&gateway, b"GET /other HTTP/1.1\r\n\r\n").await;
    assert!(elsewhere.starts_with("HTTP/1.1 404 Not Found\r\n"), "{elsewhere}");
    gateway.stop();
}

/// `rivulet query latest` over more types than one answer holds prints what fits and fails with
/// "partial answer" (it used to exit 0, silently short); narrower patterns get everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_latest_answer_cut_to_one_packet_says_it_is_partial() {
    const TYPES: usize = 1500;
    let gateway = Gateway::start(&[]);
    let (client, _) =
        within("a client", rivulet_tokio::connect(gateway.addr, rivulet_tokio::ClientOptions::new("many")))
            .await
            .expect("connect");
    // About 100 bytes each in the answer: 150 KB for all, more than the 64 KiB one holds.
    let payload = format!("\"{}\"", "v".repeat(60));
    let mut last = 0;
    for n in 0..TYPES {
        let ty = format!("many/{}/t{n}", n % 10);
        let event = RegisterEvent::new(ty.as_str(), Some(Payload::Json(payload.clone())));
        last = within("register", client.register(event)).await.expect("register");
    }
    within("stored", client.registered(last)).await.expect("stored");
    client.close().await;

    let (ok, stdout, stderr) = cli(&gateway, &["query", "latest", "--gateway", "GATEWAY", "many/*"]).await;
    assert!(!ok, "a cut answer is not a success");
    let printed = stdout.lines().count();
    assert!(printed > 0 && printed < TYPES, "printed {printed} of {TYPES}");
    assert!(stderr.contains(&format!("partial answer: the newest events of {printed} types")), "{stderr}");
    let (ok, stdout, stderr) = cli(&gateway, &["query", "latest", "--gateway", "GATEWAY", "many/3/*"]).await;
    assert!(ok, "{stderr}");
    assert_eq!(stdout.lines().count(), TYPES / 10, "a tenth of the types fit one answer");
    gateway.stop();
}
