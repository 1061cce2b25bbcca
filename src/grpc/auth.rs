//! Caller authentication on gRPC: the `authorization: Bearer <api key>` metadata into a
//! domain decision.

use tonic::{Status, metadata::MetadataMap};

use crate::auth::{ApiKeys, Caller, Denied, Role};

/// The presented API key, if any. A malformed header counts as a wrong key, not as none.
fn presented_key(metadata: &MetadataMap) -> Option<&str> {
    let value = metadata.get("authorization")?;
    let text = value.to_str().unwrap_or("\u{0}");
    let key = text
        .strip_prefix("Bearer ")
        .or_else(|| text.strip_prefix("bearer "))
        .unwrap_or("\u{0}");
    Some(key.trim())
}

pub fn authorize(
    keys: &ApiKeys,
    metadata: &MetadataMap,
    role: Role,
) -> Result<Option<Caller>, Status> {
    keys.authorize(presented_key(metadata), role)
        .map_err(|denied| match denied {
            Denied::Unauthenticated => {
                Status::unauthenticated("a valid API key is required (authorization: Bearer <key>)")
            }
            Denied::Forbidden => {
                Status::permission_denied("the API key lacks the role for this call")
            }
        })
}
