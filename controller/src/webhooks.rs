//! The admission webhooks on `--webhook-addr` (HTTPS, 8443): `POST /mutate` is the injector's
//! review (the `portcullis-injector` library), `POST /validate` is [`validate`] (policy objects
//! checked at admission with the config crate, and held to the guardrails of the last snapshot
//! the [`Publisher`] applied), `GET /healthz`. The HTTPS shell — rustls with
//! the serving certificate re-read on renewal, capped bodies, graceful stop — is the injector's.

pub mod validate;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use portcullis_injector::config::InjectConfig;
use portcullis_injector::server::{Reply, Routes, mutate, serve_routes};
use portcullis_injector::tls::{CertStore, TlsError};
use tokio::net::TcpListener;

use crate::metrics::{ReviewLabels, ViolationLabels};
use crate::publish::Publisher;
use crate::settings::WebhookSettings;
use portcullis_config::guardrail::Mode;
use validate::{Outcome, ReviewError, validate};

/// How often the serving certificate files are checked for a renewal.
pub const CERT_POLL: Duration = Duration::from_secs(5);

/// What the webhooks answer with.
#[derive(Debug)]
struct Webhooks {
    inject: Arc<InjectConfig>,
    publisher: Arc<Publisher>,
}

impl Routes for Webhooks {
    fn post(&self, path: &str, body: &[u8]) -> Option<Reply> {
        match path {
            "/mutate" => Some(mutate(body, &self.inject)),
            "/validate" => Some(validation(
                body,
                &self.inject.policy_configmap,
                &self.publisher,
            )),
            _ => None,
        }
    }
}

/// Answers a `/validate` body, logged and counted with its outcome; `400` for what is no
/// AdmissionReview, `503` for a policy write before the first snapshot (the webhook's
/// `failurePolicy` decides).
fn validation(body: &[u8], policy_configmap: &str, publisher: &Publisher) -> Reply {
    let facts = publisher.facts();
    let metrics = &publisher.metrics;
    let count = |outcome| {
        metrics
            .admission_reviews
            .get_or_create(&ReviewLabels { outcome })
            .inc();
    };
    let answer = match validate(body, policy_configmap, facts.as_deref()) {
        Ok(answer) => answer,
        Err(e @ ReviewError::NotReady) => {
            tracing::warn!(error = %e, "policy write before the first snapshot");
            count("not_ready");
            return Reply::text(StatusCode::SERVICE_UNAVAILABLE, &format!("{e}\n"));
        }
        Err(e) => {
            tracing::error!(error = %e, "not an AdmissionReview");
            count("malformed");
            return Reply::text(StatusCode::BAD_REQUEST, &format!("{e}\n"));
        }
    };
    for v in &answer.violations {
        let mode = match v.mode {
            Mode::Enforce => "enforce",
            Mode::Audit => "audit",
        };
        let labels = ViolationLabels {
            guardrail: v.guardrail.to_string(),
            rule: v.rule,
            mode,
        };
        metrics.guardrail_violations.get_or_create(&labels).inc();
    }
    match &answer.outcome {
        Outcome::Allowed { object, warnings } => {
            tracing::info!(%object, warnings, "policy admitted");
            count("admitted");
        }
        Outcome::Denied { object, message } => {
            tracing::warn!(%object, %message, "policy refused");
            count(if answer.violations.is_empty() {
                "invalid"
            } else {
                "forbidden"
            });
        }
        Outcome::Ignored => {
            tracing::debug!("not a policy write");
            count("ignored");
        }
    }
    Reply::json(&answer.body)
}

/// The webhook server, bound and with its certificate loaded.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    store: Arc<CertStore>,
    routes: Arc<Webhooks>,
}

/// Why the webhook server cannot start.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The address cannot be bound.
    #[error("binding the webhooks' {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The serving certificate does not load.
    #[error("the webhooks' TLS")]
    Tls(#[source] TlsError),
}

impl Server {
    /// Loads the certificate (a bad pair is an error now, not at the first review) and binds;
    /// policy writes are judged by `publisher`'s facts.
    pub async fn bind(
        settings: &WebhookSettings,
        publisher: Arc<Publisher>,
    ) -> Result<Self, WebhookError> {
        let store = CertStore::load(&settings.cert, &settings.key).map_err(WebhookError::Tls)?;
        let listener =
            TcpListener::bind(settings.addr)
                .await
                .map_err(|source| WebhookError::Bind {
                    addr: settings.addr,
                    source,
                })?;
        Ok(Self {
            listener,
            store: Arc::new(store),
            routes: Arc::new(Webhooks {
                inject: Arc::new(settings.inject.clone()),
                publisher,
            }),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` resolves (requests in flight then finish, up to 10 s).
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), rustls::Error> {
        if let Ok(addr) = self.local_addr() {
            tracing::info!(%addr, "serving the admission webhooks: /mutate, /validate, /healthz");
        }
        serve_routes(self.listener, self.store, self.routes, CERT_POLL, shutdown).await
    }
}
