//! The HTTP server: /metrics/prometheus, /health, /health/live, /health/ready.
//! Every answer comes from atomics and the metrics registry; none waits on the pipeline.

use std::future::Future;
use std::sync::Arc;

use serde_json::json;
use tokio::net::TcpListener;
use warp::Filter;
use warp::http::StatusCode;

use crate::health::{Health, Status};
use crate::metrics::Metrics;

pub async fn serve(
    listener: TcpListener,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    stop: impl Future<Output = ()> + Send + 'static,
) {
    let h = health.clone();
    let prometheus = warp::path!("metrics" / "prometheus").and(warp::get()).map(move || {
        h.report(); // refreshes the derived gauges
        warp::reply::with_header(metrics.encode(), "content-type", "text/plain; version=0.0.4; charset=utf-8")
    });
    let h = health.clone();
    let full = warp::path!("health").and(warp::get()).map(move || {
        let report = h.report();
        let code = if report.status == Status::Down { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
        warp::reply::with_status(warp::reply::json(&report), code)
    });
    let live = warp::path!("health" / "live").and(warp::get()).map(|| warp::reply::json(&json!({"status": "alive"})));
    let h = health;
    let ready = warp::path!("health" / "ready").and(warp::get()).map(move || {
        let ready = h.ready();
        let body = json!({
            "ready": ready,
            "migrated": h.migrated.load(std::sync::atomic::Ordering::Relaxed),
            "joined_group": h.joined.load(std::sync::atomic::Ordering::Relaxed),
            "database": h.db_up(),
        });
        let code = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
        warp::reply::with_status(warp::reply::json(&body), code)
    });
    let routes = prometheus.or(full).or(live).or(ready);
    warp::serve(routes).incoming(listener).graceful(stop).run().await;
}
