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
