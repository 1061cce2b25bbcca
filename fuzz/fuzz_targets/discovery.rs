//! An OIDC discovery document, and the URL rule its `jwks_uri` must meet.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(uri) = introspectd::keys::jwks_uri_from_discovery(data, "https://issuer.test/") {
        let _ = introspectd::outbound::check_url(&uri, false);
    }
});
