//! The stream-sea codec against what stream-sea-client 0.7.0 really sends:
//! `core/tests/data/streamsea_vectors.txt` (captured by `host-tests/peers/streamsea_vectors.py`
//! from the real client, which host-tests/tests/streamsea_vectors.rs keeps honest): its schemas
//! with every field type, its versions-vector body and its websocket messages. Then the
//! `streamsea` fuzz target's harness on its seeds, random bytes and edited seeds.

#[allow(dead_code)]
#[path = "../../fuzz/src"]
mod fuzz {
    pub mod corpus;
    pub mod input;
    pub mod streamsea;
}

use proptest::prelude::*;
use rivulet_core::streamsea::rest;
use rivulet_core::streamsea::schema::{FieldKind, Schema};
use rivulet_core::streamsea::ws::{Auth, ClientMessage, Conversation, Request};

const VECTORS: &str = include_str!("data/streamsea_vectors.txt");

fn lines(kind: &str) -> Vec<&'static str> {
    VECTORS.lines().filter_map(|l| l.strip_prefix(kind)).collect()
}

#[test]
fn the_clients_schemas_read_with_every_field_type() {
    let schemas: Vec<Schema> =
        lines("define ").iter().map(|b| Schema::parse(b.as_bytes()).expect("a schema")).collect();
    assert_eq!(schemas.len(), 2);
    let kinds: Vec<&FieldKind> = schemas[0].fields.iter().map(|f| &f.kind).collect();
    assert_eq!(kinds.len(), 11, "every FieldType of the client");
    assert!(matches!(kinds[8], FieldKind::Enum(values) if values == &["off".to_string(), "on".to_string()]));
    assert!(matches!(kinds[9], FieldKind::Object(fields) if fields.is_empty()));
    assert_eq!((schemas[0].version.as_str(), schemas[1].version.as_str()), ("\"1\"", "2"));
    for schema in &schemas {
        assert_eq!(&Schema::parse(schema.to_json().as_bytes()).unwrap(), schema, "written as read");
    }
    let payload = r#"{"string":"s","float":1.5,"integer":3,"date":"2024-01-02T03:04:05Z","array_string":["a"],
        "array_float":[1,2.5],"array_integer":[1],"array_date":[],"enum":"on","object":{"any":1},"array_object":[{}]}"#;
    assert_eq!(schemas[0].check(payload), Ok(()));
}

#[test]
fn the_clients_rest_and_websocket_messages_read() {
    assert_eq!(
        rest::versions_request(lines("versions ")[0].as_bytes()),
        Ok(vec!["boiler_data".into(), "nothing".into()])
    );
    let headers = lines("header ");
    assert!(headers.contains(&"Content-encoding: gzip") && headers.contains(&"Authorization: Basic YWJjOmRlZjEyMw=="));
    let mut conversation = Conversation::default();
    let messages: Vec<ClientMessage> = lines("ws ")
        .iter()
        .map(|text| {
            let message = ClientMessage::parse(text).expect("the client's message reads");
            conversation.take(&message).expect("in its place");
            message
        })
        .collect();
    assert_eq!(
        messages[0].request,
        Request::Authenticate(Auth::Basic { client_id: "abc".into(), client_secret: "def123".into() })
    );
    assert_eq!(messages[2].request, Request::Subscribe { stream: "counts".into(), group_id: None });
}

#[test]
fn fuzz_streamsea_seed_corpus() {
    let seeds = fuzz::corpus::seeds("streamsea");
    assert!(seeds.len() >= 8, "the vectors make the seeds: {}", seeds.len());
    for seed in seeds {
        fuzz::streamsea::run(&seed);
    }
}

fn fuzz_edits() -> impl Strategy<Value = Vec<(usize, u8, u8)>> {
    proptest::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..8)
}

proptest! {
    #[test]
    fn fuzz_streamsea_random_bytes(bytes in proptest::collection::vec(prop_oneof![Just(b'"'), Just(b'{'), Just(b'['), any::<u8>()], 0..300)) {
        fuzz::streamsea::run(&bytes);
    }

    #[test]
    fn fuzz_streamsea_edited_seeds(pick in any::<prop::sample::Index>(), edits in fuzz_edits()) {
        let seeds = fuzz::corpus::seeds("streamsea");
        fuzz::streamsea::run(&fuzz::corpus::mutate(&seeds[pick.index(seeds.len())], &edits));
    }
}
