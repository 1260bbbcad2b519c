//! `rivulet loadtest`: `concurrency` clients send the same request in a
//! loop (each waits for its answer before the next), until `requests` have
//! been sent or `duration` has passed, whichever comes first. Reports
//! throughput and latency percentiles. The clients share one thread (an
//! event loop), so the generator takes at most one core from the server it
//! measures, whatever the concurrency.

use rivulet::{Error, ErrorKind, Result};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What to send and how much.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    pub url: String,
    /// POSTed as JSON; a GET when empty.
    pub body: Vec<u8>,
    pub concurrency: usize,
    /// At most this many requests.
    pub requests: usize,
    /// At most this long.
    pub duration: Option<Duration>,
}

/// What a load test measured. Latencies in milliseconds.
#[derive(Clone, Debug, PartialEq)]
pub struct LoadReport {
    pub concurrency: usize,
    pub requests: usize,
    /// Requests that failed or had a status other than 200.
    pub errors: usize,
    pub seconds: f64,
    /// Successful requests per second.
    pub throughput: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// The first failure, to say why.
    pub first_error: Option<String>,
}

impl LoadReport {
    /// One line for people.
    pub fn summary(&self) -> String {
        format!(
            "{} requests ({} errors) in {:.2} s with {} clients: {:.0} req/s; latency p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
            self.requests, self.errors, self.seconds, self.concurrency, self.throughput, self.p50_ms, self.p90_ms, self.p99_ms, self.max_ms
        )
    }
    /// One JSON object.
    pub fn to_json(&self) -> String {
        serde_json::json!({
            "concurrency": self.concurrency, "requests": self.requests, "errors": self.errors,
            "seconds": self.seconds, "throughput": self.throughput,
            "p50_ms": self.p50_ms, "p90_ms": self.p90_ms, "p99_ms": self.p99_ms, "max_ms": self.max_ms,
            "first_error": self.first_error,
        })
        .to_string()
    }
}

/// The `q`-quantile (nearest rank) of sorted `v`.
fn quantile(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

/// Run the load test.
pub fn run(options: &LoadOptions) -> Result<LoadReport> {
    if options.concurrency == 0 || options.requests == 0 {
        return Err(Error::new(ErrorKind::InvalidArgument, "loadtest: concurrency and requests must be positive"));
    }
    let url = reqwest::Url::parse(&options.url)
        .map_err(|e| Error::new(ErrorKind::InvalidArgument, format!("loadtest: bad URL '{}': {e}", options.url)))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::new(ErrorKind::Io, format!("loadtest: {e}")))?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(options.concurrency)
        .tcp_nodelay(true)
        .build()
        .map_err(|e| Error::new(ErrorKind::Io, format!("loadtest: {e}")))?;
    let next = Arc::new(AtomicUsize::new(0));
    let body = bytes_body(&options.body);
    let start = Instant::now();
    let deadline = options.duration.map(|d| start + d);
    let results: Vec<(Vec<f64>, usize, Option<String>)> = runtime.block_on(async {
        let tasks: Vec<_> = (0..options.concurrency)
            .map(|_| {
                let (client, url, next, body) = (client.clone(), url.clone(), next.clone(), body.clone());
                let total = options.requests;
                tokio::spawn(async move {
                    let mut latencies = Vec::new();
                    let (mut errors, mut first_error) = (0usize, None::<String>);
                    loop {
                        if next.fetch_add(1, Ordering::Relaxed) >= total
                            || deadline.is_some_and(|d| Instant::now() >= d)
                        {
                            break;
                        }
                        let t0 = Instant::now();
                        let request = match &body {
                            Some(b) => {
                                client.post(url.clone()).header("content-type", "application/json").body(b.clone())
                            }
                            None => client.get(url.clone()),
                        };
                        let outcome = match request.send().await {
                            Ok(r) => {
                                let status = r.status();
                                match r.bytes().await {
                                    Ok(_) if status.is_success() => Ok(()),
                                    Ok(b) => Err(format!(
                                        "HTTP {status}: {}",
                                        String::from_utf8_lossy(&b[..b.len().min(200)])
                                    )),
                                    Err(e) => Err(e.to_string()),
                                }
                            }
                            Err(e) => Err(e.to_string()),
                        };
                        match outcome {
                            Ok(()) => latencies.push(t0.elapsed().as_secs_f64() * 1e3),
                            Err(e) => {
                                errors += 1;
                                first_error.get_or_insert(e);
                            }
                        }
                    }
                    (latencies, errors, first_error)
                })
            })
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            if let Ok(r) = t.await {
                out.push(r);
            }
        }
        out
    });
    let seconds = start.elapsed().as_secs_f64();
    let mut latencies: Vec<f64> = results.iter().flat_map(|r| r.0.iter().copied()).collect();
    latencies.sort_by(f64::total_cmp);
    let errors = results.iter().map(|r| r.1).sum();
    let first_error = results.into_iter().find_map(|r| r.2);
    Ok(LoadReport {
        concurrency: options.concurrency,
        requests: latencies.len() + errors,
        errors,
        seconds,
        throughput: latencies.len() as f64 / seconds.max(1e-9),
        p50_ms: quantile(&latencies, 0.50),
        p90_ms: quantile(&latencies, 0.90),
        p99_ms: quantile(&latencies, 0.99),
        max_ms: latencies.last().copied().unwrap_or(0.0),
        first_error,
    })
}

fn bytes_body(b: &[u8]) -> Option<axum::body::Bytes> {
    (!b.is_empty()).then(|| axum::body::Bytes::from(b.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::quantile;

    #[test]
    fn nearest_rank_quantiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), 50.0);
        assert_eq!(quantile(&v, 0.99), 99.0);
        assert_eq!(quantile(&v, 1.0), 100.0);
        assert_eq!(quantile(&[7.0], 0.9), 7.0);
        assert_eq!(quantile(&[], 0.5), 0.0);
    }
}
