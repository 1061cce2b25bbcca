//! Caller authentication on gRPC: the `authorization: Bearer <api key>` metadata into a
//! domain decision, and the decision into a status.

use std::sync::Arc;

use tonic::{Status, metadata::MetadataMap};

use crate::auth::{ApiKeys, Caller, Denied, Role, bearer_key};

fn presented_key(metadata: &MetadataMap) -> Option<&str> {
    metadata
        .get("authorization")
        .map(|value| bearer_key(value.as_bytes()))
}

fn denied(denied: Denied) -> Status {
    match denied {
        Denied::Unauthenticated => {
            Status::unauthenticated("a valid API key is required (authorization: Bearer <key>)")
        }
        Denied::Forbidden => Status::permission_denied("the API key lacks the role for this call"),
    }
}

pub fn authorize(
    keys: &ApiKeys,
    metadata: &MetadataMap,
    role: Role,
) -> Result<Arc<Caller>, Status> {
    keys.authorize(presented_key(metadata), role)
        .map_err(denied)
}

pub fn authorize_introspection(
    keys: &ApiKeys,
    metadata: &MetadataMap,
) -> Result<Option<Arc<Caller>>, Status> {
    keys.authorize_introspection(presented_key(metadata))
        .map_err(denied)
}
