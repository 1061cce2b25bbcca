//! Domain errors into `tonic::Status`, in one place. Messages stay generic; details go
//! to the log.

use tonic::Status;

use crate::introspect::IntrospectError;

pub fn from_introspect(error: IntrospectError) -> Status {
    match error {
        IntrospectError::KeysNotReady(iss) => {
            tracing::warn!(%iss, "introspection before the issuer's keys loaded");
            Status::unavailable("the issuer's keys have not loaded yet; retry shortly")
        }
    }
}

pub fn missing(field: &'static str) -> Status {
    Status::invalid_argument(format!("{field} is required"))
}

pub fn from_revoke(error: crate::revocation::RevokeError) -> Status {
    match error {
        crate::revocation::RevokeError::Invalid(what) => Status::invalid_argument(what),
        crate::revocation::RevokeError::Log(error) => from_log(error),
    }
}

pub fn from_log(error: crate::statelog::LogError) -> Status {
    use crate::statelog::LogError;
    match error {
        LogError::Unavailable(detail) => {
            tracing::warn!(%detail, "state store unavailable");
            Status::unavailable("the revocation store did not confirm the change; retrying is safe")
        }
        LogError::Embedded(detail) | LogError::Corrupt(detail) => {
            tracing::error!(%detail, "state log failure");
            Status::internal("the revocation store failed")
        }
    }
}
