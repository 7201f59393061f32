//! Feeds arbitrary ids, query strings, content types and bodies to the
//! decoding of `PUT /v1/keys/{id}` and checks what it promises: no panic,
//! an accepted request within every limit, and a rejection with a 4xx
//! status and a JSON error that names a field.

#![no_main]

use keywheel::server::fuzzing::{decode_id, decode_put, Limits};
use libfuzzer_sys::fuzz_target;

/// Small limits, so the fuzzer reaches them quickly.
fn limits() -> Limits {
    Limits {
        max_id_bytes: 64,
        max_body_bytes: 2048,
        max_payload_bytes: 512,
        min_interval: keywheel::TICK,
        max_interval: keywheel::MAX_INTERVAL,
    }
}

fuzz_target!(|data: &[u8]| {
    // Parts are separated by 0xFF, which never occurs in UTF-8 text.
    let mut parts = data.splitn(4, |byte| *byte == 0xFF);
    let id = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let query = parts.next().map(String::from_utf8_lossy);
    let content_type = parts.next();
    let body = parts.next().unwrap_or_default();
    let limits = limits();

    match decode_put(&id, query.as_deref(), content_type, body, &limits) {
        Ok(accepted) => {
            assert!(
                accepted.id.len() <= limits.max_id_bytes,
                "id over its limit"
            );
            assert_eq!(
                decode_id(&accepted.id, limits.max_id_bytes).as_deref(),
                Ok(&*accepted.id)
            );
            assert!(
                accepted.payload.len() <= limits.max_payload_bytes,
                "payload over its limit"
            );
            assert!(body.len() <= limits.max_body_bytes, "body over its limit");
            accepted
                .options
                .validate()
                .expect("accepted options are valid");
            serde_json::from_str::<serde_json::Value>(&accepted.payload)
                .expect("the stored payload is JSON");
        }
        Err(rejected) => {
            assert!(
                (400..500).contains(&rejected.status),
                "status {} for bad input",
                rejected.status
            );
            let body: serde_json::Value =
                serde_json::from_str(&rejected.body).expect("the error body is JSON");
            assert!(body["error"].as_str().is_some_and(|text| !text.is_empty()));
            assert!(body["field"].as_str().is_some_and(|text| !text.is_empty()));
        }
    }
});
