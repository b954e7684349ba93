//! The Quiver host: runtime, registry-backed deployments, HTTP trigger, admin API and
//! the `quiver` CLI (a thin layer over these modules).

pub mod admission;
pub mod bindings;
pub mod call;
pub mod capability;
pub mod cli;
pub mod columns;
pub mod convert;
pub mod datasets;
pub mod egress;
pub mod events;
pub mod features;
pub mod functions;
pub mod logs;
pub mod manifest;
pub mod metrics;
pub mod monitors;
pub mod nn;
pub mod oci;
pub mod otel;
pub mod rollout;
pub mod runtime;
pub mod scaler;
pub mod server;
pub mod signing;
pub mod sqlite;
pub mod tenancy;
pub mod trace;
pub mod triggers;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Server settings: flags and `QUIVER_*` env over embedded defaults.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub max_body: usize,
    pub allocator: runtime::Allocator,
    pub features: FeatureStoreConfig,
    /// Threads that run models; 0 picks half the cores (at least 1).
    pub inference_threads: usize,
    /// Which library runs `cpu` models.
    pub onnx_backend: nn::OnnxBackend,
    /// Serve HTTPS with this PEM certificate chain and private key.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Also serve the Open Inference Protocol's gRPC service here.
    pub grpc_listen: Option<SocketAddr>,
    /// How often tenants' usage counters are saved (and when the server stops).
    pub usage_save_interval: std::time::Duration,
    /// Event and schedule triggers: this host's consumer name, leases, trimming.
    pub triggers: triggers::TriggerConfig,
    /// Also write function logs to files: (directory, max bytes per file).
    pub function_logs: Option<(PathBuf, u64)>,
    /// Export spans and metrics to this OTLP/HTTP receiver (off when `None`).
    pub otlp: Option<OtlpConfig>,
    /// Push and pull artifacts in this OCI registry (`oci://HOST[:PORT]/PATH`); the
    /// data dir's blobs are then a cache.
    pub oci_registry: Option<String>,
    /// The hosts' shared key for precompiled code in that registry (a file).
    pub precompiled_key_file: Option<PathBuf>,
}

/// Where and how often telemetry goes out over OTLP.
#[derive(Debug, Clone)]
pub struct OtlpConfig {
    /// The receiver's base URL (`/v1/traces` and `/v1/metrics` are added).
    pub endpoint: String,
    /// How often metrics are pushed.
    pub metrics_interval: std::time::Duration,
    /// The share of new traces sampled (0 to 1).
    pub sample_ratio: f64,
}

/// Where `quiver:ml/features` keeps its data.
#[derive(Debug, Clone)]
pub enum FeatureStoreConfig {
    /// In process (the default: nothing to install); `capacity` bytes per tenant.
    Embedded { capacity: usize },
    /// A Redis server, shared by every host that points at it.
    Redis {
        url: String,
        timeout: std::time::Duration,
    },
}

impl FeatureStoreConfig {
    /// The event bus beside the feature store: Redis Streams on the same server,
    /// or the embedded log in the data dir.
    fn open_bus(&self, data_dir: &Path) -> anyhow::Result<Arc<dyn events::Bus>> {
        Ok(match self {
            FeatureStoreConfig::Embedded { .. } => Arc::new(
                events::EventLog::open(&data_dir.join("events.db"))
                    .map_err(|e| anyhow::anyhow!("opening the event log: {e}"))?,
            ),
            FeatureStoreConfig::Redis { url, timeout } => Arc::new(events::RedisBus::start(
                url,
                (*timeout).max(std::time::Duration::from_secs(2)),
            )?),
        })
    }

    fn open(&self) -> anyhow::Result<Arc<dyn features::FeatureBackend>> {
        Ok(match self {
            FeatureStoreConfig::Embedded { capacity } => {
                if *capacity == 0 {
                    anyhow::bail!("--features-capacity must be more than 0 bytes");
                }
                Arc::new(features::Embedded::new(*capacity))
            }
            FeatureStoreConfig::Redis { url, timeout } => {
                Arc::new(features::RedisStore::start(url, *timeout)?)
            }
        })
    }
}

pub struct RunningServer {
    pub addr: SocketAddr,
    /// Where the gRPC service listens (`--grpc-listen`).
    pub grpc_addr: Option<SocketAddr>,
    pub handle: tokio::task::JoinHandle<anyhow::Result<()>>,
    pub state: Arc<server::AppState>,
}

/// Open the data dir, build the runtime and start serving in the background.
pub async fn start(config: &ServerConfig) -> anyhow::Result<RunningServer> {
    if config.tls.is_some() && config.grpc_listen.is_some() {
        anyhow::bail!(
            "--grpc-listen serves plaintext gRPC and does not take --tls-cert yet: \
             serve gRPC without TLS behind a TLS proxy, or leave --grpc-listen out"
        );
    }
    let tls = match &config.tls {
        Some((cert, key)) => Some(server::tls::acceptor(cert, key)?),
        None => None,
    };
    let registry = Arc::new(open_registry(&config.data_dir)?);
    let tenancy = Arc::new(open_tenancy(&config.data_dir)?);
    let runtime = runtime::Runtime::new(&config.data_dir, config.allocator)?;
    tracing::info!(pooling = runtime.pooling(), data_dir = %config.data_dir.display(), "runtime ready");
    let feature_store = config.features.open()?;
    let threads = match config.inference_threads {
        0 => std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1)),
        n => n,
    };
    config.onnx_backend.check()?;
    let models = Arc::new(nn::ModelCache::new(
        nn::InferencePool::new(threads, 1024)?,
        config.onnx_backend,
    ));
    let events = config.features.open_bus(&config.data_dir)?;
    let reports = Arc::new(monitors::Reports::open(
        &config.data_dir.join("reports.db"),
    )?);
    let oci = match &config.oci_registry {
        Some(url) => {
            let mut store = oci::OciStore::open(url).map_err(anyhow::Error::msg)?;
            if let Some(path) = &config.precompiled_key_file {
                let key = std::fs::read(path).map_err(|e| {
                    anyhow::anyhow!("reading the precompiled-code key {}: {e}", path.display())
                })?;
                let key = key.trim_ascii();
                store = store
                    .with_precompiled_key(key)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            }
            tracing::info!(registry = %store.describe(), "artifacts in an OCI registry");
            Some(Arc::new(store))
        }
        None => None,
    };
    let stores = functions::Stores {
        oci,
        features: feature_store,
        models,
        events: events.clone(),
        reports,
        datasets: datasets::Datasets::open(&config.data_dir.join("datasets.db"))?,
        logs: logs::Logs::with_files(config.function_logs.clone())?,
    };
    let functions = Arc::new(functions::Functions::new(
        registry,
        runtime,
        stores,
        tenancy.clone(),
        server::MAX_COMPONENT_SIZE,
    )?);
    for t in tenancy.tenants() {
        functions
            .feature_store()
            .set_tenant_capacity(t.id.as_str(), t.quota.feature_bytes);
    }
    let metrics = Arc::new(metrics::Metrics::new()?);
    for collector in functions.collectors() {
        metrics.register(collector)?;
    }
    metrics.track_cold_starts(functions.cold_start_counter());
    let calls = Arc::new(call::Calls::new(
        functions.clone(),
        tenancy.clone(),
        metrics.clone(),
    ));
    let triggers = triggers::Triggers::new(
        events.clone(),
        calls.clone(),
        functions.clone(),
        config.triggers.clone(),
    )?;
    for collector in triggers.collectors() {
        metrics.register(collector)?;
    }
    if let Some(otlp) = &config.otlp {
        let gauges = Arc::downgrade(&functions);
        otel::start(
            &otlp.endpoint,
            metrics.clone(),
            Box::new(move || {
                if let Some(f) = gauges.upgrade() {
                    f.update_gauges();
                }
            }),
            otlp.metrics_interval,
            otlp.sample_ratio,
        )?;
    }
    triggers.start();
    functions::spawn_analysis(&functions);
    let state = Arc::new(server::AppState {
        functions,
        tenancy,
        metrics,
        calls,
        events,
        triggers,
        max_body: config.max_body,
    });
    // The dashboard's history of request rate, latency and cold starts.
    server::ui::spawn_sampler(&state);
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| anyhow::anyhow!("binding {}: {e}", config.listen))?;
    let addr = listener.local_addr()?;
    let handle = tokio::spawn(server::serve(listener, state.clone(), tls));
    let grpc_addr = match config.grpc_listen {
        None => None,
        Some(at) => {
            let grpc = tokio::net::TcpListener::bind(at)
                .await
                .map_err(|e| anyhow::anyhow!("binding --grpc-listen {at}: {e}"))?;
            let addr = grpc.local_addr()?;
            let state = state.clone();
            tokio::spawn(async move {
                if let Err(e) = server::grpc::serve(grpc, state).await {
                    tracing::error!("gRPC server on {addr}: {e}");
                }
            });
            Some(addr)
        }
    };
    // The scaler's clock: idle deployments go back to Cold.
    let reaper = Arc::downgrade(&state.functions);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(250));
        loop {
            tick.tick().await;
            let Some(functions) = reaper.upgrade() else {
                break;
            };
            functions.evict_idle(std::time::Instant::now());
        }
    });
    // Usage outlives a restart: saved every interval, and when `quiver serve` stops.
    let saver = Arc::downgrade(&state.tenancy);
    let every = config
        .usage_save_interval
        .max(std::time::Duration::from_millis(10));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        loop {
            tick.tick().await;
            let Some(tenancy) = saver.upgrade() else {
                break;
            };
            if let Err(e) = tokio::task::spawn_blocking(move || tenancy.save_usage()).await {
                tracing::warn!("saving usage: {e}");
            }
        }
    });
    Ok(RunningServer {
        addr,
        grpc_addr,
        handle,
        state,
    })
}

/// Open the tenancy store. On the first start, the platform admin token is printed
/// once (to stderr) and written to `<data-dir>/admin-token`, readable by its owner only.
fn open_tenancy(data_dir: &Path) -> anyhow::Result<tenancy::Tenancy> {
    std::fs::create_dir_all(data_dir)
        .map_err(|e| anyhow::anyhow!("creating {}: {e}", data_dir.display()))?;
    let (tenancy, first) = tenancy::Tenancy::open(data_dir)
        .map_err(|e| anyhow::anyhow!("opening the tenancy store: {e}"))?;
    if let Some(first) = first {
        let path = data_dir.join("admin-token");
        write_secret(&path, &first.admin_token)?;
        eprintln!(
            "quiver: created tenant `default` and the platform admin token (shown once; also in {}):
{}",
            path.display(),
            first.admin_token
        );
    }
    Ok(tenancy)
}

fn write_secret(path: &Path, secret: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
    f.write_all(format!("{secret}\n").as_bytes())?;
    f.sync_all()?;
    Ok(())
}

fn open_registry(data_dir: &Path) -> anyhow::Result<quiver_registry::Registry> {
    quiver_registry::Registry::open(&data_dir.join("registry"))
        .map_err(|e| anyhow::anyhow!("opening the registry under {}: {e}", data_dir.display()))
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
