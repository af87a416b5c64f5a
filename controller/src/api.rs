//! The sidecar API: `Sidecar.Watch` over gRPC (tonic). A watch streams the workload's current
//! view, then every new version. Who may watch which workload is not yet enforced (the caller's
//! workload certificate will say; see the operator notes).

use std::pin::Pin;
use std::sync::Arc;

use portcullis_api::v1;
use portcullis_api::v1::sidecar_server::{Sidecar, SidecarServer};
use tokio_stream::Stream;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::WatchStream;
use tonic::{Request, Response, Status};

use crate::publish::Publisher;

/// The gRPC service.
#[derive(Debug, Clone)]
pub struct Api {
    publisher: Arc<Publisher>,
}

impl Api {
    /// Serves `publisher`'s views.
    pub fn new(publisher: Arc<Publisher>) -> SidecarServer<Self> {
        SidecarServer::new(Self { publisher })
    }
}

/// Counts an open stream for as long as it lives.
struct Subscribed {
    publisher: Arc<Publisher>,
}

impl Drop for Subscribed {
    fn drop(&mut self) {
        self.publisher.metrics.subscribers.dec();
    }
}

type ViewStream = Pin<Box<dyn Stream<Item = Result<v1::View, Status>> + Send>>;

#[tonic::async_trait]
impl Sidecar for Api {
    type WatchStream = ViewStream;

    async fn watch(
        &self,
        request: Request<v1::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let req = request.into_inner();
        if req.namespace.is_empty() || req.pod.is_empty() {
            return Err(Status::invalid_argument(
                "namespace and pod are required (the sidecar's --pod-namespace and --pod-name)",
            ));
        }
        tracing::debug!(namespace = %req.namespace, pod = %req.pod, "watch");
        let Some(rx) = self.publisher.subscribe((req.namespace, req.pod)) else {
            return Err(Status::resource_exhausted(
                "too many watches of pods the controller does not know",
            ));
        };
        self.publisher.metrics.subscribers.inc();
        let guard = Subscribed {
            publisher: self.publisher.clone(),
        };
        let stream = WatchStream::new(rx).map(move |view| {
            let _alive = &guard;
            Ok(v1::View::clone(&view))
        });
        Ok(Response::new(Box::pin(stream)))
    }
}
