//! gRPC surface: `introspectd.v1.TokenIntrospection`, `TokenRevocation`,
//! `SubjectClaimsAdmin`, `grpc.health.v1.Health` and server reflection. The services
//! only translate between protobuf and the domain; authentication and metrics are the
//! [`layers`] around them, and domain errors become statuses in [`status`].

mod check_request;
mod claims;
pub mod codec;
mod convert;
mod ext_authz;
mod introspection;
pub mod layers;
mod revocation;
mod served;
pub mod status;

pub use claims::ClaimsService;
pub use convert::{json_to_struct, struct_to_json};
pub use ext_authz::ExtAuthzService;
pub use introspection::{IntrospectionService, answer_message};
pub use revocation::RevocationService;
pub use served::Served;

/// The generated protobuf types and tonic stubs of `introspectd.v1`.
pub mod pb {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    tonic::include_proto!("introspectd.v1");

    /// Encoded file descriptor set, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("introspectd_descriptor");
}

/// Health service name that is SERVING as long as the process runs (liveness probes);
/// the overall name "" follows readiness.
pub const LIVENESS_SERVICE: &str = "liveness";

/// The name of the caller [`layers::AuthLayer`] authenticated, for audit log lines.
fn caller_name<T>(request: &tonic::Request<T>) -> String {
    request
        .extensions()
        .get::<std::sync::Arc<crate::auth::Caller>>()
        .map_or_else(|| "anonymous".to_owned(), |caller| caller.name.clone())
}
