//! `introspectd.v1.SubjectClaimsAdmin`. Callers are authenticated (admin role) by
//! [`super::layers::AuthLayer`] before these run.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::{
    caller_name,
    convert::{json_to_struct, struct_to_json},
    pb::{self, subject_claims_admin_server::SubjectClaimsAdmin},
    status,
};
use crate::enrich::{ClaimsAdmin, ClaimsError};

pub struct ClaimsService {
    admin: Arc<ClaimsAdmin>,
}

impl ClaimsService {
    pub fn new(admin: Arc<ClaimsAdmin>) -> Self {
        Self { admin }
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
        let caller = caller_name(&request);
        let pb::SetSubjectClaimsRequest { iss, sub, claims } = request.into_inner();
        let claims = claims.as_ref().map(struct_to_json).unwrap_or_default();
        self.admin
            .set(iss, sub, claims)
            .await
            .map_err(from_claims)?;
        tracing::info!(%caller, "subject claims set");
        Ok(Response::new(pb::SetSubjectClaimsResponse {}))
    }

    async fn get_subject_claims(
        &self,
        request: Request<pb::GetSubjectClaimsRequest>,
    ) -> Result<Response<pb::GetSubjectClaimsResponse>, Status> {
        let pb::GetSubjectClaimsRequest { iss, sub } = request.get_ref();
        let claims = self.admin.get(iss, sub).map_err(from_claims)?;
        Ok(Response::new(pb::GetSubjectClaimsResponse {
            found: claims.is_some(),
            claims: claims.map(|claims| json_to_struct(&claims)),
        }))
    }

    async fn delete_subject_claims(
        &self,
        request: Request<pb::DeleteSubjectClaimsRequest>,
    ) -> Result<Response<pb::DeleteSubjectClaimsResponse>, Status> {
        let caller = caller_name(&request);
        let pb::DeleteSubjectClaimsRequest { iss, sub } = request.into_inner();
        self.admin.delete(iss, sub).await.map_err(from_claims)?;
        tracing::info!(%caller, "subject claims deleted");
        Ok(Response::new(pb::DeleteSubjectClaimsResponse {}))
    }
}
