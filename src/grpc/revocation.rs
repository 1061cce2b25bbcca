//! `introspectd.v1.TokenRevocation`.

use std::{pin::Pin, sync::Arc};

use tokio_stream::{Stream, StreamExt, wrappers::ReceiverStream};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use super::{
    caller_name,
    pb::{self, token_revocation_server::TokenRevocation},
    status,
};
use crate::auth::Admission;
use crate::revocation::{
    Matched, Record, RecordKind, Revocation, Revocations, Target, TokenIdentity, WatchEvent,
};
use crate::tasks::Tasks;
use crate::telemetry::metrics::{Metrics, StreamMetrics};

pub struct RevocationService {
    revocations: Arc<Revocations>,
    /// Where watch streams run, so shutdown joins them.
    tasks: Tasks,
    /// Fires when the server drains, so open watch streams end and shutdown completes.
    drain: CancellationToken,
    streams: StreamMetrics,
}

impl RevocationService {
    pub fn new(
        revocations: Arc<Revocations>,
        tasks: Tasks,
        drain: CancellationToken,
        metrics: &Metrics,
    ) -> Self {
        Self {
            revocations,
            tasks,
            drain,
            streams: metrics.watch_streams(),
        }
    }
}

/// Counts a stream while it is open, its events as they go, and its life when it ends.
struct Watched {
    metrics: StreamMetrics,
    opened: std::time::Instant,
}

impl Watched {
    fn new(metrics: StreamMetrics) -> Self {
        metrics.open.increment(1.0);
        Self {
            metrics,
            opened: std::time::Instant::now(),
        }
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        self.metrics.open.decrement(1.0);
        self.metrics
            .duration
            .record(self.opened.elapsed().as_secs_f64());
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::RevocationEvent, Status>> + Send>>;

#[tonic::async_trait]
impl TokenRevocation for RevocationService {
    async fn revoke(
        &self,
        request: Request<pb::RevokeRequest>,
    ) -> Result<Response<pb::RevokeResponse>, Status> {
        self.revoke_inner(request).await
    }

    async fn check_revocation(
        &self,
        request: Request<pb::CheckRevocationRequest>,
    ) -> Result<Response<pb::CheckRevocationResponse>, Status> {
        self.check_inner(request)
    }

    type WatchRevocationsStream = EventStream;

    async fn watch_revocations(
        &self,
        request: Request<pb::WatchRevocationsRequest>,
    ) -> Result<Response<Self::WatchRevocationsStream>, Status> {
        self.watch_inner(request).await
    }
}

impl RevocationService {
    async fn revoke_inner(
        &self,
        request: Request<pb::RevokeRequest>,
    ) -> Result<Response<pb::RevokeResponse>, Status> {
        let caller = caller_name(&request);
        let pb::RevokeRequest { target, reason } = request.into_inner();
        let target = target_from_pb(target.ok_or_else(|| status::missing("target"))?);
        let kind = target_kind(&target);
        let now = crate::unix_now();
        let position = self
            .revocations
            .revoke(target, reason, now)
            .await
            .map_err(status::from_revoke)?;
        tracing::info!(
            grpc.method = "Revoke",
            %caller,
            record = kind.as_str(),
            position,
            "revoked"
        );
        Ok(Response::new(pb::RevokeResponse {}))
    }

    fn check_inner(
        &self,
        request: Request<pb::CheckRevocationRequest>,
    ) -> Result<Response<pb::CheckRevocationResponse>, Status> {
        let pb::CheckRevocationRequest { subject } = request.into_inner();
        let matched = match subject.ok_or_else(|| status::missing("token or identity"))? {
            pb::check_revocation_request::Subject::Token(token) => {
                if token.is_empty() {
                    return Err(status::missing("token"));
                }
                self.revocations.check_token(&token)
            }
            pb::check_revocation_request::Subject::Identity(identity) => {
                let pb::TokenIdentity {
                    iss,
                    jti,
                    sub,
                    client_id,
                    sid,
                    iat,
                } = identity;
                if iss.is_empty() {
                    return Err(status::missing("identity.iss"));
                }
                self.revocations.check(&TokenIdentity {
                    token_hash: None,
                    iss: &iss,
                    jti: jti.as_deref(),
                    sub: sub.as_deref(),
                    client_id: client_id.as_deref(),
                    sid: sid.as_deref(),
                    iat,
                })
            }
        };
        let matched = matched.map_err(|_| status::incomplete())?;
        Ok(Response::new(match matched {
            Some(Matched { kind, before }) => pb::CheckRevocationResponse {
                revoked: true,
                matched: kind_to_pb(kind).into(),
                cutoff_before: before,
            },
            None => pb::CheckRevocationResponse::default(),
        }))
    }

    async fn watch_inner(
        &self,
        request: Request<pb::WatchRevocationsRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let admission = request.extensions().get::<Arc<Admission>>().cloned();
        let pb::WatchRevocationsRequest { after } = request.into_inner();
        let after = match after {
            None => None,
            Some(text) => Some(text.parse::<u64>().map_err(|_| {
                Status::invalid_argument("after is not a position received from this stream")
            })?),
        };
        let events = self
            .revocations
            .watch(after, crate::unix_now(), &self.tasks, self.drain.clone())
            .await
            .map_err(status::from_watch)?;
        let watched = Watched::new(self.streams.clone());
        let stream = ReceiverStream::new(events).map(move |event| {
            // A key removed since the stream opened gets nothing more.
            if let Some(Err(refused)) = admission.as_ref().map(|a| a.still_admitted()) {
                return Err(super::layers::denied(refused));
            }
            watched.metrics.events.increment(1);
            match event {
                Ok(WatchEvent::Revoked {
                    position,
                    revocation,
                }) => Ok(pb::RevocationEvent {
                    position: position.to_string(),
                    revocation: Some(revocation_to_pb(revocation)),
                    caught_up: false,
                }),
                Ok(WatchEvent::CaughtUp { position }) => Ok(pb::RevocationEvent {
                    position: position.to_string(),
                    revocation: None,
                    caught_up: true,
                }),
                Err(error) => Err(status::from_log(error)),
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

fn target_from_pb(target: pb::revoke_request::Target) -> Target {
    use pb::revoke_request::Target as T;
    match target {
        T::Token(pb::TokenTarget {
            token,
            token_type_hint: _,
        }) => Target::Token(token),
        T::Jti(pb::JtiTarget { iss, jti, exp }) => Target::Jti { iss, jti, exp },
        T::Subject(pb::CutoffTarget { iss, value, before }) => Target::Subject {
            iss,
            sub: value,
            before,
        },
        T::Client(pb::CutoffTarget { iss, value, before }) => Target::Client {
            iss,
            client_id: value,
            before,
        },
        T::Session(pb::CutoffTarget { iss, value, before }) => Target::Session {
            iss,
            sid: value,
            before,
        },
    }
}

fn target_kind(target: &Target) -> RecordKind {
    match target {
        Target::Token(_) => RecordKind::Token,
        Target::Jti { .. } => RecordKind::Jti,
        Target::Subject { .. } => RecordKind::Subject,
        Target::Client { .. } => RecordKind::Client,
        Target::Session { .. } => RecordKind::Session,
    }
}

fn kind_to_pb(kind: RecordKind) -> pb::RecordKind {
    match kind {
        RecordKind::Token => pb::RecordKind::Token,
        RecordKind::Jti => pb::RecordKind::Jti,
        RecordKind::Subject => pb::RecordKind::Subject,
        RecordKind::Client => pb::RecordKind::Client,
        RecordKind::Session => pb::RecordKind::Session,
    }
}

fn revocation_to_pb(revocation: Revocation) -> pb::Revocation {
    use pb::revocation::Record as R;
    let cutoff = |iss, value, before| pb::CutoffTarget {
        iss,
        value,
        before: Some(before),
    };
    let record = match revocation.record {
        Record::Token { sha256 } => R::TokenSha256(sha256),
        Record::Jti { iss, jti } => R::Jti(pb::JtiTarget {
            iss,
            jti,
            exp: Some(revocation.forget_after),
        }),
        Record::Subject { iss, sub, before } => R::Subject(cutoff(iss, sub, before)),
        Record::Client {
            iss,
            client_id,
            before,
        } => R::Client(cutoff(iss, client_id, before)),
        Record::Session { iss, sid, before } => R::Session(cutoff(iss, sid, before)),
    };
    pb::Revocation {
        record: Some(record),
        forget_after: revocation.forget_after,
        revoked_at: revocation.revoked_at,
        reason: revocation.reason,
    }
}
