//! An issuer's RFC 7662 answer, through the same access-token rules as a JWT.
#![no_main]

use introspectd::token::{AccessToken, Policy};
use libfuzzer_sys::fuzz_target;

const NOW: i64 = 1_700_000_000;

fuzz_target!(|data: &[u8]| {
    let Ok(answer) = serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(data)
    else {
        return;
    };
    let Some(Some(members)) = introspectd::opaque::members_if_active(answer) else {
        return;
    };
    let policy = Policy::new("https://issuer.test/", vec!["api".into()]);
    if let Ok(token) = AccessToken::from_introspection(members, &policy, NOW + 60, NOW) {
        let _ = token.to_json();
    }
});
