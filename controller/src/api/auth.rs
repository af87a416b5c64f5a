//! Who may watch which workload: the pure decision, from what the caller proved (its workload
//! certificate's SPIFFE ID, or a projected service-account token's claims) to a [`Grant`] that
//! every view sent on the stream must satisfy. No IO.
//!
//! A watch of `ns/pod` is served only to a caller of namespace `ns`; its service account must
//! be the pod's (checked on every view, since the pod may appear or be replaced while the
//! stream is open); a token must be bound to that very pod; and the stream ends when the token
//! (or the certificate) expires, so the sidecar reconnects with the fresh one.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use portcullis_api::v1;
use serde_json::Value;

/// The audience a sidecar's projected token must carry.
pub const AUDIENCE: &str = "portcullis";

/// A workload identity: namespace and service account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadId {
    /// Namespace.
    pub namespace: String,
    /// Service account.
    pub service_account: String,
}

/// What a caller proved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// The API is plaintext (`--api-plaintext`, testbeds only): nobody is authenticated, and
    /// every watch is served.
    Anyone,
    /// A client certificate of this trust domain with this SPIFFE identity, valid until then.
    Certificate(WorkloadId, Option<SystemTime>),
    /// A verified service-account token.
    Token(TokenIdentity),
}

/// What a verified service-account token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenIdentity {
    /// Its service account.
    pub id: WorkloadId,
    /// The pod it is bound to (projected tokens are).
    pub pod: Option<String>,
    /// When it expires.
    pub expires: Option<SystemTime>,
}

/// Why a watch is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// Neither a client certificate nor a bearer token.
    #[error(
        "no credentials: present the workload certificate or the projected service-account token"
    )]
    NoCredentials,
    /// The caller belongs to another namespace.
    #[error("a caller of namespace {caller:?} may not watch namespace {asked:?}")]
    Namespace {
        /// The caller's.
        caller: String,
        /// The watched one.
        asked: String,
    },
    /// A pod-bound token of another pod.
    #[error("a token bound to pod {caller:?} may not watch pod {asked:?}")]
    Pod {
        /// The token's.
        caller: String,
        /// The watched one.
        asked: String,
    },
    /// The pod runs as another service account.
    #[error("service account {caller:?} may not watch a pod of service account {pod:?}")]
    ServiceAccount {
        /// The caller's.
        caller: String,
        /// The pod's.
        pod: String,
    },
    /// The token is not one for this API.
    #[error("token refused: {0}")]
    Token(String),
}

/// What an admitted watch may be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The service account the pod must run as (`None`: any, plaintext API).
    pub service_account: Option<String>,
    /// When the stream must end (the token's expiry).
    pub until: Option<SystemTime>,
}

/// Decides a watch of `namespace/pod` by `caller` (`None`: it presented nothing).
pub fn admit(caller: Option<&Caller>, namespace: &str, pod: &str) -> Result<Grant, Denied> {
    let (id, until) = match caller.ok_or(Denied::NoCredentials)? {
        Caller::Anyone => {
            return Ok(Grant {
                service_account: None,
                until: None,
            });
        }
        Caller::Certificate(id, until) => (id, *until),
        Caller::Token(token) => {
            // Only a pod-bound token (as kubelet projects them) says which pod it is; a bare
            // service-account token could watch made-up names.
            let bound = token.pod.as_deref().ok_or_else(|| {
                Denied::Token("not bound to a pod (mount a projected token)".into())
            })?;
            if bound != pod {
                return Err(Denied::Pod {
                    caller: bound.to_string(),
                    asked: pod.to_string(),
                });
            }
            (&token.id, token.expires)
        }
    };
    if id.namespace != namespace {
        return Err(Denied::Namespace {
            caller: id.namespace.clone(),
            asked: namespace.to_string(),
        });
    }
    Ok(Grant {
        service_account: Some(id.service_account.clone()),
        until,
    })
}

impl Grant {
    /// Whether `view` may be sent: an unknown pod's view holds nothing; a known pod must run
    /// as the caller's service account.
    pub fn permits(&self, view: &v1::View) -> Result<(), Denied> {
        let (Some(wanted), Some(workload)) = (&self.service_account, &view.workload) else {
            return Ok(());
        };
        if !view.known || workload.service_account == *wanted {
            return Ok(());
        }
        Err(Denied::ServiceAccount {
            caller: wanted.clone(),
            pod: workload.service_account.clone(),
        })
    }
}

/// The workload of a `spiffe://<trust_domain>/ns/<ns>/sa/<sa>` ID (another trust domain or
/// shape: none).
pub fn spiffe_workload(uri: &str, trust_domain: &str) -> Option<WorkloadId> {
    let path = uri.strip_prefix("spiffe://")?.strip_prefix(trust_domain)?;
    let mut parts = path.strip_prefix('/')?.split('/');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("ns"), Some(ns), Some("sa"), Some(sa))
            if parts.next().is_none() && !ns.is_empty() && !sa.is_empty() =>
        {
            Some(WorkloadId {
                namespace: ns.to_string(),
                service_account: sa.to_string(),
            })
        }
        _ => None,
    }
}

/// The service account of a `system:serviceaccount:<ns>:<sa>` user name.
pub fn service_account_user(name: &str) -> Option<WorkloadId> {
    let (ns, sa) = name
        .strip_prefix("system:serviceaccount:")?
        .split_once(':')?;
    (!ns.is_empty() && !sa.is_empty() && !sa.contains(':')).then(|| WorkloadId {
        namespace: ns.to_string(),
        service_account: sa.to_string(),
    })
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_str()
}

fn audiences(claims: &HashMap<String, Value>) -> Vec<&str> {
    match claims.get("aud") {
        Some(Value::String(a)) => vec![a.as_str()],
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

/// The identity in the claims of a token whose signature and times were verified: issued by
/// `issuer`, for [`AUDIENCE`], naming a service account (`sub` and the `kubernetes.io` claim
/// agreeing), optionally bound to a pod.
pub fn token_identity(
    claims: &HashMap<String, Value>,
    issuer: &str,
) -> Result<TokenIdentity, Denied> {
    let refuse = |m: &str| Denied::Token(m.to_string());
    if claims.get("iss").and_then(Value::as_str) != Some(issuer) {
        return Err(refuse("another issuer"));
    }
    if !audiences(claims).contains(&AUDIENCE) {
        return Err(refuse("not for audience portcullis"));
    }
    let sub = claims.get("sub").and_then(Value::as_str).unwrap_or("");
    let id = service_account_user(sub).ok_or_else(|| refuse("not a service account"))?;
    let k8s = claims.get("kubernetes.io").unwrap_or(&Value::Null);
    if str_at(k8s, &["namespace"]) != Some(&id.namespace)
        || str_at(k8s, &["serviceaccount", "name"]) != Some(&id.service_account)
    {
        return Err(refuse("sub and kubernetes.io disagree"));
    }
    let expires = claims
        .get("exp")
        .and_then(Value::as_u64)
        .map(|s| UNIX_EPOCH + Duration::from_secs(s));
    Ok(TokenIdentity {
        id,
        pod: str_at(k8s, &["pod", "name"]).map(String::from),
        expires,
    })
}

/// The identity in a TokenReview's `status` (the API server verified the token for
/// [`AUDIENCE`]).
pub fn review_identity(status: &Value) -> Result<TokenIdentity, Denied> {
    let refuse = |m: &str| Denied::Token(m.to_string());
    if status.get("authenticated").and_then(Value::as_bool) != Some(true) {
        let why = str_at(status, &["error"]).unwrap_or("not authenticated");
        return Err(Denied::Token(why.to_string()));
    }
    let granted = status.get("audiences").and_then(Value::as_array);
    if !granted.is_some_and(|a| a.iter().any(|a| a.as_str() == Some(AUDIENCE))) {
        return Err(refuse("not for audience portcullis"));
    }
    let user = str_at(status, &["user", "username"]).unwrap_or("");
    let id = service_account_user(user).ok_or_else(|| refuse("not a service account"))?;
    let pod = status
        .pointer("/user/extra/authentication.kubernetes.io~1pod-name/0")
        .and_then(Value::as_str)
        .map(String::from);
    Ok(TokenIdentity {
        id,
        pod,
        expires: None,
    })
}

#[cfg(test)]
mod tests;
