//! A JWKS document as an issuer (or a file) serves it.
#![no_main]

use introspectd::keys::KeySet;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((set, _skipped)) = KeySet::from_jwks(data) {
        let _ = (set.len(), set.contains_kid("k"));
    }
});
