//! Prometheus metrics, rendered by `GET /metrics`.
//!
//! One process-wide recorder (the `metrics` facade is global); every server in the
//! process reports into it.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Live real-time sessions, by transport (gauge).
pub const CONNECTIONS: &str = "chat_connections";
/// Completed handshakes, by result (counter).
pub const HANDSHAKES: &str = "chat_handshakes_total";
/// Messages committed (counter).
pub const MESSAGES_RECEIVED: &str = "chat_messages_received_total";
/// Message frames queued on recipient sessions (counter).
pub const MESSAGES_DELIVERED: &str = "chat_messages_delivered_total";
/// Time to send one conversation's newly committed messages to every recipient
/// session, including those committed meanwhile that joined the fan-out (histogram).
pub const FANOUT_SECONDS: &str = "chat_fanout_seconds";
/// Messages per group-committed batch (histogram).
pub const STORE_BATCH_SIZE: &str = "chat_store_batch_size";
/// Time to commit one batch (histogram).
pub const STORE_COMMIT_SECONDS: &str = "chat_store_commit_seconds";
/// Failed store calls, by kind: `full`, `busy`, `unreachable`, `timeout`, `io`,
/// `corrupt`, `closed`, `other` (counter).
pub const STORE_ERRORS: &str = "chat_store_errors_total";
/// Sessions closed for falling behind (counter).
pub const SLOW_CONSUMERS: &str = "chat_slow_consumer_disconnects_total";
/// Requests refused by a rate limit, by kind (counter).
pub const RATE_LIMITED: &str = "chat_rate_limited_total";
/// QUIC datagrams received, by outcome: `typing` handled, or `discarded` (counter).
pub const DATAGRAMS_RECEIVED: &str = "chat_datagrams_received_total";
/// Cluster bus messages published (counter).
pub const BUS_PUBLISHED: &str = "chat_cluster_bus_published_total";
/// Cluster bus messages dropped before reaching Redis (counter).
pub const BUS_DROPPED: &str = "chat_cluster_bus_dropped_total";
/// Whether the cluster bus subscription is up (gauge, 0 or 1).
pub const BUS_CONNECTED: &str = "chat_cluster_bus_connected";
/// Time from another node publishing a bus message to this node applying it (histogram).
pub const BUS_LAG_SECONDS: &str = "chat_cluster_bus_lag_seconds";
/// Uploads by event: `created`, `completed`, `terminated`, `expired` (counter).
pub const UPLOADS: &str = "chat_uploads_total";
/// Bytes of uploads stored (counter).
pub const UPLOAD_BYTES: &str = "chat_upload_bytes_total";

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the recorder on first use and returns the handle that renders it.
pub fn handle() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Suffix("seconds".into()),
                &[
                    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                    1.0,
                ],
            )
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Full(STORE_BATCH_SIZE.into()),
                    &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0],
                )
            })
            .map(PrometheusBuilder::build_recorder);
        match recorder {
            Ok(recorder) => {
                let handle = recorder.handle();
                if metrics::set_global_recorder(recorder).is_err() {
                    tracing::warn!(
                        "a metrics recorder was already installed; /metrics stays empty"
                    );
                }
                describe();
                handle
            }
            Err(e) => {
                tracing::error!(error = %e, "metrics disabled");
                PrometheusBuilder::new().build_recorder().handle()
            }
        }
    })
}

fn describe() {
    metrics::describe_gauge!(CONNECTIONS, "Live real-time sessions by transport");
    metrics::describe_counter!(HANDSHAKES, "Real-time handshakes by result");
    metrics::describe_counter!(MESSAGES_RECEIVED, "Messages committed to storage");
    metrics::describe_counter!(
        MESSAGES_DELIVERED,
        "Message frames sent or queued to recipient sessions"
    );
    metrics::describe_histogram!(
        FANOUT_SECONDS,
        metrics::Unit::Seconds,
        "Time to send a conversation's committed messages (with those that joined meanwhile) to every recipient session"
    );
    metrics::describe_histogram!(STORE_BATCH_SIZE, "Messages per group-committed batch");
    metrics::describe_histogram!(
        STORE_COMMIT_SECONDS,
        metrics::Unit::Seconds,
        "Time to commit one message batch"
    );
    metrics::describe_counter!(STORE_ERRORS, "Failed store calls by kind");
    metrics::describe_counter!(SLOW_CONSUMERS, "Sessions closed for falling behind");
    metrics::describe_counter!(RATE_LIMITED, "Requests refused by a rate limit");
    metrics::describe_counter!(
        DATAGRAMS_RECEIVED,
        "QUIC datagrams received: typing handled, or discarded (PROTOCOL.md 1.1)"
    );
    metrics::describe_counter!(BUS_PUBLISHED, "Cluster bus messages published");
    metrics::describe_counter!(
        BUS_DROPPED,
        "Cluster bus messages dropped before reaching Redis"
    );
    metrics::describe_gauge!(BUS_CONNECTED, "Whether the cluster bus subscription is up");
    metrics::describe_histogram!(
        BUS_LAG_SECONDS,
        metrics::Unit::Seconds,
        "Time from another node publishing a bus message to this node applying it"
    );
    // Register every series at zero, so a fresh server's /metrics already lists them.
    for transport in ["websocket_json", "websocket_postcard", "quic"] {
        metrics::gauge!(CONNECTIONS, "transport" => transport).increment(0.0);
    }
    for result in ["ok", "refused"] {
        metrics::counter!(HANDSHAKES, "result" => result).increment(0);
    }
    for outcome in ["typing", "discarded"] {
        metrics::counter!(DATAGRAMS_RECEIVED, "outcome" => outcome).increment(0);
    }
    for kind in ["send", "login"] {
        metrics::counter!(RATE_LIMITED, "kind" => kind).increment(0);
    }
    metrics::counter!(MESSAGES_RECEIVED).increment(0);
    metrics::counter!(MESSAGES_DELIVERED).increment(0);
    metrics::counter!(SLOW_CONSUMERS).increment(0);
}

/// The Prometheus text exposition.
pub fn render() -> String {
    handle().render()
}
