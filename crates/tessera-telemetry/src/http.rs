//! The HTTP endpoints: `/metrics`, `/healthz`, `/readyz`.

use std::future::Future;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;

use crate::{Readiness, Telemetry, TelemetryError, CONTENT_TYPE};

#[derive(Clone)]
struct Shared {
    telemetry: Arc<Telemetry>,
    readiness: Arc<dyn Readiness>,
}

/// The routes `GET /metrics`, `GET /healthz` and `GET /readyz` (see the [crate] docs), to
/// serve alone ([`serve`]) or merged into a service's own router.
pub fn router(telemetry: Arc<Telemetry>, readiness: Arc<dyn Readiness>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(Shared {
            telemetry,
            readiness,
        })
}

/// Serves [`router`] on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    telemetry: Arc<Telemetry>,
    readiness: Arc<dyn Readiness>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), TelemetryError> {
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "serving /metrics, /healthz and /readyz");
    axum::serve(listener, router(telemetry, readiness))
        .with_graceful_shutdown(shutdown)
        .await?;
    tracing::info!(%addr, "metrics and health server stopped");
    Ok(())
}

async fn metrics(State(shared): State<Shared>) -> Response {
    let telemetry = shared.telemetry.clone();
    match tokio::task::spawn_blocking(move || telemetry.render()).await {
        Ok(Ok(text)) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "cannot render the metrics");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot render the metrics\n",
            )
                .into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "a metrics collector failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "a metrics collector failed\n",
            )
                .into_response()
        }
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(shared): State<Shared>) -> Response {
    let readiness = shared.readiness.clone();
    let unmet = match tokio::task::spawn_blocking(move || readiness.unmet()).await {
        Ok(unmet) => unmet,
        Err(e) => {
            tracing::error!(error = %e, "the readiness check failed");
            vec!["readiness check: failed".to_owned()]
        }
    };
    if unmet.is_empty() {
        return "ready\n".into_response();
    }
    let mut body = String::new();
    for condition in &unmet {
        // One condition per line, whatever the check put in it.
        body.push_str(&condition.replace(['\r', '\n'], " "));
        body.push('\n');
    }
    (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use prometheus_client::metrics::gauge::Gauge;

    use super::*;
    use crate::AlwaysReady;

    async fn start(telemetry: Telemetry, readiness: Arc<dyn Readiness>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(serve(
            listener,
            Arc::new(telemetry),
            readiness,
            std::future::pending(),
        ));
        url
    }

    #[tokio::test]
    async fn metrics_health_and_readiness_over_http() {
        let mut telemetry = Telemetry::new();
        let level: Gauge = Gauge::default();
        level.set(7);
        telemetry
            .registry_mut()
            .register("demo_level", "A level", level);
        let ready = Arc::new(AtomicBool::new(false));
        let check = {
            let ready = ready.clone();
            move || {
                if ready.load(Ordering::Relaxed) {
                    Vec::new()
                } else {
                    vec![
                        "pool: 0 ready,\nfloor 1".to_owned(),
                        "broker: pending".to_owned(),
                    ]
                }
            }
        };
        let url = start(telemetry, Arc::new(check)).await;
        let http = reqwest::Client::new();

        let metrics = http.get(format!("{url}/metrics")).send().await.unwrap();
        assert_eq!(metrics.status(), 200);
        assert_eq!(
            metrics.headers()[reqwest::header::CONTENT_TYPE],
            CONTENT_TYPE
        );
        let text = metrics.text().await.unwrap();
        assert!(text.lines().any(|l| l == "demo_level 7"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");

        let health = http.get(format!("{url}/healthz")).send().await.unwrap();
        assert_eq!(health.status(), 200);
        assert_eq!(health.text().await.unwrap(), "ok\n");

        let not_ready = http.get(format!("{url}/readyz")).send().await.unwrap();
        assert_eq!(not_ready.status(), 503);
        assert_eq!(
            not_ready.text().await.unwrap(),
            "pool: 0 ready, floor 1\nbroker: pending\n"
        );
        ready.store(true, Ordering::Relaxed);
        let now_ready = http.get(format!("{url}/readyz")).send().await.unwrap();
        assert_eq!(now_ready.status(), 200);
        assert_eq!(now_ready.text().await.unwrap(), "ready\n");

        let missing = http.get(format!("{url}/nothing")).send().await.unwrap();
        assert_eq!(missing.status(), 404);
    }

    #[tokio::test]
    async fn serving_stops_when_shutdown_completes() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(
            listener,
            Arc::new(Telemetry::new()),
            Arc::new(AlwaysReady),
            async move {
                let _ = stopped.await;
            },
        ));
        let ready = reqwest::get(format!("http://{addr}/readyz")).await.unwrap();
        assert_eq!(ready.status(), 200);
        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
        assert!(reqwest::get(format!("http://{addr}/healthz"))
            .await
            .is_err());
    }
}
