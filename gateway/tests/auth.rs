//! Logins and ACLs through the real `rivulet` binary: clients made with `rivulet credential`,
//! a gateway configured with them, and `pub`/`sub`/`query` logging in (or failing to).

mod common;

use std::path::Path;
use std::time::Duration;

use common::{PATIENCE, Running, fails, ok, run};

/// A client made by `rivulet credential`: its token and the config entry.
struct Made {
    token: String,
    entry: String,
}

fn credential(args: &[&str], dir: &Path) -> Made {
    let mut all = vec!["credential"];
    all.extend_from_slice(args);
    let output = run(&all, dir, &[]);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "rivulet credential {args:?} failed: {stderr}");
    let token = stderr
        .split_whitespace()
        .find(|word| word.len() == 64 && word.chars().all(|c| c.is_ascii_hexdigit()))
        .unwrap_or_else(|| panic!("a 64-hex-digit token on stderr: {stderr}"))
        .to_string();
    assert!(stderr.to_lowercase().contains("secret"), "says to keep it secret: {stderr}");
    let entry = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(entry.contains("[[clients]]") && entry.contains("stored_key = "), "{entry}");
    assert!(!entry.contains(&token), "the token stays out of the config entry");
    Made { token, entry }
}

fn write_config(dir: &Path, listen: &str, entries: &[&str]) -> String {
    let path = dir.join("gateway.toml");
    let text = format!("listen = \"{listen}\"\ndata = \"data\"\n\n{}", entries.join("\n"));
    std::fs::write(&path, text).expect("write config");
    path.display().to_string()
}

fn args(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn logins_and_acls_through_the_cli() {
    let dir = tempfile::tempdir().expect("temp dir");
    let dir = dir.path();
    let dev = credential(&["dev", "--register", "sensor/*", "--subscribe", "sensor/*"], dir);
    let admin = credential(&["admin"], dir);
    let config = write_config(dir, "127.0.0.1:0", &[&dev.entry, &admin.entry]);
    let gateway = Running::spawn(&["gateway", "--config", &config], dir, &[]);
    let addr = format!("127.0.0.1:{}", gateway.listening_port());
    let as_dev = ["--gateway", &addr, "--name", "dev", "--token", &dev.token];
    let as_admin_env = [("RIVULET_TOKEN", admin.token.as_str())];
    let as_admin = ["--gateway", &addr, "--name", "admin"];
    let with = |command: &[&str], login: &[&str]| -> Vec<String> {
        command.iter().chain(login).map(|s| s.to_string()).collect()
    };

    // The admin (everything allowed, token from RIVULET_TOKEN) registers something dev may not see.
    let other = with(&["pub", "other/thing", "1"], &as_admin);
    ok(&args(&other), dir, &as_admin_env);

    // The right token subscribes and publishes.
    let sub = with(&["sub", "--count", "1", "sensor/*"], &as_dev);
    let sub = Running::spawn(&args(&sub), dir, &[]);
    let publish = with(&["pub", "sensor/room1/temp", "21.5"], &as_dev);
    let mut published = 0;
    let received = loop {
        ok(&args(&publish), dir, &[]);
        published += 1;
        if let Some(line) = sub.line_within(Duration::from_millis(300)) {
            break line;
        }
        assert!(published < 50, "`rivulet sub` as dev never received an event");
    };
    assert!(received.contains(r#""type":["sensor","room1","temp"]"#), "{received}");

    // A wrong token and an unknown name: refused alike, with what to check.
    let wrong_token = "00".repeat(32);
    let wrong =
        fails(&["pub", "--gateway", &addr, "--name", "dev", "--token", &wrong_token, "sensor/x", "1"], dir, &[]);
    let unknown =
        fails(&["pub", "--gateway", &addr, "--name", "ghost", "--token", &dev.token, "sensor/x", "1"], dir, &[]);
    for stderr in [&wrong, &unknown] {
        assert!(stderr.contains("unknown client or wrong credential"), "{stderr}");
        assert!(stderr.contains("--token") && stderr.contains("RIVULET_TOKEN"), "says what to check: {stderr}");
    }
    // No login at all: told that one is needed.
    let anonymous = fails(&["pub", "--gateway", &addr, "sensor/x", "1"], dir, &[]);
    assert!(anonymous.contains("requires a login") && anonymous.contains("--name"), "{anonymous}");
    // A token that is not one.
    let garbled = fails(&["pub", "--gateway", &addr, "--name", "dev", "--token", "secret", "sensor/x", "1"], dir, &[]);
    assert!(garbled.contains("hex digits"), "{garbled}");

    // Outside dev's register list: refused with the type named, and nothing stored.
    let secret = with(&["pub", "secret/door", "\"open\""], &as_dev);
    let refused = fails(&args(&secret), dir, &[]);
    assert!(refused.contains("secret/door") && refused.contains("may not register"), "{refused}");
    let everything = with(&["query", "timeseries"], &as_admin);
    let stored = ok(&args(&everything), dir, &as_admin_env);
    assert!(stored.contains(r#""type":["other","thing"]"#), "the admin sees every type: {stored}");
    assert!(stored.contains(r#""type":["sensor","room1","temp"]"#), "{stored}");
    assert!(!stored.contains("secret"), "the refused registration is not stored: {stored}");
    let latest = ok(&args(&with(&["query", "latest"], &as_admin)), dir, &as_admin_env);
    assert!(!latest.contains("secret"), "{latest}");

    // Outside dev's subscribe list: refused with the pattern named.
    let sub_secret = fails(&args(&with(&["sub", "--count", "1", "secret/*"], &as_dev)), dir, &[]);
    assert!(sub_secret.contains("may not subscribe to secret/*"), "{sub_secret}");
    // Dev's queries stay within its list: without types it gets only sensor events...
    let mine = ok(&args(&with(&["query", "latest"], &as_dev)), dir, &[]);
    assert!(mine.contains(r#""type":["sensor","room1","temp"]"#), "{mine}");
    assert!(!mine.contains("other"), "dev sees only what it may subscribe to: {mine}");
    // ...and naming another type is refused.
    let query_other = fails(&args(&with(&["query", "timeseries", "other/*"], &as_dev)), dir, &[]);
    assert!(query_other.contains("may not query other/*"), "{query_other}");
    // Status needs a login too, and works with one.
    assert!(fails(&["status", "--gateway", &addr], dir, &[]).contains("requires a login"));
    let status = ok(&args(&with(&["status"], &as_dev)), dir, &[]);
    let status: serde_json::Value = serde_json::from_str(&status).expect("status is JSON");
    let native = status["frontends"].as_array().and_then(|all| all.iter().find(|f| f["name"] == "native"));
    let native = native.unwrap_or_else(|| panic!("the native front-end in {status}"));
    assert_eq!(native["registrations_refused"], 1, "the refused `rivulet pub` is counted: {status}");
}

#[test]
fn a_public_listener_needs_clients_or_insecure() {
    let dir = tempfile::tempdir().expect("temp dir");
    let dir = dir.path();
    let config = write_config(dir, "0.0.0.0:0", &[]);
    let refused = fails(&["gateway", "--config", &config], dir, &[]);
    assert!(refused.contains("--insecure") && refused.contains("rivulet credential"), "{refused}");

    let made = credential(&["dev", "--no-register"], dir);
    assert!(made.entry.contains("register = []"), "{}", made.entry);
    let config = write_config(dir, "0.0.0.0:0", &[&made.entry]);
    let gateway = Running::spawn(&["gateway", "--config", &config], dir, &[]);
    let addr = format!("127.0.0.1:{}", gateway.listening_port());
    let status = ok(&["status", "--gateway", &addr, "--name", "dev"], dir, &[("RIVULET_TOKEN", &made.token)]);
    assert!(status.contains("\"server_id\""), "{status}");
    let read_only = fails(&["pub", "--gateway", &addr, "--name", "dev", "--token", &made.token, "a/b", "1"], dir, &[]);
    assert!(read_only.contains("may not register a/b (allowed: nothing)"), "{read_only}");
}

#[test]
fn mistakes_in_clients_stop_the_start() {
    let dir = tempfile::tempdir().expect("temp dir");
    let dir = dir.path();
    let made = credential(&["dev"], dir);
    let entry = format!("{}register = [\"a/*/b\"]\n", made.entry);
    let config = write_config(dir, "127.0.0.1:0", &[&entry]);
    let stderr = fails(&["gateway", "--config", &config], dir, &[]);
    assert!(stderr.contains("\"dev\"") && stderr.contains("a/*/b"), "{stderr}");
    let bad = fails(&["credential", "dev", "--subscribe", "a/*/b"], dir, &[]);
    assert!(bad.contains("--subscribe") && bad.contains("a/*/b"), "{bad}");
}

/// A `rivulet-tokio` client against the binary: subscriptions after the init and sequenced
/// registrations meet the same ACL (the CLI only subscribes in its init and registers with
/// response).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_library_client_meets_the_acl_after_the_init() {
    use rivulet_gateway::access::from_hex;
    use rivulet_gateway::frontend::native::login;
    use rivulet_tokio::model::RegisterEvent;
    use rivulet_tokio::{ClientError, ClientOptions, connect};

    let dir = tempfile::tempdir().expect("temp dir");
    let dir = dir.path();
    let dev = credential(&["dev", "--register", "sensor/*", "--subscribe", "sensor/*"], dir);
    let config = write_config(dir, "127.0.0.1:0", &[&dev.entry]);
    let gateway = Running::spawn(&["gateway", "--config", &config], dir, &[]);
    let addr = format!("127.0.0.1:{}", gateway.listening_port());

    let anonymous = connect(addr.clone(), ClientOptions::new("dev")).await.err();
    assert!(matches!(anonymous, Some(ClientError::Refused(_))), "no answer to the challenge, no login: {anonymous:?}");

    let token = from_hex(&dev.token).expect("hex token");
    let mut options = ClientOptions::new("dev");
    options.challenge = Some(login::answer("dev", token));
    let (client, _events) = tokio::time::timeout(PATIENCE, connect(addr, options))
        .await
        .expect("connected in time")
        .expect("the right token logs in");
    client.subscribe("sensor/?/temp").await.expect("covered by sensor/*");
    match client.subscribe("secret/*").await {
        Err(ClientError::Refused(reason)) => assert!(reason.contains("may not subscribe to secret/*"), "{reason}"),
        other => panic!("a subscription outside the list must be refused, got {other:?}"),
    }
    let allowed = client.register(RegisterEvent::new("sensor/a", None)).await.expect("queued");
    tokio::time::timeout(PATIENCE, client.registered(allowed)).await.expect("in time").expect("stored");
    let secret = client.register(RegisterEvent::new("secret/door", None)).await.expect("queued");
    match tokio::time::timeout(PATIENCE, client.registered(secret)).await.expect("in time") {
        Err(ClientError::Refused(reason)) => {
            assert_eq!(reason, r#"client "dev" may not register secret/door (allowed: sensor/*)"#);
        }
        other => panic!("a registration outside the list must be refused, got {other:?}"),
    }
    client.close().await;
}
