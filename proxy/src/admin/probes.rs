//! Kubelet probes rewritten by the injector: the kubelet asks the admin port for
//! `/app-health/<container>/<kind>`, and the proxy runs the application's original HTTP or TCP
//! probe against it — from the delivery address, which capture never touches — and answers
//! with the result. So probes keep working under a default-deny inbound policy without opening
//! the policy to the node.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use serde::Deserialize;

use crate::net::connector::Connector;
use crate::vocab::Direction;

/// How long one probe may take (the kubelet applies its own, usually shorter, timeout).
pub(crate) const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// One HTTP header of an HTTP probe.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ProbeHeader {
    /// Name.
    pub(crate) name: String,
    /// Value.
    pub(crate) value: String,
}

/// An HTTP probe.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct HttpGet {
    /// Request path.
    pub(crate) path: String,
    /// Application port.
    pub(crate) port: u16,
    /// Extra headers.
    #[serde(default)]
    pub(crate) http_headers: Vec<ProbeHeader>,
}

/// A TCP probe.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct TcpSocket {
    /// Application port.
    pub(crate) port: u16,
}

/// An application probe, as the injector hands it over.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct AppProbe {
    /// HTTP GET.
    pub(crate) http_get: Option<HttpGet>,
    /// TCP connect.
    pub(crate) tcp_socket: Option<TcpSocket>,
}

/// Parses `PORTCULLIS_APP_PROBES` (path → probe).
pub(crate) fn parse(json: &str) -> Result<HashMap<String, AppProbe>, serde_json::Error> {
    if json.trim().is_empty() {
        return Ok(HashMap::new());
    }
    serde_json::from_str(json)
}

/// The probes and how to reach the application.
#[derive(Debug)]
pub(crate) struct AppProbes {
    /// Path → probe.
    pub(crate) probes: HashMap<String, AppProbe>,
    /// The pod IP (the application may listen only there); loopback when unknown.
    pub(crate) target: IpAddr,
    /// Connects from the delivery address.
    pub(crate) connector: Connector,
}

impl AppProbes {
    /// Runs the probe for `path`; `None` if there is no such probe.
    pub(crate) async fn run(&self, path: &str) -> Option<(StatusCode, String)> {
        let probe = self.probes.get(path)?;
        let result = tokio::time::timeout(PROBE_TIMEOUT, self.execute(probe)).await;
        Some(match result {
            Ok(Ok(status)) => (status, format!("{}\n", status.as_u16())),
            Ok(Err(why)) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
            Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "probe timed out\n".into()),
        })
    }

    async fn execute(&self, probe: &AppProbe) -> Result<StatusCode, String> {
        // A loopback "client" makes the connector use the delivery source in every mode.
        let me = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);
        let port = match (&probe.http_get, &probe.tcp_socket) {
            (Some(h), _) => h.port,
            (None, Some(t)) => t.port,
            (None, None) => return Err("empty probe".into()),
        };
        let dst = SocketAddr::new(self.target, port);
        let stream = self
            .connector
            .connect(Direction::Inbound, me, dst)
            .await
            .map_err(|e| e.to_string())?
            .stream;
        let Some(get) = &probe.http_get else {
            return Ok(StatusCode::OK);
        };
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let mut req = Request::get(get.path.as_str())
            .header(http::header::HOST, dst.to_string())
            .header(http::header::USER_AGENT, "kube-probe (via portcullis)");
        for h in &get.http_headers {
            req = req.header(h.name.as_str(), h.value.as_str());
        }
        let req = req.body(Empty::<Bytes>::new()).map_err(|e| e.to_string())?;
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        Ok(resp.status())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_injector_format_parses_and_junk_does_not() {
        let p = parse(
            r#"{"/app-health/app/readyz": {"httpGet": {"path": "/h", "port": 8080, "httpHeaders": [{"name": "X", "value": "1"}]}},
                "/app-health/app/livez": {"tcpSocket": {"port": 8080}}}"#,
        )
        .expect("parse");
        let r = &p["/app-health/app/readyz"];
        assert_eq!(r.http_get.as_ref().map(|h| h.port), Some(8080));
        assert_eq!(
            p["/app-health/app/livez"]
                .tcp_socket
                .as_ref()
                .map(|t| t.port),
            Some(8080)
        );
        assert!(parse("").expect("empty").is_empty());
        assert!(parse("{\"/x\": {\"exec\": {}}}").is_err());
        assert!(parse("[1]").is_err());
    }
}
