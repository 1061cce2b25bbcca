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
        IntrospectError::Upstream(error) => {
            tracing::warn!(%error, "an issuer's introspection endpoint failed");
            Status::unavailable("the issuer's introspection endpoint did not answer; retry shortly")
        }
        IntrospectError::Enrichment(error) => {
            tracing::warn!(%error, "a fail-closed enricher failed");
            Status::unavailable("enrichment is unavailable; retry shortly")
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
    if error.is_unavailable() {
        tracing::warn!(%error, "state store unavailable");
        Status::unavailable("the revocation store did not confirm the change; retrying is safe")
    } else {
        tracing::error!(%error, "state log failure");
        Status::internal("the revocation store failed")
    }
}

/// The canonical name of a status code, as metrics label it.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}
