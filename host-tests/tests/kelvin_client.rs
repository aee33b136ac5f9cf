//! Rivulet's Kelvin stream client (`rivulet_tokio::kelvin`) against a server on the real SDK's
//! message model (`host-tests/peers/kelvin_stream_server.py`, kelvin-python-sdk 0.5.0): it reads
//! what the SDK wrote, and what it writes the SDK validates and writes back unchanged.

use std::time::Duration;

use rivulet_core::kelvin::krn::Krn;
use rivulet_core::kelvin::message::Message;
use rivulet_core::kelvin::msg_type::{MsgType, Primitive};
use rivulet_core::model::Timestamp;
use rivulet_host_tests::peers::PeerProcess;
use rivulet_tokio::kelvin::{KelvinConfig, KelvinStream, new_id};

const PATIENCE: Duration = Duration::from_secs(30);

fn message(msg_type: MsgType, resource: &str, payload: &str) -> Message {
    let mut message = Message::new(msg_type, new_id(), Timestamp { s: 1_704_164_645, us: 678_901 });
    message.resource = Some(Krn::parse(resource).unwrap());
    message.payload = Some(payload.to_string());
    message
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_stream_client_and_the_sdks_messages_both_ways() {
    let mut server = PeerProcess::spawn("kelvin_stream_server.py", &[]);
    let port = server.read_listening_port();
    let config = KelvinConfig { port, ..KelvinConfig::default() };
    let mut stream = tokio::time::timeout(PATIENCE, KelvinStream::connect(&config)).await.unwrap().expect("connects");

    let mut read = Vec::new();
    for _ in 0..4 {
        read.push(tokio::time::timeout(PATIENCE, stream.read()).await.unwrap().expect("a message the SDK wrote"));
    }
    let types: Vec<String> = read.iter().map(|m| m.msg_type.to_string()).collect();
    assert_eq!(types, ["runtime_manifest", "data;pt=number", "data;pt=string", "control"]);
    assert_eq!(read[1].resource, Some(Krn::asset_datastream("pump", "temp")));
    assert_eq!(read[1].payload.as_deref(), Some("21.5"));
    assert_eq!(read[0].timestamp, Timestamp { s: 1_704_164_645, us: 0 });

    let mut sent = vec![
        message(MsgType::data(Primitive::Number), "krn:ad:pump/temp", "22.25"),
        message(MsgType::data(Primitive::Boolean), "krn:ad:pump/ok", "true"),
        message(MsgType::parse("data;icd=acme.reading").unwrap(), "krn:ad:pump/raw", r#"{"b":1,"a":[1,2.5]}"#),
        message(MsgType::parse("parameter;pt=string").unwrap(), "krn:ap:pump/mode", r#""fast""#),
        message(
            MsgType::new("recommendation"),
            "krn:asset:pump",
            // In the SDK's own form: it fills its typed payloads' defaults (docs/KELVIN.md).
            r#"{"resource":"krn:asset:pump","type":"speed","expiration_date":"2024-01-03T00:00:00.000000Z","actions":{"control_changes":[],"custom_actions":[]},"evidences":[]}"#,
        ),
    ];
    let mut traced = message(MsgType::data(Primitive::String), "krn:ad:pump/state", r#""é \"quoted\"\n""#);
    traced.trace_id = Some("trace-7".into());
    traced.source = Some(Krn::parse("krn:wlappv:node/work:app/1.0").unwrap());
    sent.push(traced);
    for message in &sent {
        stream.write(message).await.expect("written");
    }
    stream.disconnect().await;

    let out = tokio::task::spawn_blocking(move || server.wait_success(PATIENCE)).await.unwrap();
    let got: Vec<&str> = out.stdout.lines().filter(|l| !l.starts_with("listening") && *l != "done").collect();
    let ours: Vec<String> = sent.iter().map(|m| format!("got {}", m.to_line().unwrap().trim_end())).collect();
    assert_eq!(got, ours, "the SDK validated each line and wrote it back unchanged");
}
