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
