//! Prometheus metrics, served at `/monitoring/prometheus/metrics`: request
//! counts by model, API and status; request latency and batch size
//! histograms; loaded versions.

use parking_lot::Mutex;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    model_name: String,
    api: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelLabels {
    model_name: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// The server's metrics.
pub struct Metrics {
    registry: Mutex<Registry>,
    requests: Family<RequestLabels, Counter>,
    latency: HistogramFamily<RequestLabels>,
    batch_sizes: HistogramFamily<ModelLabels>,
    versions: Family<ModelLabels, Gauge>,
}

fn latency_histogram() -> Histogram {
    // 10 µs to ~20 s.
    Histogram::new(exponential_buckets(1e-5, 2.0, 22))
}

fn batch_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 14))
}

impl Default for Metrics {
    fn default() -> Metrics {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let latency: HistogramFamily<RequestLabels> = Family::new_with_constructor(latency_histogram);
        let batch_sizes: HistogramFamily<ModelLabels> = Family::new_with_constructor(batch_histogram);
        let versions = Family::<ModelLabels, Gauge>::default();
        registry.register("rivulet_serving_requests", "Requests by model, API and HTTP status", requests.clone());
        registry.register(
            "rivulet_serving_request_latency_seconds",
            "Time from a request's arrival to its response, by model, API and HTTP status",
            latency.clone(),
        );
        registry.register("rivulet_serving_batch_size", "Rows in each merged batch run", batch_sizes.clone());
        registry.register("rivulet_serving_model_versions", "Versions of each model being served", versions.clone());
        Metrics { registry: Mutex::new(registry), requests, latency, batch_sizes, versions }
    }
}

impl Metrics {
    /// Count one finished request and its latency.
    pub fn request(&self, model: &str, api: &str, status: u16, seconds: f64) {
        let labels = RequestLabels { model_name: model.to_string(), api: api.to_string(), status: status.to_string() };
        self.requests.get_or_create(&labels).inc();
        self.latency.get_or_create(&labels).observe(seconds);
    }

    /// Record the rows of one merged batch.
    pub fn batch_size(&self, model: &str, rows: usize) {
        self.batch_sizes.get_or_create(&ModelLabels { model_name: model.to_string() }).observe(rows as f64);
    }

    /// Set how many versions of `model` are served.
    pub fn versions(&self, model: &str, n: usize) {
        self.versions.get_or_create(&ModelLabels { model_name: model.to_string() }).set(n as i64);
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry.lock());
        out
    }
}
