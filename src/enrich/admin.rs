//! Setting, reading and deleting per-subject claims: the admin use cases.

use std::sync::Arc;

use serde_json::{Map, Value};

use super::{SubjectKey, check_claims};
use crate::keys::Issuers;
use crate::statelog::{Applier, Change, LogError, StateLog};

#[derive(Debug, thiserror::Error)]
pub enum ClaimsError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Log(#[from] LogError),
}

pub struct ClaimsAdmin {
    log: Arc<StateLog>,
    applier: Arc<Applier>,
    issuers: Arc<Issuers>,
}

impl ClaimsAdmin {
    pub fn new(log: Arc<StateLog>, applier: Arc<Applier>, issuers: Arc<Issuers>) -> Self {
        Self {
            log,
            applier,
            issuers,
        }
    }

    fn check_subject(&self, iss: &str, sub: &str) -> Result<(), ClaimsError> {
        if self.issuers.get(iss).is_none() {
            return Err(ClaimsError::Invalid(
                "iss names no configured issuer".into(),
            ));
        }
        if sub.is_empty() {
            return Err(ClaimsError::Invalid("sub is required".into()));
        }
        Ok(())
    }

    /// Replaces a subject's claims; returns once durable and applied here.
    pub async fn set(
        &self,
        iss: String,
        sub: String,
        claims: Map<String, Value>,
    ) -> Result<(), ClaimsError> {
        self.check_subject(&iss, &sub)?;
        if claims.keys().any(String::is_empty) {
            return Err(ClaimsError::Invalid("claim names must not be empty".into()));
        }
        check_claims(&claims).map_err(|why| ClaimsError::Invalid(format!("claims are {why}")))?;
        self.log
            .append(Change::SetSubjectClaims { iss, sub, claims })
            .await?;
        Ok(())
    }

    pub fn get(
        &self,
        iss: &str,
        sub: &str,
    ) -> Result<Option<Arc<Map<String, Value>>>, ClaimsError> {
        self.check_subject(iss, sub)?;
        Ok(self
            .applier
            .subjects
            .get(&SubjectKey::new(iss, sub))
            .map(|stored| stored.all))
    }

    pub async fn delete(&self, iss: String, sub: String) -> Result<(), ClaimsError> {
        self.check_subject(&iss, &sub)?;
        self.log
            .append(Change::DeleteSubjectClaims { iss, sub })
            .await?;
        Ok(())
    }
}
