//! The settings' tests: defaults, the file, flags over it, what is refused, the exposure rule.
use super::*;

fn args() -> GatewayArgs {
    GatewayArgs::default()
}

/// A client entry whose credential no test checks.
fn entry(name: &str) -> ClientEntry {
    ClientEntry {
        name: name.into(),
        salt: "00".into(),
        stored_key: "00".into(),
        register: None,
        subscribe: None,
        request: None,
        federate: false,
        files: Default::default(),
    }
}

fn from_toml(text: &str) -> Result<Settings, String> {
    let file: File = toml::from_str(text).map_err(|e| e.to_string())?;
    Settings::from_file(file)
}

#[test]
fn defaults_without_file_or_flags() {
    let settings = Settings::load(&args()).unwrap();
    assert_eq!(settings, Settings::default());
    assert_eq!(settings.native.listen.to_string(), DEFAULT_LISTEN);
    assert_eq!(settings.exposure(), None, "loopback needs no authentication");
}

#[test]
fn the_file_sets_and_flags_override() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gw.toml");
    std::fs::write(
        &path,
        r#"
listen = "127.0.0.1:9000"
server_id = 7
volatile = ["telemetry/*"]
[commit]
events = 50
ms = 20
[limits]
connections = 3
notify_queue_mb = 8
notify_total_mb = 100
notify_stall_ms = 500
[retention]
max_age = "2d"
max_events = 1000
[tls]
listen = "127.0.0.1:9001"
cert = "c.pem"
key = "k.pem"
[[clients]]
name = "dev"
salt = "00"
stored_key = "11"
register = ["sensor/*"]
"#,
    )
    .unwrap();
    let flags = GatewayArgs {
        config: Some(path),
        server_id: Some(9),
        commit_ms: Some(1),
        notify_total_mb: Some(64),
        notify_high_water: Some(100),
        volatile: vec!["site/?/vibration".into(), "telemetry/*".into()],
        ..args()
    };
    let s = Settings::load(&flags).unwrap();
    assert_eq!(s.native.listen.to_string(), "127.0.0.1:9000");
    assert_eq!(s.server_id, 9, "a flag wins over the file");
    assert_eq!((s.commit_events, s.commit_delay), (50, Duration::from_millis(1)));
    assert_eq!(s.max_connections, 3);
    assert_eq!((s.notify_queue_bytes, s.notify_total_bytes), (8 << 20, 64 << 20), "MiB, the flag over the file");
    assert_eq!((s.notify_high_water, s.notify_stall), (100, Duration::from_millis(500)));
    assert_eq!(s.retain_age, Some(Duration::from_secs(2 * 86_400)));
    assert_eq!(s.retain_events, Some(1000));
    assert_eq!(s.native.tls.as_ref().map(|t| t.listen.port()), Some(9001));
    assert_eq!(s.clients.len(), 1);
    assert_eq!(s.clients[0].register, Some(vec!["sensor/*".to_string()]));
    assert_eq!(s.clients[0].subscribe, None);
    let volatile: Vec<String> = s.volatile.iter().map(ToString::to_string).collect();
    assert_eq!(volatile, ["telemetry/*", "site/?/vibration"], "the flags add to the file's, each once");
}

#[test]
fn the_native_section_and_the_keys_it_took_over() {
    let section = from_toml(
        r#"
[native]
listen = "127.0.0.1:9100"
serial_listen = "127.0.0.1:9101"
[native.tls]
listen = "127.0.0.1:9102"
cert = "c.pem"
key = "k.pem"
"#,
    )
    .unwrap();
    assert_eq!(section.native.listen.port(), 9100);
    assert_eq!(section.native.serial_listen.map(|a| a.port()), Some(9101));
    assert_eq!(section.native.tls.as_ref().map(|t| (t.listen.port(), t.cert.clone())), Some((9102, "c.pem".into())));
    // A file written before [native]: the same settings at the top and in [tls].
    let old = from_toml(
        "listen = \"127.0.0.1:9100\"\nserial_listen = \"127.0.0.1:9101\"\n[tls]\nlisten = \"127.0.0.1:9102\"\ncert = \"c.pem\"\nkey = \"k.pem\"",
    )
    .unwrap();
    assert_eq!(old.native, section.native, "read as the [native] ones");
    let twice = from_toml("listen = \"127.0.0.1:1\"\n[native]\nlisten = \"127.0.0.1:2\"").unwrap_err();
    assert!(twice.contains("`listen` is set twice") && twice.contains("[native]"), "{twice}");
    let tls_twice = from_toml(
        "[tls]\nlisten = \"127.0.0.1:1\"\ncert = \"a\"\nkey = \"b\"\n[native.tls]\nlisten = \"127.0.0.1:2\"\ncert = \"a\"\nkey = \"b\"",
    )
    .unwrap_err();
    assert!(tls_twice.contains("[native.tls]"), "{tls_twice}");
    let unknown = from_toml("[native]\nlisen = \"127.0.0.1:1\"").unwrap_err();
    assert!(unknown.contains("lisen"), "{unknown}");
}

#[test]
fn the_hat_section_and_its_exposure() {
    let hat = from_toml("[hat]\nlisten = \"127.0.0.1:23012\"\nping_delay_s = 5\nping_timeout_s = 7\nmax_frame = 2048")
        .unwrap()
        .hat;
    assert_eq!(hat.listen.map(|a| a.port()), Some(23012));
    assert_eq!(
        (hat.ping_delay, hat.ping_timeout, hat.max_frame),
        (Duration::from_secs(5), Duration::from_secs(7), 2048)
    );
    let flag = Settings::load(&GatewayArgs { hat_listen: "127.0.0.1:23013".parse().ok(), ..args() }).unwrap();
    assert_eq!(flag.hat.listen.map(|a| a.port()), Some(23013));
    let small = from_toml("[hat]\nmax_frame = 10").unwrap().check().unwrap_err();
    assert!(small.contains("max_frame"), "{small}");
    // Tokens in clear: beyond loopback only with --insecure, logins configured or not.
    let mut public = Settings {
        hat: HatSettings { listen: "0.0.0.0:23012".parse().ok(), ..HatSettings::default() },
        ..Settings::default()
    };
    public.clients.push(entry("a"));
    let why = public.exposure().expect("refused");
    assert!(why.contains("--hat-listen") && why.contains("in clear"), "{why}");
    assert!(Settings { insecure: true, ..public }.exposure().is_none());
}

#[test]
fn hat_over_tls_its_files_and_its_exposure() {
    let file = from_toml("[hat.tls]\nlisten = \"127.0.0.1:23014\"\ncert = \"h.pem\"\nkey = \"h.key\"").unwrap();
    let tls = file.hat.tls.as_ref().expect("[hat.tls]");
    assert_eq!((tls.listen.port(), tls.cert.to_str()), (23014, Some("h.pem")));
    assert_eq!(file.native.tls, None, "the native front-end keeps plain TCP");
    // The flag takes the files from --tls-cert/--tls-key; with only it, they are not the
    // native listener's.
    let flags = GatewayArgs {
        hat_tls_listen: "127.0.0.1:23015".parse().ok(),
        tls_cert: Some("c.pem".into()),
        tls_key: Some("k.pem".into()),
        ..args()
    };
    let s = Settings::load(&flags).unwrap();
    assert_eq!(s.hat.tls.as_ref().map(|t| (t.listen.port(), t.key.clone())), Some((23015, "k.pem".into())));
    assert_eq!(s.native.tls, None);
    // ...else the file's (here the native listener's).
    let mut s = from_toml("[native.tls]\nlisten = \"127.0.0.1:9102\"\ncert = \"n.pem\"\nkey = \"n.key\"").unwrap();
    s.apply(&GatewayArgs { hat_tls_listen: "127.0.0.1:23016".parse().ok(), ..args() }).unwrap();
    assert_eq!(s.hat.tls.as_ref().map(|t| t.cert.clone()), Some("n.pem".into()));
    assert_eq!(s.native.tls.as_ref().map(|t| t.listen.port()), Some(9102), "the native one stays");
    let bare = Settings::load(&GatewayArgs { hat_tls_listen: "127.0.0.1:1".parse().ok(), ..args() }).unwrap_err();
    assert!(bare.contains("--hat-tls-listen") && bare.contains("--tls-cert"), "{bare}");
    // Tokens go encrypted: beyond loopback it needs what a native listener needs, logins.
    let mut public = Settings {
        hat: HatSettings {
            tls: Some(TlsSettings { listen: "0.0.0.0:23012".parse().unwrap(), cert: "c".into(), key: "k".into() }),
            ..HatSettings::default()
        },
        ..Settings::default()
    };
    let why = public.exposure().expect("refused without logins");
    assert!(why.contains("--hat-tls-listen") && why.contains("authentication"), "{why}");
    public.clients.push(entry("a"));
    assert_eq!(public.exposure(), None, "with logins over TLS");
}

#[test]
fn every_front_end_listener_counts_for_the_exposure_rule() {
    let serial_public = Settings {
        native: NativeSettings { serial_listen: "0.0.0.0:7781".parse().ok(), ..NativeSettings::default() },
        ..Settings::default()
    };
    let why = serial_public.exposure().expect("refused");
    assert!(why.contains("0.0.0.0:7781") && why.contains("--serial-listen") && why.contains("native"), "{why}");
    assert!(Settings { insecure: true, ..serial_public }.exposure().is_none());
}

#[test]
fn a_metrics_endpoint_beyond_loopback_is_allowed_with_a_warning() {
    let public = Settings { metrics: "0.0.0.0:9100".parse().ok(), ..Settings::default() };
    assert_eq!(public.exposure(), None, "allowed");
    let warning = public.metrics_exposure().expect("a warning");
    assert!(warning.contains("0.0.0.0:9100") && warning.contains("without authentication"), "{warning}");
    let local = Settings { metrics: "127.0.0.1:9100".parse().ok(), ..Settings::default() };
    assert_eq!(local.metrics_exposure(), None);
}

#[test]
fn mistakes_in_the_file_are_named() {
    let unknown = from_toml("listen = \"127.0.0.1:1\"\nlisen = 3").unwrap_err();
    assert!(unknown.contains("lisen"), "{unknown}");
    let bad_addr = from_toml("listen = \"here\"").unwrap_err();
    assert!(bad_addr.contains("listen") || bad_addr.contains("address"), "{bad_addr}");
    let bad_age = from_toml("[retention]\nmax_age = \"3 weeks\"").unwrap_err();
    assert!(bad_age.contains("3 weeks"), "{bad_age}");
    let bad_pattern = from_toml("volatile = [\"a/*/b\"]").unwrap_err();
    assert!(bad_pattern.contains("volatile pattern \"a/*/b\""), "{bad_pattern}");
    let missing = Settings::load(&GatewayArgs { config: Some("/nonexistent/gw.toml".into()), ..args() });
    assert!(missing.unwrap_err().contains("/nonexistent/gw.toml"));
}

#[test]
fn impossible_values_are_refused() {
    let zero = Settings::load(&GatewayArgs { notify_queue: Some(0), ..args() }).unwrap_err();
    assert!(zero.contains("notify queue"), "{zero}");
    let stall = Settings::load(&GatewayArgs { notify_stall_ms: Some(5), ..args() }).unwrap_err();
    assert!(stall.contains("notify stall 5 ms is too short"), "{stall}");
    assert!(Settings::load(&GatewayArgs { notify_stall_ms: Some(0), ..args() }).is_ok(), "0: never wait");
    let small = Settings::load(&GatewayArgs { max_packet: Some(10), ..args() }).unwrap_err();
    assert!(small.contains("max packet"), "{small}");
    let huge = Settings::load(&GatewayArgs { max_packet: Some(u32::MAX), ..args() }).unwrap_err();
    assert!(huge.contains("max packet 4294967295 is too large: at most 16777216 bytes"), "{huge}");
    assert!(Settings::load(&GatewayArgs { max_packet: Some(MAX_MAX_PACKET), ..args() }).is_ok());
    let half_tls = Settings::load(&GatewayArgs { tls_listen: "127.0.0.1:1".parse().ok(), ..args() }).unwrap_err();
    assert!(half_tls.contains("--tls-cert"), "{half_tls}");
    let mut twice = Settings::default();
    let entry = entry("a");
    twice.clients = vec![entry.clone(), entry];
    assert!(twice.check().unwrap_err().contains("twice"));
}

#[test]
fn a_public_address_needs_authentication_or_insecure() {
    let public = Settings::load(&GatewayArgs { listen: "0.0.0.0:7780".parse().ok(), ..args() }).unwrap();
    let why = public.exposure().expect("refused");
    assert!(why.contains("0.0.0.0:7780") && why.contains("--insecure"), "{why}");
    let insecure =
        Settings::load(&GatewayArgs { listen: "0.0.0.0:7780".parse().ok(), insecure: true, ..args() }).unwrap();
    assert_eq!(insecure.exposure(), None);
    let mut with_clients = public.clone();
    with_clients.clients.push(entry("a"));
    assert_eq!(with_clients.exposure(), None);
    let tls = TlsSettings { listen: "[::]:7781".parse().unwrap(), cert: "c".into(), key: "k".into() };
    let tls_public =
        Settings { native: NativeSettings { tls: Some(tls), ..NativeSettings::default() }, ..Settings::default() };
    assert!(tls_public.exposure().is_some(), "TLS alone is not authentication");
}

#[test]
fn ages() {
    assert_eq!(parse_age("30d"), Ok(Duration::from_secs(30 * 86_400)));
    assert_eq!(parse_age("90m"), Ok(Duration::from_secs(5400)));
    assert_eq!(parse_age("3600"), Ok(Duration::from_secs(3600)));
    assert!(parse_age("3w").unwrap_err().contains("unit"));
    assert!(parse_age("").is_err());
    assert!(parse_age("99999999999999999999d").is_err());
}

#[test]
fn federation_peers_from_the_file_and_flags() {
    let mut settings = from_toml(
        r#"
[federation]
name = "plant-a"
token = "0a0b"
ttl = 8
ping_s = 2
[[federation.peers]]
addr = "10.0.0.7:7780"
name = "other-name"
[[clients]]
name = "plant-b"
salt = "00"
stored_key = "00"
federate = true
"#,
    )
    .unwrap();
    assert_eq!((settings.federation.ttl, settings.federation.ping_every), (8, Duration::from_secs(2)));
    assert!(settings.clients[0].federate);
    settings.apply(&GatewayArgs { peer: vec!["127.0.0.1:7781".into(), "10.0.0.7:7780".into()], ..args() }).unwrap();
    let peers: Vec<&str> = settings.federation.peers.iter().map(|p| p.addr.as_str()).collect();
    assert_eq!(peers, ["10.0.0.7:7780", "127.0.0.1:7781"], "a flag adds a peer, once");
    let logins: Vec<(String, Option<Vec<u8>>)> =
        settings.federation.peers.iter().map(|p| settings.federation.login(p)).collect();
    assert_eq!(logins, [("other-name".into(), Some(vec![10, 11])), ("plant-a".into(), Some(vec![10, 11]))]);
    assert!(from_toml("[federation]\nttl = 0").unwrap().check().unwrap_err().contains("ttl"));
    assert!(from_toml("[federation]\ntoken = \"xyz\"\n[[federation.peers]]\naddr = \"a:1\"").unwrap().check().is_err());
    let missing_ca = "[[federation.peers]]\naddr = \"a:1\"\ntls_ca = \"/nonexistent/ca.pem\"";
    let refused = from_toml(missing_ca).unwrap().check().unwrap_err();
    assert!(refused.contains("peer a:1") && refused.contains("ca.pem"), "{refused}");
}

#[test]
fn chaski_from_the_file_and_flags_and_its_exposure() {
    let mut settings =
        from_toml("[chaski]\nlisten = \"127.0.0.1:8511\"\npeers = [\"127.0.0.1:8512\"]\nttl = 9").unwrap();
    settings
        .apply(&GatewayArgs { chaski_peer: vec!["127.0.0.1:8513".into(), "127.0.0.1:8512".into()], ..args() })
        .unwrap();
    assert_eq!(settings.chaski.peers, ["127.0.0.1:8512", "127.0.0.1:8513"], "a flag adds a peer, once");
    assert_eq!(settings.chaski.ttl, 9);
    settings.check().unwrap();
    assert_eq!(settings.exposure(), None, "loopback");
    settings.chaski.listen = "0.0.0.0:8511".parse().ok();
    let refused = settings.exposure().expect("no login off loopback");
    assert!(refused.contains("--chaski-listen") && refused.contains("no login"), "{refused}");
    assert!(from_toml("[chaski]\nmax_frame = 10").unwrap().check().unwrap_err().contains("max_frame"));
}

#[test]
fn the_store_engine_is_redb_unless_the_file_or_a_flag_says_log() {
    assert_eq!(Settings::default().store, StoreEngine::Redb);
    assert_eq!(from_toml("[store]\nengine = \"log\"").unwrap().store, StoreEngine::Log);
    let unknown = from_toml("[store]\nengine = \"sqlite\"").unwrap_err();
    assert!(unknown.contains("sqlite") && unknown.contains("log"), "{unknown}");
    let mut s = from_toml("[store]\nengine = \"log\"").unwrap();
    s.apply(&GatewayArgs { store: Some(StoreEngine::Redb), ..args() }).unwrap();
    assert_eq!(s.store, StoreEngine::Redb, "a flag wins over the file");
}
