//! Opaque tokens: asked of their issuer's own RFC 7662 endpoint.

use serde_json::{Map, Value};

use crate::config::OpaqueIntrospection;

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
        .timeout(endpoint.timeout)
        .header(reqwest::header::ACCEPT, "application/json")
        .form(&[("token", token), ("token_type_hint", "access_token")]);
    if let Some((id, secret)) = &endpoint.credentials {
        request = request.basic_auth(id, Some(secret));
    }
    let work = async {
        // `without_url`: the endpoint URL may carry credentials, and errors are logged.
        let mut response = request
            .send()
            .await
            .map_err(|e| format!("request failed: {}", e.without_url()))?;
        if !response.status().is_success() {
            return Err(format!("answered HTTP {}", response.status().as_u16()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| format!("reading the answer: {}", e.without_url()))?
        {
            if body.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err("answer larger than 64 KiB".into());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    };
    let body = tokio::time::timeout(endpoint.timeout, work)
        .await
        .map_err(|_| format!("no answer within {:?}", endpoint.timeout))??;
    let Ok(Value::Object(mut answer)) = serde_json::from_slice::<Value>(&body) else {
        return Err("the answer is not a JSON object".into());
    };
    match answer.remove("active") {
        Some(Value::Bool(true)) => Ok(Some(answer)),
        Some(Value::Bool(false)) => Ok(None),
        _ => Err("the answer has no boolean `active`".into()),
    }
}
