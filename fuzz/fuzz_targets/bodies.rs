//! Request bodies as the API server reads them: protobuf envelopes, YAML and JSON. Any
//! input must come back as an object or an error, never a panic or a hang.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_apiserver::negotiate::body_to_json;
use shoal_apiserver::protobuf::decode_object;

fuzz_target!(|data: &[u8]| {
    let _ = decode_object(data);
    for content_type in [
        "application/vnd.kubernetes.protobuf",
        "application/yaml",
        "application/json",
    ] {
        let _ = body_to_json(Some(content_type), data);
    }
});
