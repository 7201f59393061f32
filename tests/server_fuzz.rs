//! Property-based fuzzing of request decoding: arbitrary bytes and mangled
//! JSON bodies, ids, query strings and content types go through
//! `keywheel::server::fuzzing::decode_put`, the checks the `PUT` route
//! runs, and a smaller share goes over real TCP to a server on 127.0.0.1.
//!
//! Properties: decoding never panics. Every rejection is a 4xx whose body
//! is a JSON error naming a field. Every accepted request round-trips:
//! encoding it again and decoding gives the same registration, and over
//! HTTP a GET returns what the PUT sent.
//!
//! `PROPTEST_CASES` sets the number of cases of each property, for
//! longer runs.

#![cfg(feature = "server")]

mod server_support;

use std::time::Duration;

use keywheel::server::fuzzing::{decode_id, decode_put, Accepted, Limits, Rejected};
use keywheel::{FirstRun, Interval};
use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence, TestCaseError, TestRunner};
use serde_json::{json, Map, Value};
use server_support::{test_config, TestServer};

/// Cases of each decoding property when `PROPTEST_CASES` is unset. A case
/// takes microseconds, so this keeps the file at a few seconds.
const DEFAULT_CASES: u32 = 4000;

/// Cases of the property over TCP when `PROPTEST_CASES` is unset.
const DEFAULT_TCP_CASES: u32 = 200;

/// Small limits, so that generated input crosses them often.
const LIMITS: Limits = Limits {
    max_id_bytes: 24,
    max_body_bytes: 512,
    max_payload_bytes: 128,
    min_interval: keywheel::TICK,
    max_interval: keywheel::MAX_INTERVAL,
};

/// Where failing cases are saved and replayed first on the next run.
const REGRESSIONS: &str = "tests/server_fuzz.proptest-regressions";

fn config(default_cases: u32) -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(default_cases);
    Config {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(REGRESSIONS))),
        ..Config::default()
    }
}

/// Checks that a rejection is a 4xx with `{"error": non-empty, "field":
/// non-empty}`, and returns the field.
fn check_rejection(rejected: &Rejected) -> Result<String, TestCaseError> {
    prop_assert!(
        (400..500).contains(&rejected.status),
        "status {} for {}",
        rejected.status,
        rejected.body
    );
    let body: Value = serde_json::from_str(&rejected.body).map_err(|error| {
        TestCaseError::fail(format!("body is not JSON ({error}): {}", rejected.body))
    })?;
    let message = body["error"].as_str().unwrap_or_default();
    let field = body["field"].as_str().unwrap_or_default();
    prop_assert!(!message.is_empty(), "no error message: {}", rejected.body);
    prop_assert!(!field.is_empty(), "no field: {}", rejected.body);
    Ok(field.to_string())
}

/// Encodes an accepted registration as a body the server would accept. The
/// payload goes in as the stored text, because parsing and printing a
/// float again need not give the same digits.
fn encode(accepted: &Accepted) -> String {
    let mut body = Map::new();
    let every = match accepted.options.interval {
        Interval::Every(every) => every,
        Interval::Never => panic!("the server registers only periodic entries"),
    };
    body.insert("every".into(), json!(exact_duration(every)));
    match accepted.options.first_run {
        FirstRun::AfterInterval => {}
        FirstRun::Immediately => {
            body.insert("first_run".into(), json!("immediately"));
        }
        FirstRun::After(after) => {
            body.insert("first_run".into(), json!(exact_duration(after)));
        }
    }
    if !accepted.options.jitter.is_zero() {
        body.insert(
            "jitter".into(),
            json!(exact_duration(accepted.options.jitter)),
        );
    }
    if let Some(max) = accepted.max_alerts {
        body.insert("max_alerts".into(), json!(max.get()));
    }
    let fields = Value::Object(body).to_string();
    format!(r#"{{"payload": {}, {}"#, accepted.payload, &fields[1..])
}

/// Writes a duration in milliseconds, so that parsing it gives it back
/// exactly (accepted durations are whole milliseconds).
fn exact_duration(duration: Duration) -> String {
    format!("{}ms", duration.as_millis())
}

/// Checks that an accepted request decodes to the same registration when
/// encoded again, and that its id passes the id check unchanged.
fn check_round_trip(accepted: &Accepted) -> Result<(), TestCaseError> {
    prop_assert!(
        accepted.options.validate().is_ok(),
        "accepted invalid options {:?}",
        accepted.options
    );
    prop_assert_eq!(
        decode_id(&accepted.id, LIMITS.max_id_bytes),
        Ok(accepted.id.clone())
    );

    let body = encode(accepted);
    let query = if accepted.if_absent {
        "if_absent=true"
    } else {
        "if_absent=false"
    };
    let again = decode_put(&accepted.id, Some(query), None, body.as_bytes(), &LIMITS).map_err(
        |rejected| TestCaseError::fail(format!("re-encoded {body} was rejected: {rejected:?}")),
    )?;

    prop_assert_eq!(&again.id, &accepted.id);
    prop_assert_eq!(again.if_absent, accepted.if_absent);
    prop_assert_eq!(&again.payload, &accepted.payload);
    prop_assert_eq!(again.options, accepted.options);
    prop_assert_eq!(again.max_alerts, accepted.max_alerts);
    Ok(())
}

/// Runs one request through decoding and checks the properties; returns the
/// outcome for further checks.
fn check_decode(
    id: &str,
    query: Option<&str>,
    content_type: Option<&[u8]>,
    body: &[u8],
) -> Result<Result<Accepted, String>, TestCaseError> {
    match decode_put(id, query, content_type, body, &LIMITS) {
        Ok(accepted) => {
            check_round_trip(&accepted)?;
            Ok(Ok(accepted))
        }
        Err(rejected) => check_rejection(&rejected).map(Err),
    }
}

/// Ids: mostly allowed characters, sometimes others, around the length limit.
fn id_strategy() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[A-Za-z0-9._:-]{1,30}",
        1 => "[A-Za-z0-9._:/ %?#é\u{0}-]{0,30}",
        1 => any::<String>(),
    ]
}

fn query_strategy() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        3 => Just(None),
        2 => prop::sample::select(vec![
            "if_absent=true", "if_absent=false", "if_absent=1", "if_absent=", "if_absent",
            "if_absent=true&if_absent=false", "force=true", "if_absent=%74rue", "&", "=",
            "if_absent=true&", "%ZZ", "if_absent=TRUE",
        ])
        .prop_map(|query| Some(query.to_string())),
        1 => any::<String>().prop_map(Some),
    ]
}

fn content_type_strategy() -> impl Strategy<Value = Option<Vec<u8>>> {
    prop_oneof![
        4 => Just(None),
        4 => Just(Some(b"application/json".to_vec())),
        1 => prop::sample::select(vec![
            "application/json; charset=utf-8", "APPLICATION/JSON", "application/problem+json",
            "text/plain", "application/x-www-form-urlencoded", "", ";", "json",
        ])
        .prop_map(|text| Some(text.as_bytes().to_vec())),
        1 => prop::collection::vec(any::<u8>(), 0..40).prop_map(Some),
    ]
}

/// Duration texts: valid ones of several units, out of range ones, and junk.
fn duration_text() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => (1u64..100_000, prop::sample::select(vec!["ms", "s", "m", "h", "days", "ns", "us"]))
            .prop_map(|(count, unit)| json!(format!("{count}{unit}"))),
        1 => prop::sample::select(vec![
            "0s", "366days", "400days", "-1s", "30", "soon", "", "1h 30m", "1s 1ns",
            "18446744073709551615s", "immediately", "1.5s",
        ])
        .prop_map(|text| json!(text)),
        1 => any::<i64>().prop_map(|number| json!(number)),
        1 => Just(Value::Null),
        1 => Just(json!({"every": "1s"})),
    ]
}

/// Payloads: JSON values of any kind and depth, sometimes over the limit.
fn payload_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|number| json!(number)),
        any::<f64>()
            .prop_filter("finite", |number| number.is_finite())
            .prop_map(|number| json!(number)),
        ".{0,40}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(".{0,8}", inner, 0..6)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// A registration object with every field optional, sometimes an unknown
/// field, and values of the right or the wrong type.
fn registration_value() -> impl Strategy<Value = Value> {
    (
        prop::option::weighted(0.7, payload_value()),
        prop::option::weighted(0.95, duration_text()),
        prop::option::weighted(0.3, duration_text()),
        prop::option::weighted(0.3, duration_text()),
        prop::option::weighted(
            0.3,
            prop_oneof![
                any::<u32>().prop_map(|n| json!(n)),
                any::<i64>().prop_map(|n| json!(n)),
                Just(json!("3"))
            ],
        ),
        prop::option::weighted(0.05, "[a-z_]{1,10}"),
    )
        .prop_map(|(payload, every, first_run, jitter, max_alerts, unknown)| {
            let mut body = Map::new();
            let mut set = |key: &str, value: Option<Value>| {
                if let Some(value) = value {
                    body.insert(key.to_string(), value);
                }
            };
            set("payload", payload);
            set("every", every);
            set("first_run", first_run);
            set("jitter", jitter);
            set("max_alerts", max_alerts);
            if let Some(key) = unknown {
                body.insert(key, json!(1));
            }
            Value::Object(body)
        })
}

/// A way to damage a JSON text.
#[derive(Debug, Clone)]
enum Mangle {
    None,
    Truncate(prop::sample::Index),
    Insert(prop::sample::Index, u8),
    Delete(prop::sample::Index),
    Append(Vec<u8>),
    DuplicateKey,
    WrapInArray,
}

fn mangle_strategy() -> impl Strategy<Value = Mangle> {
    prop_oneof![
        6 => Just(Mangle::None),
        1 => any::<prop::sample::Index>().prop_map(Mangle::Truncate),
        1 => (any::<prop::sample::Index>(), any::<u8>()).prop_map(|(at, byte)| Mangle::Insert(at, byte)),
        1 => any::<prop::sample::Index>().prop_map(Mangle::Delete),
        1 => prop::collection::vec(any::<u8>(), 1..8).prop_map(Mangle::Append),
        1 => Just(Mangle::DuplicateKey),
        1 => Just(Mangle::WrapInArray),
    ]
}

fn apply(mangle: &Mangle, text: String) -> Vec<u8> {
    let mut bytes = text.into_bytes();
    match mangle {
        Mangle::None => {}
        Mangle::Truncate(at) => bytes.truncate(at.index(bytes.len() + 1)),
        Mangle::Insert(at, byte) => {
            let at = at.index(bytes.len() + 1);
            bytes.insert(at, *byte);
        }
        Mangle::Delete(at) => {
            if !bytes.is_empty() {
                let at = at.index(bytes.len());
                bytes.remove(at);
            }
        }
        Mangle::Append(tail) => bytes.extend_from_slice(tail),
        Mangle::DuplicateKey => {
            if bytes.len() > 2 {
                bytes.pop();
                bytes.extend_from_slice(br#","every":"5s"}"#);
            }
        }
        Mangle::WrapInArray => {
            bytes.insert(0, b'[');
            bytes.push(b']');
        }
    }
    bytes
}

#[test]
fn arbitrary_bytes_never_panic() {
    let mut runner = TestRunner::new(config(DEFAULT_CASES));
    let strategy = (
        id_strategy(),
        query_strategy(),
        content_type_strategy(),
        prop::collection::vec(any::<u8>(), 0..700),
    );
    runner
        .run(&strategy, |(id, query, content_type, body)| {
            check_decode(&id, query.as_deref(), content_type.as_deref(), &body).map(|_| ())
        })
        .expect("decoding arbitrary bytes");
}

#[test]
fn mangled_json_is_rejected_or_round_trips() {
    let mut runner = TestRunner::new(config(DEFAULT_CASES));
    let strategy = (
        id_strategy(),
        query_strategy(),
        content_type_strategy(),
        registration_value(),
        mangle_strategy(),
    );
    runner
        .run(
            &strategy,
            |(id, query, content_type, registration, mangle)| {
                let body = apply(&mangle, registration.to_string());
                let outcome = check_decode(&id, query.as_deref(), content_type.as_deref(), &body)?;

                // A well-formed body within the limits, with a valid id, query
                // and content type, fails only on its field values, and then
                // names one of the body's fields.
                let well_formed = matches!(mangle, Mangle::None);
                if let (true, Err(field)) = (well_formed, &outcome) {
                    let known = [
                        "id",
                        "if_absent",
                        "content-type",
                        "body",
                        "payload",
                        "every",
                        "first_run",
                        "jitter",
                        "max_alerts",
                    ];
                    let unknown_field = registration
                        .as_object()
                        .is_some_and(|object| object.contains_key(field.as_str()));
                    prop_assert!(
                        known.contains(&field.as_str()) || unknown_field,
                        "field {field:?} is neither a known field nor one of the body's"
                    );
                }
                if let Ok(accepted) = &outcome {
                    // The stored payload is the one sent.
                    let sent: Value =
                        serde_json::from_slice(&body).expect("an accepted body is JSON");
                    let stored: Value =
                        serde_json::from_str(&accepted.payload).expect("payload is JSON");
                    prop_assert_eq!(&stored, sent.get("payload").unwrap_or(&Value::Null));
                }
                Ok(())
            },
        )
        .expect("decoding mangled registrations");
}

#[test]
fn ids_are_rejected_or_kept() {
    let mut runner = TestRunner::new(config(DEFAULT_CASES));
    runner
        .run(&id_strategy(), |id| {
            match decode_id(&id, LIMITS.max_id_bytes) {
                Ok(kept) => prop_assert_eq!(kept, id),
                Err(rejected) => {
                    let field = check_rejection(&rejected)?;
                    prop_assert_eq!(field, "id");
                }
            }
            Ok(())
        })
        .expect("checking ids");
}

#[test]
fn earlier_findings_stay_fixed() {
    // A duration under a millisecond was accepted and stored rounded up,
    // so a GET showed another interval than the PUT sent.
    for every in ["1ns", "1s 1ns", "999us"] {
        let body = format!(r#"{{"every": "{every}"}}"#);
        let rejected = decode_put("a", None, None, body.as_bytes(), &LIMITS).expect_err(every);
        assert_eq!(rejected.status, 400, "{every}: {rejected:?}");
        assert!(
            rejected.body.contains("whole number of milliseconds"),
            "{every}: {rejected:?}"
        );
    }

    // An unknown field whose name has a backquote was reported with an
    // empty field name.
    let rejected = decode_put(
        "a",
        None,
        None,
        br#"{"every": "1s", "`first_run": 1}"#,
        &LIMITS,
    )
    .expect_err("unknown field");
    assert!(
        rejected.body.contains(r#""field":"`first_run""#),
        "{rejected:?}"
    );

    // The payload is stored as the text sent, digits of floats included.
    let body = br#"{"every": "1ms", "payload": {"": 4.996154364081731e+240}}"#;
    let accepted = decode_put("a", None, None, body, &LIMITS).expect("valid body");
    assert_eq!(accepted.payload, r#"{"": 4.996154364081731e+240}"#);
}

#[test]
fn body_over_limit_is_413() {
    let padding = "x".repeat(LIMITS.max_payload_bytes);
    let payload_over = format!(r#"{{"every": "1s", "payload": "{padding}"}}"#);
    let rejected = decode_put("a", None, None, payload_over.as_bytes(), &LIMITS)
        .expect_err("payload over the limit");
    assert_eq!(rejected.status, 413, "{rejected:?}");

    let body_over = format!(
        r#"{{"every": "1s", "payload": "{}"}}"#,
        "x".repeat(LIMITS.max_body_bytes)
    );
    let rejected = decode_put("a", None, None, body_over.as_bytes(), &LIMITS)
        .expect_err("body over the limit");
    assert_eq!(rejected.status, 413, "{rejected:?}");
    assert!(rejected.body.contains("\"field\":\"body\""), "{rejected:?}");
}

#[test]
fn tcp_requests_are_rejected_or_round_trip() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut config = test_config();
    config.max_id_bytes = LIMITS.max_id_bytes;
    config.max_body_bytes = LIMITS.max_body_bytes;
    config.max_payload_bytes = LIMITS.max_payload_bytes;
    let server = runtime.block_on(TestServer::start_with(config));

    let mut runner = TestRunner::new(self::config(DEFAULT_TCP_CASES));
    let strategy = (
        "[A-Za-z0-9._:-]{1,30}",
        registration_value(),
        mangle_strategy(),
    );
    runner
        .run(&strategy, |(id, registration, mangle)| {
            let body =
                String::from_utf8_lossy(&apply(&mangle, registration.to_string())).into_owned();
            runtime.block_on(async {
                let answer = server.put(&id, &body).await;
                if !answer.status.is_success() {
                    prop_assert!(
                        answer.status.is_client_error(),
                        "status of {body}: {answer:?}"
                    );
                    let error: Value = answer.json();
                    prop_assert!(
                        error["field"]
                            .as_str()
                            .is_some_and(|field| !field.is_empty()),
                        "{answer:?}"
                    );
                    return Ok(());
                }

                let stored = server.get(&id).await;
                prop_assert_eq!(
                    stored.status,
                    reqwest::StatusCode::OK,
                    "GET after PUT of {}",
                    body
                );
                let stored = stored.json();
                let sent: Value = serde_json::from_str(&body).expect("an accepted body is JSON");
                prop_assert_eq!(
                    &stored["payload"],
                    sent.get("payload").unwrap_or(&Value::Null)
                );
                let every = humantime::parse_duration(stored["every"].as_str().unwrap_or_default())
                    .map_err(|error| TestCaseError::fail(format!("every of GET: {error}")))?;
                let sent_every =
                    humantime::parse_duration(sent["every"].as_str().unwrap_or_default())
                        .map_err(|error| TestCaseError::fail(format!("every of PUT: {error}")))?;
                prop_assert_eq!(every, sent_every);
                prop_assert_eq!(
                    server.delete(&id).await.status,
                    reqwest::StatusCode::NO_CONTENT
                );
                Ok(())
            })
        })
        .expect("requests over TCP");

    runtime.block_on(server.stop());
}
