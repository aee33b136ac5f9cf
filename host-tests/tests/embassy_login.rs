//! A `rivulet-embassy` device logging in to the real gateway (its library, in process) that has
//! `[[clients]]` configured: with its token it gets in and registers within its ACL; with a wrong
//! token or none it is refused and keeps trying, storing nothing.

use std::net::SocketAddr;
use std::time::Duration;

use embassy_sync::blocking_mutex::raw::CriticalSectionRawMutex;
use rivulet_core::model::{EventPayloadRef, Order};
use rivulet_embassy::{Backoff, Config, Device, LinkStatus, State};
use rivulet_gateway::access::{Credential, to_hex};
use rivulet_gateway::config::{ClientEntry, NativeSettings, Settings};
use rivulet_gateway::gateway::Gateway;
use rivulet_host_tests::{Loopback, within};
use rivulet_tokio::model::TimeseriesQuery;

fn leak<T>(value: T) -> &'static mut T {
    Box::leak(Box::new(value))
}

/// Starts a device whose runner runs on a thread of its own (its future is not `Send`).
fn device(addr: SocketAddr, name: &'static str, token: Option<&'static [u8; 32]>) -> &'static Device<'static> {
    let state: &'static State = leak(State::new());
    let backoff =
        Backoff { initial: embassy_time::Duration::from_millis(20), max: embassy_time::Duration::from_millis(100) };
    let config = Config { token, backoff, seed: 3, ..Config::new(name) };
    let (rx, tx) = (Box::leak(vec![0u8; 2048].into_boxed_slice()), Box::leak(vec![0u8; 2048].into_boxed_slice()));
    let (device, mut runner) =
        rivulet_embassy::new::<_, CriticalSectionRawMutex, 4, 2>(state, config, Loopback(addr), rx, tx);
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
        runtime.block_on(runner.run());
    });
    leak(device)
}

async fn wait_status(device: &Device<'_>, what: &str, check: impl Fn(&LinkStatus) -> bool) -> LinkStatus {
    let mut watcher = device.status_watcher().expect("a watcher slot");
    within(what, watcher.wait_for(check)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_logs_in_with_its_token_and_only_with_it() {
    let token: &'static [u8; 32] = leak(core::array::from_fn(|i| (i * 7) as u8));
    let credential = Credential::from_token(token, [9; 16]);
    let entry = ClientEntry {
        name: "dev-1".into(),
        salt: to_hex(&credential.salt),
        stored_key: to_hex(&credential.stored_key),
        register: Some(vec!["device/dev-1/*".into()]),
        subscribe: None,
        request: None,
        federate: false,
        files: Default::default(),
    };
    let dir = tempfile::tempdir().unwrap();
    let settings = Settings {
        native: NativeSettings { listen: "127.0.0.1:0".parse().unwrap(), ..NativeSettings::default() },
        data: dir.path().to_path_buf(),
        clients: vec![entry],
        ..Settings::default()
    };
    let gateway = Gateway::start(&settings).await.expect("the gateway starts");
    let addr = gateway.local_addr();

    let good = device(addr, "dev-1", Some(token));
    wait_status(good, "the login", |s| s.connected).await;
    let seq = good.register("device/dev-1/temp", None, Some(EventPayloadRef::Json("21.5"))).await.expect("queued");
    wait_status(good, "stored", |s| s.registered_below > seq).await;

    let wrong: &'static [u8; 32] = leak([0xee; 32]);
    let impostor = device(addr, "dev-1", Some(wrong));
    let anonymous = device(addr, "dev-1", None);
    for (who, what) in [(impostor, "the impostor"), (anonymous, "the anonymous one")] {
        who.register("device/dev-1/temp", None, Some(EventPayloadRef::Json("99"))).await.expect("queued offline");
        let status = wait_status(who, what, |s| s.inits_refused >= 2).await;
        assert!(!status.connected, "{what} never gets in");
    }
    tokio::time::sleep(Duration::from_millis(100)).await;

    let all = TimeseriesQuery { order: Order::Ascending, ..TimeseriesQuery::default() };
    let stored = gateway.broker().store().timeseries(&all, usize::MAX);
    let payloads: Vec<String> = stored.expect("readable").events.iter().map(|e| format!("{:?}", e.payload)).collect();
    assert_eq!(payloads, vec![r#"Some(Json("21.5"))"#], "only the logged-in device stored anything");
    gateway.stop().await;
}
