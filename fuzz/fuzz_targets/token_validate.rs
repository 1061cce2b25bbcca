//! Full validation against a fixed key set: arbitrary tokens (mode 0), and arbitrary
//! header and claims JSON signed with the issuer's HMAC key (mode 1), so that every
//! claims rule past the signature is reached.
#![no_main]

use std::sync::LazyLock;

use introspectd::keys::KeySet;
use introspectd::token::{self, Policy, sign::SigningKey};
use jsonwebtoken::Algorithm;
use libfuzzer_sys::fuzz_target;

const ISS: &str = "https://issuer.test/";
const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
const NOW: i64 = 1_700_000_000;

static SIGNER: LazyLock<Option<SigningKey>> =
    LazyLock::new(|| SigningKey::from_private(Algorithm::HS256, "hs", SECRET.to_vec()).ok());
static EC: LazyLock<Option<(SigningKey, KeySet)>> = LazyLock::new(|| {
    let key = SigningKey::generate(Algorithm::ES256, "ec").ok()?;
    let jwks = token::sign::jwks(&[&key]).to_string();
    let (set, _) = KeySet::from_jwks(jwks.as_bytes()).ok()?;
    Some((key, set))
});

fn policy(alg: Algorithm) -> Policy {
    Policy {
        algorithms: vec![alg],
        ..Policy::new(ISS, vec!["api".into()])
    }
}

fn validate(text: &str, policy: &Policy, keys: &KeySet) {
    if let Ok(jwt) = token::parse(text, 16 * 1024) {
        let _ = token::verify(jwt, policy, keys, NOW);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((mode, rest)) = data.split_first() else {
        return;
    };
    let hmac = KeySet::hmac(SECRET);
    if mode % 2 == 0 {
        let Ok(text) = std::str::from_utf8(rest) else {
            return;
        };
        validate(text, &policy(Algorithm::HS256), &hmac);
        if let Some((_, ec)) = EC.as_ref() {
            validate(text, &policy(Algorithm::ES256), ec);
        }
        return;
    }
    let mut parts = rest.splitn(2, |byte| *byte == 0xff);
    let (Some(header), Some(claims)) = (parts.next(), parts.next()) else {
        return;
    };
    let (Ok(header), Ok(claims)) = (
        serde_json::from_slice::<serde_json::Value>(header),
        serde_json::from_slice::<serde_json::Value>(claims),
    ) else {
        return;
    };
    if let Some(signer) = SIGNER.as_ref()
        && let Ok(signed) = signer.sign_compact(&header, &claims)
    {
        validate(&signed, &policy(Algorithm::HS256), &hmac);
    }
});
