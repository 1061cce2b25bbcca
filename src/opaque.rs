//! Opaque tokens: asked of their issuer's own RFC 7662 endpoint.

use serde_json::{Map, Value};

use crate::config::OpaqueIntrospection;
use crate::outbound;

/// Largest answer read from an introspection endpoint.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// The endpoint's answer: `Some(members)` for an active token, `None` for an inactive
/// one. An error means the endpoint could not decide (down, slow, nonsense).
pub async fn introspect(
    http: &reqwest::Client,
    endpoint: &OpaqueIntrospection,
    token: &str,
) -> Result<Option<Map<String, Value>>, String> {
    let mut request = http
        .post(&endpoint.endpoint)
        .header(reqwest::header::ACCEPT, "application/json")
        .form(&[("token", token), ("token_type_hint", "access_token")]);
    if let Some((id, secret)) = &endpoint.credentials {
        request = request.basic_auth(id, Some(secret));
    }
    let mut answer = outbound::json_object(request, endpoint.timeout, MAX_ANSWER_BYTES)
        .await
        .map_err(|e| e.to_string())?;
    match answer.remove("active") {
        Some(Value::Bool(true)) => Ok(Some(answer)),
        Some(Value::Bool(false)) => Ok(None),
        _ => Err("the answer has no boolean `active`".into()),
    }
}
