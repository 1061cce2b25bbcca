//! The body of `POST /oauth2/introspect` and `/oauth2/revoke`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = introspectd::http::parse_form(data);
});
