//! What the gRPC services written by hand (rather than generated) share: their answers
//! are [`Encoded`](super::codec::Encoded) bytes, so one kept with a cached token goes out as it is, through
//! tonic's own [`Grpc`] for framing, limits and status. The wire format stays the proto's.

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use prost::Message;
use tonic::{
    Status,
    body::Body,
    codegen::StdError,
    server::{Grpc, NamedService},
};

use super::codec::StrictCodec;

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// One call's HTTP response, as a tower service answers it.
pub type Answered = BoxFuture<Result<http::Response<Body>, Infallible>>;

/// A service written by hand: the call for a request's method.
pub trait HandWritten: Clone + Send + 'static {
    /// The call of `request`'s method; `None` for a method the service does not have.
    fn call<B>(&self, request: http::Request<B>) -> Option<Answered>
    where
        B: tonic::codegen::Body + Send + 'static,
        B::Error: Into<StdError> + Send + 'static;
}

/// A hand-written service (`HandWritten`) as tonic's router takes it.
#[derive(Clone)]
pub struct Served<S>(pub S);

impl<S: HandWritten + NamedService> NamedService for Served<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> tower::Service<http::Request<B>> for Served<S>
where
    S: HandWritten,
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Answered;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Answered {
        self.0
            .call(request)
            .unwrap_or_else(|| Box::pin(async { Ok(Status::unimplemented("").into_http()) }))
    }
}

/// tonic's call handling for requests of type `Asked`, answered with messages already
/// encoded ([`Encoded`](super::codec::Encoded), or a type of their own), requests bounded
/// by `max_request_bytes` as the generated servers bound theirs.
pub fn encoded_grpc<Asked, Answer>(max_request_bytes: usize) -> Grpc<StrictCodec<Answer, Asked>>
where
    Asked: Message + Default + Send + 'static,
    Answer: Message + Send + 'static,
{
    Grpc::new(StrictCodec::default()).apply_max_message_size_config(Some(max_request_bytes), None)
}
