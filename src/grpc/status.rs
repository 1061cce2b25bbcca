//! Domain errors into `tonic::Status`, in one place. Messages stay generic; details go
//! to the log.

use tonic::Status;

use crate::introspect::IntrospectError;

/// What a request that does not decode is told (`INVALID_ARGUMENT`, as the proto promises).
pub const NOT_PROTOBUF: &str = "the message is not a valid protobuf encoding of its type";

pub fn from_introspect(error: IntrospectError) -> Status {
    match error {
        IntrospectError::KeysNotReady(iss) => {
            tracing::warn!(%iss, "introspection before the issuer's keys loaded");
            Status::unavailable("the issuer's keys have not loaded yet; retry shortly")
        }
        IntrospectError::RevocationsIncomplete(_) => incomplete(),
        IntrospectError::Upstream(error) if error.over_budget() => {
            tracing::warn!(%error, "not sent to the issuer: its outbound budget is spent");
            Status::unavailable(
                "too many calls to the issuer's introspection endpoint right now; retry shortly",
            )
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

/// The revocation set is still loading (a replica catching up with its store).
pub fn incomplete() -> Status {
    tracing::debug!("a question before the revocation set caught up");
    Status::unavailable("the revocation set is still loading; retry shortly")
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

/// A store that did not confirm a change (down, slow, full, closed) is UNAVAILABLE: the
/// change may or may not have been kept, and repeating it is safe (records are
/// idempotent). Only a change that cannot even be encoded is a bug (INTERNAL).
pub fn from_log(error: crate::statelog::LogError) -> Status {
    use crate::statelog::LogError;
    if let LogError::Encode(_) = error {
        tracing::error!(%error, "a change does not encode");
        return Status::internal("the change cannot be stored");
    }
    if error.is_unavailable() {
        tracing::warn!(%error, "state store unavailable");
    } else {
        tracing::error!(%error, "state store failure");
    }
    Status::unavailable(
        "the store did not confirm the change; its outcome is unknown and repeating it is safe",
    )
}

/// A position the log cannot resume from is OUT_OF_RANGE: the client starts over
/// without `after` (from the live set).
pub fn from_watch(error: crate::revocation::WatchError) -> Status {
    match error {
        crate::revocation::WatchError::OutOfRange(why) => Status::out_of_range(format!(
            "{why}: watch again without `after` to start from the live set"
        )),
        crate::revocation::WatchError::Log(error) => from_log(error),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::statelog::LogError;

    #[test]
    fn a_store_that_cannot_commit_is_unavailable() {
        for error in [
            LogError::Closed,
            LogError::Timeout(std::time::Duration::from_secs(1)),
            LogError::Io(std::io::Error::other("disk full")),
        ] {
            assert_eq!(from_log(error).code(), tonic::Code::Unavailable);
        }
    }
}
