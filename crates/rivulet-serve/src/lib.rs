//! `rivulet serve`: Rivulet saved models behind TensorFlow Serving's REST
//! API (on `axum`/`tokio`/`hyper`), and `rivulet loadtest`, the load
//! generator that measures it.
//!
//! A [`Server`] serves the models of a [`ServerOptions`]: each is a base
//! directory of numbered versions (saved models); a poll notices new ones
//! and switches to them without failing a request. With batching on,
//! concurrent requests to a signature are merged into one run. Bodies are
//! limited in size, tensors in rank and elements, JSON in nesting depth
//! (serde_json's 128). SIGTERM or Ctrl-C (or [`Server::shutdown`]) stops
//! accepting connections and lets the requests in flight finish.

mod batching;
pub mod config;
mod error;
mod http;
pub mod json;
pub mod loadtest;
mod metrics;
mod models;
pub mod textproto;

pub use config::{BatchingOptions, ModelConfig, VersionPolicy};
pub use error::{Code, ServeError};

use axum::extract::DefaultBodyLimit;
use axum::serve::ListenerExt;
use rivulet::saved_model::LoadOptions;
use rivulet::{Error, ErrorKind, Result};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Everything a server needs.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    pub models: Vec<ModelConfig>,
    /// Server-side batching (off when `None`).
    pub batching: Option<BatchingOptions>,
    /// Largest request body accepted (413 beyond).
    pub max_body_bytes: usize,
    /// Largest tensor a request may build, in elements.
    pub max_elements: usize,
    /// How often base paths are checked for new versions.
    pub poll_interval: Duration,
    /// Graph passes of the loaded models.
    pub load: LoadOptions,
    /// Threads answering HTTP (0: one per core).
    pub http_threads: usize,
}

impl Default for ServerOptions {
    fn default() -> ServerOptions {
        ServerOptions {
            models: Vec::new(),
            batching: None,
            max_body_bytes: 16 << 20,
            max_elements: 1 << 24,
            poll_interval: Duration::from_secs(1),
            load: LoadOptions::default(),
            http_threads: 0,
        }
    }
}

/// A running server: see the crate documentation.
pub struct Server {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<()>>>,
    poller: Option<std::thread::JoinHandle<()>>,
    polling: Arc<AtomicBool>,
}

fn io_error(what: &str, e: impl std::fmt::Display) -> Error {
    Error::new(ErrorKind::Io, format!("{what}: {e}"))
}

impl Server {
    /// Load the models and listen on `addr` (port 0: any free port, see
    /// [`Server::local_addr`]). Returns once the server accepts connections.
    pub fn start(addr: SocketAddr, options: ServerOptions) -> Result<Server> {
        if options.models.is_empty() {
            return Err(Error::new(ErrorKind::InvalidArgument, "serve: no model to serve"));
        }
        if let Some(b) = &options.batching {
            b.check()?;
        }
        let metrics = Arc::new(metrics::Metrics::default());
        let registry = Arc::new(models::Registry::new(
            options.models.clone(),
            options.batching.clone(),
            options.load.clone(),
            metrics.clone(),
        ));
        registry.poll();
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        if options.http_threads > 0 {
            builder.worker_threads(options.http_threads);
        }
        let runtime =
            builder.enable_all().thread_name("serve-http").build().map_err(|e| io_error("serve: runtime", e))?;
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(addr))
            .map_err(|e| io_error(&format!("serve: cannot listen on {addr}"), e))?;
        let addr = listener.local_addr().map_err(|e| io_error("serve", e))?;
        let app = Arc::new(http::App {
            registry: registry.clone(),
            metrics,
            limits: json::Limits { max_elements: options.max_elements },
        });
        let router = axum::Router::new()
            .fallback(http::handle)
            .with_state(app)
            .layer(DefaultBodyLimit::max(options.max_body_bytes));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("serve".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = listener.tap_io(|tcp| {
                        let _ = tcp.set_nodelay(true);
                    });
                    axum::serve(listener, router)
                        .with_graceful_shutdown(shutdown_signal(stopped))
                        .await
                        .map_err(|e| io_error("serve", e))
                })
            })
            .map_err(|e| io_error("serve: thread", e))?;
        let polling = Arc::new(AtomicBool::new(true));
        let poller = {
            let (polling, registry, every) = (polling.clone(), registry.clone(), options.poll_interval);
            std::thread::Builder::new()
                .name("serve-poll".into())
                .spawn(move || {
                    let tick = Duration::from_millis(50).min(every);
                    let mut waited = Duration::ZERO;
                    while polling.load(Ordering::Relaxed) {
                        std::thread::sleep(tick);
                        waited += tick;
                        if waited >= every {
                            waited = Duration::ZERO;
                            registry.poll();
                        }
                    }
                })
                .map_err(|e| io_error("serve: thread", e))?
        };
        Ok(Server { addr, stop: Some(stop), thread: Some(thread), poller: Some(poller), polling })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stop accepting connections, let requests in flight finish, and return.
    pub fn shutdown(mut self) -> Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.join()
    }

    /// Serve until SIGTERM or Ctrl-C, then finish the requests in flight.
    pub fn wait(mut self) -> Result<()> {
        self.join()
    }

    fn join(&mut self) -> Result<()> {
        let result = match self.thread.take() {
            Some(t) => t.join().unwrap_or_else(|_| Err(Error::new(ErrorKind::Io, "serve: the server thread panicked"))),
            None => Ok(()),
        };
        self.polling.store(false, Ordering::Relaxed);
        if let Some(p) = self.poller.take() {
            let _ = p.join();
        }
        result
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = self.join();
    }
}

/// Resolves on SIGTERM, Ctrl-C, or [`Server::shutdown`].
async fn shutdown_signal(stopped: tokio::sync::oneshot::Receiver<()>) {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => log::info!("serve: Ctrl-C, finishing requests in flight"),
        _ = term => log::info!("serve: SIGTERM, finishing requests in flight"),
        _ = stopped => {},
    }
}
