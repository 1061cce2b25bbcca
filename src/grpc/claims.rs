//! `introspectd.v1.SubjectClaimsAdmin`.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::{
    auth::authorize,
    convert::{json_to_struct, struct_to_json},
    pb::{self, subject_claims_admin_server::SubjectClaimsAdmin},
    status,
};
use crate::auth::{ApiKeys, Role};
use crate::enrich::{ClaimsAdmin, ClaimsError};
use crate::telemetry::metrics::Metrics;

pub struct ClaimsService {
    admin: Arc<ClaimsAdmin>,
    api_keys: Arc<ApiKeys>,
    metrics: Arc<Metrics>,
}

impl ClaimsService {
    pub fn new(admin: Arc<ClaimsAdmin>, api_keys: Arc<ApiKeys>, metrics: Arc<Metrics>) -> Self {
        Self {
            admin,
            api_keys,
            metrics,
        }
    }
}

fn from_claims(error: ClaimsError) -> Status {
    match error {
        ClaimsError::Invalid(why) => Status::invalid_argument(why),
        ClaimsError::Log(error) => status::from_log(error),
    }
}

#[tonic::async_trait]
impl SubjectClaimsAdmin for ClaimsService {
    async fn set_subject_claims(
        &self,
        request: Request<pb::SetSubjectClaimsRequest>,
    ) -> Result<Response<pb::SetSubjectClaimsResponse>, Status> {
        status::timed(&self.metrics, "SetSubjectClaims", async {
            let caller = authorize(&self.api_keys, request.metadata(), Role::Admin)?;
            let pb::SetSubjectClaimsRequest { iss, sub, claims } = request.into_inner();
            let claims = claims.as_ref().map(struct_to_json).unwrap_or_default();
            self.admin
                .set(iss, sub, claims)
                .await
                .map_err(from_claims)?;
            tracing::info!(caller = caller.name.as_str(), "subject claims set");
            Ok(Response::new(pb::SetSubjectClaimsResponse {}))
        })
        .await
    }

    async fn get_subject_claims(
        &self,
        request: Request<pb::GetSubjectClaimsRequest>,
    ) -> Result<Response<pb::GetSubjectClaimsResponse>, Status> {
        status::timed(&self.metrics, "GetSubjectClaims", async {
            authorize(&self.api_keys, request.metadata(), Role::Admin)?;
            let pb::GetSubjectClaimsRequest { iss, sub } = request.get_ref();
            let claims = self.admin.get(iss, sub).map_err(from_claims)?;
            Ok(Response::new(pb::GetSubjectClaimsResponse {
                found: claims.is_some(),
                claims: claims.map(|claims| json_to_struct(&claims)),
            }))
        })
        .await
    }

    async fn delete_subject_claims(
        &self,
        request: Request<pb::DeleteSubjectClaimsRequest>,
    ) -> Result<Response<pb::DeleteSubjectClaimsResponse>, Status> {
        status::timed(&self.metrics, "DeleteSubjectClaims", async {
            let caller = authorize(&self.api_keys, request.metadata(), Role::Admin)?;
            let pb::DeleteSubjectClaimsRequest { iss, sub } = request.into_inner();
            self.admin.delete(iss, sub).await.map_err(from_claims)?;
            tracing::info!(caller = caller.name.as_str(), "subject claims deleted");
            Ok(Response::new(pb::DeleteSubjectClaimsResponse {}))
        })
        .await
    }
}
