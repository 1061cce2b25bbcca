//! gRPC surface: `introspectd.v1.TokenIntrospection`, `grpc.health.v1.Health` and server
//! reflection. These modules only translate between protobuf and the domain.

pub mod auth;
mod claims;
mod convert;
mod introspection;
mod revocation;
pub mod status;

pub use claims::ClaimsService;
pub use convert::{json_to_struct, struct_to_json};
pub use introspection::IntrospectionService;
pub use revocation::RevocationService;

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
