//! The single integration-test binary: the real service on loopback sockets, a real
//! HTTP JWKS server on port 0, generated keys, the generated gRPC client.

mod binding;
mod cli;
mod disk;
mod enrichment;
mod gateways;
mod helm;
mod http;
mod keys;
mod lifecycle;
mod limits;
mod logs;
mod observability;
mod opaque;
mod redis_server;
mod replication;
mod revocation;
mod stream;
mod support;
mod tls;
mod tokens;
mod tools;
