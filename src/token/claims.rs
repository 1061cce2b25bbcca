//! The claims of a verified access token, read once with the issuer's claim names.

use serde_json::{Map, Value};

use super::{Policy, Reason, Rejection};

/// A verified access token. Immutable and shared (`Arc`) between the cache and answers.
#[derive(Debug, Clone, PartialEq)]
pub struct AccessToken {
    pub iss: String,
    pub sub: Option<String>,
    pub aud: Vec<String>,
    pub exp: i64,
    pub iat: Option<i64>,
    pub nbf: Option<i64>,
    pub jti: Option<String>,
    pub scopes: Vec<String>,
    pub client_id: Option<String>,
    pub username: Option<String>,
    /// Session id (`sid`), for session cut-offs.
    pub sid: Option<String>,
    /// Every claim not mapped to a member above, as issued.
    pub other_claims: Map<String, Value>,
}

/// Claims that have their own member in the answer, so they are not repeated among the
/// other claims.
const MEMBER_CLAIMS: &[&str] = &["iss", "sub", "aud", "exp", "iat", "nbf", "jti"];

const MALFORMED_NUMERIC_DATE: Rejection =
    Rejection::new(Reason::Malformed, "exp, nbf or iat is not a number");

impl AccessToken {
    /// Reads the registered claims with their expected types; a claim of the wrong type
    /// makes the token malformed, never a panic or a silent default.
    pub(super) fn from_claims(
        mut claims: Map<String, Value>,
        policy: &Policy,
    ) -> Result<Self, Rejection> {
        let exp = numeric_date(claims.get("exp"))?
            .ok_or(Rejection::new(Reason::Malformed, "exp is missing"))?;
        let iat = numeric_date(claims.get("iat"))?;
        let nbf = numeric_date(claims.get("nbf"))?;
        let aud = audiences(claims.get("aud"))?
            .into_iter()
            .map(str::to_owned)
            .collect();
        let iss = string_claim(&claims, "iss")?.unwrap_or_default();
        let sub = string_claim(&claims, "sub")?;
        let jti = string_claim(&claims, "jti")?;
        let sid = string_claim(&claims, "sid")?;
        let (client_id, client_claim) = first_string(&claims, &policy.client_claims)?;
        let (username, username_claim) = first_string(&claims, &policy.username_claims)?;
        let (scopes, scope_claim) = scopes(&claims, &policy.scope_claims)?;
        for name in MEMBER_CLAIMS {
            claims.remove(*name);
        }
        // A claim read into a member of the same name is not repeated; one read under
        // another name (`scp`, `azp`, `preferred_username`) stays, as issued.
        for (member, source) in [
            ("client_id", client_claim),
            ("username", username_claim),
            ("scope", scope_claim),
        ] {
            if source == Some(member) {
                claims.remove(member);
            }
        }
        Ok(Self {
            iss,
            sub,
            aud,
            exp,
            iat,
            nbf,
            jti,
            scopes,
            client_id,
            username,
            sid,
            other_claims: claims,
        })
    }

    /// An opaque token as its issuer's RFC 7662 endpoint described it, under the same
    /// access-token rules as a JWT. Without `iss` the endpoint's issuer is meant; without
    /// `exp`, `default_exp` stands in (the end of how long the answer may be reused).
    pub fn from_introspection(
        mut answer: Map<String, Value>,
        policy: &Policy,
        default_exp: i64,
        now: i64,
    ) -> Result<Self, Rejection> {
        answer
            .entry("iss")
            .or_insert_with(|| Value::from(policy.issuer.clone()));
        answer
            .entry("exp")
            .or_insert_with(|| Value::from(default_exp));
        let mut token =
            super::rules::accept(answer, policy, super::rules::Source::Introspection, now)?;
        // Answered as a member of its own ("Bearer", or "DPoP" for a DPoP-bound token).
        token.other_claims.remove("token_type");
        Ok(token)
    }

    /// RFC 7662 `token_type`: "DPoP" for a token bound to a DPoP key (RFC 9449 section
    /// 6.2), "Bearer" otherwise.
    pub fn token_type(&self) -> &'static str {
        if crate::binding::Confirmation::read(self).is_ok_and(|cnf| cnf.jkt.is_some()) {
            "DPoP"
        } else {
            "Bearer"
        }
    }

    /// The token as RFC 7662 members with its other claims beside them (members win):
    /// the body of the HTTP answer and of a remote enricher's request.
    pub fn to_json(&self) -> Map<String, Value> {
        let mut out = self.other_claims.clone();
        let mut member = |name: &str, value: Value| {
            out.insert(name.to_owned(), value);
        };
        member("token_type", Value::from(self.token_type()));
        member("iss", Value::from(self.iss.clone()));
        member("exp", Value::from(self.exp));
        if let Some(scope) = self.scope_string() {
            member("scope", Value::from(scope));
        }
        for (name, value) in [
            ("client_id", &self.client_id),
            ("username", &self.username),
            ("sub", &self.sub),
            ("jti", &self.jti),
        ] {
            if let Some(value) = value {
                member(name, Value::from(value.clone()));
            }
        }
        for (name, value) in [("iat", self.iat), ("nbf", self.nbf)] {
            if let Some(value) = value {
                member(name, Value::from(value));
            }
        }
        match self.aud.as_slice() {
            [] => {}
            [one] => member("aud", Value::from(one.clone())),
            many => member("aud", Value::from(many.to_vec())),
        }
        out
    }

    /// [`Self::from_claims`] for other modules' tests, which have no signed token.
    #[cfg(test)]
    pub(crate) fn from_claims_for_tests(
        claims: Map<String, Value>,
        policy: &Policy,
    ) -> Result<Self, Rejection> {
        Self::from_claims(claims, policy)
    }

    /// Scopes as RFC 7662 writes them: one space-separated string.
    pub fn scope_string(&self) -> Option<String> {
        (!self.scopes.is_empty()).then(|| self.scopes.join(" "))
    }
}

/// `aud`: one string or an array of strings (RFC 7519 section 4.1.3); absent is none.
pub(super) fn audiences(value: Option<&Value>) -> Result<Vec<&str>, Rejection> {
    match value {
        None => Ok(Vec::new()),
        Some(Value::String(one)) => Ok(vec![one.as_str()]),
        Some(Value::Array(many)) => many
            .iter()
            .map(Value::as_str)
            .collect::<Option<Vec<_>>>()
            .ok_or(Rejection::new(Reason::Malformed, "aud holds a non-string")),
        Some(_) => Err(Rejection::new(
            Reason::Malformed,
            "aud is neither a string nor an array",
        )),
    }
}

/// How deep a claims set nests: 0 when every value is a string, number, bool or null,
/// 1 with an object or array of those, and so on.
pub fn nesting_depth(claims: &Map<String, Value>) -> usize {
    fn depth(value: &Value) -> usize {
        match value {
            Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
            Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
            _ => 0,
        }
    }
    claims.values().map(depth).max().unwrap_or(0)
}

/// RFC 7519 NumericDate: a JSON number of seconds, possibly fractional.
pub fn numeric_date(value: Option<&Value>) -> Result<Option<i64>, Rejection> {
    match value {
        None => Ok(None),
        Some(Value::Number(n)) => {
            if let Some(i) = n.as_i64() {
                Ok(Some(i))
            } else {
                // Fractional or out of range: floor and clamp into i64 without panicking.
                let f = n.as_f64().ok_or(MALFORMED_NUMERIC_DATE)?;
                if f.is_finite() {
                    Ok(Some(f.floor() as i64))
                } else {
                    Err(MALFORMED_NUMERIC_DATE)
                }
            }
        }
        Some(_) => Err(MALFORMED_NUMERIC_DATE),
    }
}

fn string_claim(claims: &Map<String, Value>, name: &str) -> Result<Option<String>, Rejection> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(Rejection::new(
            Reason::Malformed,
            "a string claim holds another type",
        )),
    }
}

/// The first of `names` present, and which one it was.
fn first_string<'n>(
    claims: &Map<String, Value>,
    names: &'n [String],
) -> Result<(Option<String>, Option<&'n str>), Rejection> {
    for name in names {
        if let Some(value) = string_claim(claims, name)? {
            return Ok((Some(value), Some(name.as_str())));
        }
    }
    Ok((None, None))
}

/// `scope` is a space-separated string (RFC 8693/9068); `scp` is an array (Okta, Entra)
/// or sometimes a string. The first configured claim present wins.
///
/// Scope tokens are separated by the space character alone (RFC 6749 section 3.3). A
/// token holding other whitespace or a control character is refused, not split some
/// other way: a tab or a no-break space read as a separator here, or a space inside an
/// array element, would grant a scope that whoever splits the answer's `scope` on
/// spaces reads differently. Other characters pass (Keycloak realms from before 19
/// have scopes with accents; WSO2 allows more).
fn scopes<'n>(
    claims: &Map<String, Value>,
    names: &'n [String],
) -> Result<(Vec<String>, Option<&'n str>), Rejection> {
    const NOT_A_SCOPE: &str =
        "scope holds whitespace other than a separating space, or a control character";
    let scope_token = |token: &str| !token.chars().any(|c| c.is_whitespace() || c.is_control());
    for name in names {
        let found = Some(name.as_str());
        match claims.get(name) {
            None | Some(Value::Null) => continue,
            Some(Value::String(s)) => {
                let tokens: Vec<String> = s
                    .split(' ')
                    .filter(|token| !token.is_empty())
                    .map(str::to_owned)
                    .collect();
                if !tokens.iter().all(|token| scope_token(token)) {
                    return Err(Rejection::new(Reason::Malformed, NOT_A_SCOPE));
                }
                return Ok((tokens, found));
            }
            Some(Value::Array(items)) => {
                let tokens = items
                    .iter()
                    .filter(|v| v.as_str() != Some(""))
                    .map(|v| v.as_str().map(str::to_owned))
                    .collect::<Option<Vec<_>>>()
                    .ok_or(Rejection::new(
                        Reason::Malformed,
                        "scope array holds a non-string",
                    ))?;
                if !tokens.iter().all(|token| scope_token(token)) {
                    return Err(Rejection::new(Reason::Malformed, NOT_A_SCOPE));
                }
                return Ok((tokens, found));
            }
            Some(_) => {
                return Err(Rejection::new(
                    Reason::Malformed,
                    "scope is neither a string nor an array",
                ));
            }
        }
    }
    Ok((Vec::new(), None))
}
