//! Token text as a caller sends it: classification, hashing, parsing.
#![no_main]

use introspectd::token::{self, TokenHash};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = token::is_jws(text);
    let _ = TokenHash::identity(text).fingerprint();
    let _ = token::unverified_claims(text);
    if let Ok(jwt) = token::parse(text, 16 * 1024) {
        let _ = (jwt.issuer(), jwt.kid());
    }
});
