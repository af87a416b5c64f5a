//! `Identity.Certify`: the mesh CA ([`crate::ca`]) on the sidecar API. The caller proves its
//! workload as for a watch — its pod-bound projected token, or its current certificate (a
//! renewal) — and gets an SVID of exactly that workload for the key in its request. Never over
//! a plaintext API. Issued and refused requests are counted (`portcullis_controller_svids_*`).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use portcullis_api::v1;
use portcullis_api::v1::identity_server::{Identity, IdentityServer};
use tonic::{Request, Response, Status};

use super::Authentication;
use super::auth::{Caller, WorkloadId};
use crate::ca::Refused;
use crate::ca::live::LiveCa;
use crate::metrics::{Metrics, RefusedLabels};

/// The service.
#[derive(Debug)]
pub struct IdentityApi {
    ca: Arc<LiveCa>,
    authentication: Arc<Authentication>,
    ttl: Duration,
    metrics: Arc<Metrics>,
}

impl IdentityApi {
    /// Issues `ttl`-long SVIDs from `authority` to the callers `authentication` proves.
    pub fn new(
        ca: Arc<LiveCa>,
        authentication: Arc<Authentication>,
        ttl: Duration,
        metrics: Arc<Metrics>,
    ) -> IdentityServer<Self> {
        IdentityServer::new(Self {
            ca,
            authentication,
            ttl,
            metrics,
        })
    }

    fn refuse(&self, reason: &'static str, status: Status) -> Status {
        self.metrics
            .svids_refused
            .get_or_create(&RefusedLabels { reason })
            .inc();
        tracing::warn!(reason, "no certificate: {}", status.message());
        status
    }

    /// The workload a caller may have a certificate for.
    fn workload(&self, caller: Option<Caller>) -> Result<WorkloadId, Status> {
        match caller {
            Some(Caller::Certificate(id, _)) => Ok(id),
            Some(Caller::Token(token)) if token.pod.is_some() => Ok(token.id),
            Some(Caller::Token(_)) => Err(self.refuse(
                "unauthenticated",
                Status::unauthenticated("the token is not bound to a pod"),
            )),
            Some(Caller::Anyone) => Err(self.refuse(
                "plaintext",
                Status::failed_precondition("no certificates over a plaintext API"),
            )),
            None => Err(self.refuse(
                "unauthenticated",
                Status::unauthenticated(
                    "present the projected service-account token (or the current certificate)",
                ),
            )),
        }
    }
}

fn reason(refused: &Refused) -> &'static str {
    match refused {
        Refused::Malformed(_) => "malformed",
        Refused::Names { .. } => "identity",
        Refused::Ca => "ca",
        Refused::Signing(_) => "signing",
    }
}

#[tonic::async_trait]
impl Identity for IdentityApi {
    async fn certify(
        &self,
        request: Request<v1::CertifyRequest>,
    ) -> Result<Response<v1::Svid>, Status> {
        let caller = match self.authentication.caller(&request).await {
            Ok(caller) => caller,
            Err(status) => return Err(self.refuse("unauthenticated", status)),
        };
        let id = self.workload(caller)?;
        let csr = request.into_inner().csr;
        let authority = self.ca.current();
        let svid = authority
            .sign(&csr, &id, SystemTime::now(), self.ttl)
            .map_err(|e| self.refuse(reason(&e), Status::permission_denied(e.to_string())))?;
        self.metrics.svids_issued.inc();
        tracing::info!(spiffe_id = %authority.spiffe_id(&id), "certificate issued");
        Ok(Response::new(v1::Svid {
            certificate: svid.certificate,
            bundle: svid.bundle,
            not_after: svid
                .not_after
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        }))
    }
}
