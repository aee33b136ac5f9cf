//! The gateway's TLS listener beside its plain one, used through the `rivulet` CLI: an event
//! published over TLS is stored and seen over plain TCP, and a CLI that does not trust the
//! gateway's certificate says so.

use std::process::Command;

use rivulet_gateway::config::{NativeSettings, Settings, TlsSettings};
use rivulet_gateway::gateway::Gateway;

mod common;
use common::{RIVULET, certificates};

/// Runs the CLI (blocking, on a thread of its own so the in-process gateway keeps running).
async fn rivulet(args: Vec<String>) -> std::process::Output {
    tokio::task::spawn_blocking(move || Command::new(RIVULET).args(&args).env_remove("RIVULET_TOKEN").output())
        .await
        .unwrap()
        .expect("run rivulet")
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(ToString::to_string).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_publishes_over_tls_and_refuses_an_untrusted_gateway() {
    let dir = tempfile::tempdir().unwrap();
    certificates(dir.path());
    let path = |name: &str| dir.path().join(name).display().to_string();
    let tls = TlsSettings {
        listen: "127.0.0.1:0".parse().unwrap(),
        cert: dir.path().join("server.pem"),
        key: dir.path().join("server.key"),
    };
    let native = NativeSettings { listen: "127.0.0.1:0".parse().unwrap(), tls: Some(tls), serial_listen: None };
    let settings = Settings { native, data: dir.path().join("data"), ..Settings::default() };
    let gateway = Gateway::start(&settings).await.expect("starts with TLS");
    let (plain, secure) = (gateway.local_addr().to_string(), gateway.tls_addr().expect("a TLS listener").to_string());

    let published =
        rivulet(args(&["pub", "--gateway", &secure, "--tls-ca", &path("ca.pem"), "sensor/tls", "\"secret\""])).await;
    assert!(published.status.success(), "{}", String::from_utf8_lossy(&published.stderr));
    let latest = rivulet(args(&["query", "latest", "sensor/*", "--gateway", &plain])).await;
    let text = String::from_utf8_lossy(&latest.stdout);
    assert!(text.contains(r#""payload":"secret""#), "stored through TLS, read over TCP: {text}");

    let untrusted =
        rivulet(args(&["pub", "--gateway", &secure, "--tls-ca", &path("other-ca.pem"), "sensor/tls", "1"])).await;
    assert!(!untrusted.status.success());
    let why = String::from_utf8_lossy(&untrusted.stderr);
    assert!(why.contains("certificate"), "says the certificate is the problem: {why}");
    let wrong_name = rivulet(args(&[
        "pub",
        "--gateway",
        &secure,
        "--tls-ca",
        &path("ca.pem"),
        "--tls-name",
        "elsewhere",
        "sensor/tls",
        "1",
    ]))
    .await;
    assert!(!wrong_name.status.success(), "a certificate for another name is refused");
    let missing = rivulet(args(&["pub", "--gateway", &secure, "--tls-ca", &path("none.pem"), "sensor/tls", "1"])).await;
    assert!(String::from_utf8_lossy(&missing.stderr).contains("none.pem"), "names the missing file");
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_certificate_file_stops_the_start_with_its_name() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("empty.pem"), "").unwrap();
    let tls = TlsSettings {
        listen: "127.0.0.1:0".parse().unwrap(),
        cert: dir.path().join("empty.pem"),
        key: dir.path().join("empty.pem"),
    };
    let native = NativeSettings { listen: "127.0.0.1:0".parse().unwrap(), tls: Some(tls), serial_listen: None };
    let settings = Settings { native, ..Settings::default() };
    let why = Gateway::start(&Settings { data: dir.path().join("data"), ..settings }).await.err().expect("refused");
    assert!(why.contains("empty.pem"), "{why}");
    assert!(!dir.path().join("data").exists(), "nothing is created before the settings are good");
}
