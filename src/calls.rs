//! The futures the gRPC and HTTP layers wrap a call in: refused before its handler,
//! holding an in-flight slot, or bounded by the call timeout.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

pin_project_lite::pin_project! {
    /// The handler's future, or the refusal answered without calling it.
    #[project = AdmittedProjection]
    pub enum Admitted<F, R> {
        Refused { response: Option<R> },
        Called {
            #[pin]
            call: F,
        },
    }
}

impl<F, R, E> Future for Admitted<F, R>
where
    F: Future<Output = Result<R, E>>,
{
    type Output = Result<R, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            AdmittedProjection::Called { call } => call.poll(cx),
            // Taken on the first poll; a completed future is not polled again.
            AdmittedProjection::Refused { response } => response
                .take()
                .map_or(Poll::Pending, |r| Poll::Ready(Ok(r))),
        }
    }
}

pin_project_lite::pin_project! {
    /// A call holding its in-flight slot until it completes.
    pub struct Holding<F> {
        #[pin]
        call: F,
        _permit: Option<tokio::sync::OwnedSemaphorePermit>,
    }
}

impl<F> Holding<F> {
    pub fn new(call: F, permit: Option<tokio::sync::OwnedSemaphorePermit>) -> Self {
        Self {
            call,
            _permit: permit,
        }
    }
}

impl<F: Future> Future for Holding<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().call.poll(cx)
    }
}

pin_project_lite::pin_project! {
    /// A call given `timeout`, answered by `on_elapsed` when it takes longer; the call is
    /// not polled again, and is dropped with this future.
    pub struct Bounded<F, R> {
        #[pin]
        call: tokio::time::Timeout<F>,
        on_elapsed: fn() -> R,
    }
}

impl<F: Future, R> Bounded<F, R> {
    pub fn new(call: F, timeout: std::time::Duration, on_elapsed: fn() -> R) -> Self {
        Self {
            call: tokio::time::timeout(timeout, call),
            on_elapsed,
        }
    }
}

impl<F, R, E> Future for Bounded<F, R>
where
    F: Future<Output = Result<R, E>>,
{
    type Output = Result<R, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.call.poll(cx) {
            Poll::Ready(Ok(answer)) => Poll::Ready(answer),
            Poll::Ready(Err(_elapsed)) => Poll::Ready(Ok((this.on_elapsed)())),
            Poll::Pending => Poll::Pending,
        }
    }
}
