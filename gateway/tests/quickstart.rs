//! The README's quick start, as a test: a gateway in a fresh directory, `rivulet sub` in one
//! process, `rivulet pub` in another; the event arrives, and `rivulet query latest` returns it.
//! Then a restart keeps the event and instance numbers continue.

mod common;

use std::time::Duration;

use common::{Running, fails, ok};

#[test]
fn quick_start_pub_sub_query_and_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let gateway = Running::spawn(&["gateway", "--listen", "127.0.0.1:0"], dir.path(), &[]);
    let addr = gateway.listening_addr();

    let sub = Running::spawn(&["sub", "--gateway", &addr, "--count", "1", "sensor/*"], dir.path(), &[]);
    // `sub` is subscribed once it is connected; publish until it has seen one (the first
    // publication may come before its subscription is in place).
    let mut published = Vec::new();
    let received = loop {
        published.push(ok(&["pub", "--gateway", &addr, "sensor/room1/temp", "21.5"], dir.path(), &[]));
        if let Some(line) = sub.line_within(Duration::from_millis(300)) {
            break line;
        }
        assert!(published.len() < 50, "`rivulet sub` never received an event");
    };
    assert!(received.contains(r#""type":["sensor","room1","temp"]"#), "{received}");
    assert!(received.contains(r#""payload":21.5"#), "{received}");
    assert!(published.iter().any(|p| p.trim() == received.trim()), "sub printed what pub registered");

    let latest = ok(&["query", "latest", "sensor/*", "--gateway", &addr], dir.path(), &[]);
    let last_published = published.last().expect("published").trim().to_string();
    assert_eq!(latest.trim(), last_published, "latest is the newest event of the type");
    let instance = |event: &str| -> u64 {
        let id = event.split("\"id\":[").nth(1).and_then(|rest| rest.split(']').next()).expect("an id");
        id.split(',').nth(2).and_then(|i| i.parse().ok()).expect("an instance number")
    };
    let last_instance = instance(&last_published);
    gateway.terminate();

    // Restart on the same directory: the event is still there, and new ones count on.
    let gateway = Running::spawn(&["gateway", "--listen", "127.0.0.1:0"], dir.path(), &[]);
    let addr = gateway.listening_addr();
    let latest = ok(&["query", "latest", "--gateway", &addr], dir.path(), &[]);
    assert_eq!(latest.trim(), last_published, "the stored event survives a restart");
    let next = ok(&["pub", "--gateway", &addr, "sensor/room1/temp", "22"], dir.path(), &[]);
    assert!(instance(&next) > last_instance, "instance numbers continue: {next} after {last_published}");
    gateway.terminate();
}

#[test]
fn clear_errors_for_bad_input_and_no_gateway() {
    let dir = tempfile::tempdir().expect("temp dir");
    let fail = |args: &[&str]| fails(args, dir.path(), &[]);
    let no_gateway = fail(&["pub", "--gateway", "127.0.0.1:1", "a/b", "1"]);
    assert!(no_gateway.contains("rivulet gateway"), "says how to start one: {no_gateway}");
    let bad_json = fail(&["pub", "--gateway", "127.0.0.1:1", "a/b", "{not json"]);
    assert!(bad_json.contains("not JSON"), "{bad_json}");
    let bad_pattern = fail(&["sub", "--gateway", "127.0.0.1:1", "a/*/b"]);
    assert!(bad_pattern.contains("last segment"), "{bad_pattern}");
}

/// A supervisor that stops reading the gateway's stdout must not take the gateway down, and a
/// `rivulet query` whose reader went away ends quietly.
#[test]
fn a_closed_stdout_stops_neither_the_gateway_nor_the_cli() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().expect("temp dir");
    let mut gateway = Command::new(common::RIVULET)
        .args(["gateway", "--listen", "127.0.0.1:0"])
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the gateway");
    let mut first = String::new();
    BufReader::new(gateway.stdout.take().expect("piped")).read_line(&mut first).expect("a line");
    // The pipe is closed now: the gateway's next lines go nowhere.
    let addr = first.split_whitespace().nth(4).expect("the address").to_string();
    for n in 0..20 {
        ok(&["pub", "--gateway", &addr, "sensor/x", &n.to_string()], dir.path(), &[]);
    }
    assert!(gateway.try_wait().expect("wait").is_none(), "the gateway still runs");
    // A reader that takes one line and leaves (like `| head -1`).
    let mut query = Command::new(common::RIVULET)
        .args(["query", "timeseries", "sensor/*", "--gateway", &addr])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the query");
    let mut line = String::new();
    BufReader::new(query.stdout.take().expect("piped")).read_line(&mut line).expect("a line");
    let status = query.wait().expect("the query ends");
    assert!(line.contains("sensor"), "{line}");
    assert!(status.success(), "ends quietly without its reader: {status}");
    let _ = gateway.kill();
    let _ = gateway.wait();
}
