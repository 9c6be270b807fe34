//! Metrics: names `dualwrite_<area>_<noun>_<unit|total>`, declared once, with handles cached
//! so the hot path does no registry lookups. Labels come from small fixed sets.
//!
//! # Layer
//! The bottom of the proxy beside `config`: handles every layer may use. It imports nothing of
//! the proxy.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Counter,
    Gauge, Histogram, Unit,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Install the Prometheus recorder once per process and describe every metric.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Suffix("duration_seconds".into()),
                    &[
                        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                        0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                    ],
                )
                .expect("bucket list is not empty")
                .build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (an embedding process); ours still renders.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            // Histogram samples accumulate until upkeep folds them into buckets: without a
            // periodic upkeep a proxy nobody scrapes would grow without bound.
            let upkeep = handle.clone();
            let _ = std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || loop {
                    std::thread::sleep(Duration::from_secs(5));
                    upkeep.run_upkeep();
                });
            handle
        })
        .clone()
}

fn describe() {
    describe_gauge!(
        "dualwrite_client_connections",
        "Client sessions currently open"
    );
    describe_counter!(
        "dualwrite_client_connections_total",
        "Client sessions opened since start"
    );
    describe_counter!(
        "dualwrite_statements_total",
        Unit::Count,
        "Statements relayed, by protocol (simple|extended)"
    );
    describe_counter!(
        "dualwrite_bytes_total",
        Unit::Bytes,
        "Bytes relayed, by direction (client_to_server|server_to_client)"
    );
    describe_counter!(
        "dualwrite_errors_total",
        "Errors by kind (client_auth, protocol, connect, tls, timeout, too_many_clients, ...)"
    );
    describe_counter!(
        "dualwrite_server_errors_total",
        "ErrorResponses relayed from the primary"
    );
    describe_histogram!(
        "dualwrite_statement_duration_seconds",
        Unit::Seconds,
        "Round trip from a Query or Sync to its ReadyForQuery"
    );
    describe_histogram!(
        "dualwrite_backend_connect_duration_seconds",
        Unit::Seconds,
        "Opening and authenticating a backend session"
    );
    describe_counter!(
        "dualwrite_cancel_requests_total",
        "Cancel requests, by result (forwarded|unknown_key)"
    );
}

/// Cached handles for the hot path.
pub struct Metrics {
    pub statements_simple: Counter,
    pub statements_extended: Counter,
    pub bytes_in: Counter,
    pub bytes_out: Counter,
    pub server_errors: Counter,
    pub statement_duration: Histogram,
    backend_connect: Histogram,
    routed_primary: Counter,
    routed_both: Counter,
    connections: Gauge,
    connections_total: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        install();
        Metrics {
            statements_simple: counter!("dualwrite_statements_total", "protocol" => "simple"),
            statements_extended: counter!("dualwrite_statements_total", "protocol" => "extended"),
            bytes_in: counter!("dualwrite_bytes_total", "direction" => "client_to_server"),
            bytes_out: counter!("dualwrite_bytes_total", "direction" => "server_to_client"),
            server_errors: counter!("dualwrite_server_errors_total"),
            statement_duration: histogram!("dualwrite_statement_duration_seconds"),
            backend_connect: histogram!("dualwrite_backend_connect_duration_seconds"),
            routed_primary: counter!("dualwrite_units_routed_total", "route" => "primary"),
            routed_both: counter!("dualwrite_units_routed_total", "route" => "both"),
            connections: gauge!("dualwrite_client_connections"),
            connections_total: counter!("dualwrite_client_connections_total"),
        }
    }
}

/// Keeps the open-sessions gauge right on every exit path.
pub struct SessionGauge(Gauge);

impl Drop for SessionGauge {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

impl Metrics {
    /// `kind` is one of a fixed set of literals, never user input.
    pub fn error(&self, kind: &'static str) {
        counter!("dualwrite_errors_total", "kind" => kind).increment(1);
    }

    pub fn backend_connect(&self, took: Duration) {
        self.backend_connect.record(took.as_secs_f64());
    }

    pub fn session_open(&self) -> SessionGauge {
        self.connections.increment(1.0);
        self.connections_total.increment(1);
        SessionGauge(self.connections.clone())
    }

    /// A unit went to the primary only, or to both.
    pub fn routed(&self, both: bool) {
        if both {
            self.routed_both.increment(1)
        } else {
            self.routed_primary.increment(1)
        }
    }

    pub fn cancel(&self, result: &'static str) {
        counter!("dualwrite_cancel_requests_total", "result" => result).increment(1);
    }
}
