//! The `quiver` command line: a thin client of the admin API, plus `serve` and `demo`.

mod batch;
mod build;
mod client;
mod demo;
mod demo_loop;
mod features_load;
mod feedback;
mod logs;
mod models;
mod serve_model;
mod tenancy;

use crate::manifest::Manifest;
use crate::ServerConfig;
use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand};
use client::Client;
use serde_json::Value;
use std::path::{Path, PathBuf};

#[derive(Parser, Debug)]
#[command(
    name = "quiver",
    version,
    about = "Serverless WebAssembly for ML pipelines"
)]
pub struct Cli {
    /// Quiver server to talk to.
    #[arg(
        long,
        global = true,
        env = "QUIVER_SERVER",
        default_value = "http://127.0.0.1:8080"
    )]
    server: String,
    /// Tenant whose functions to act on.
    #[arg(long, global = true, env = "QUIVER_TENANT", default_value = "default")]
    tenant: String,
    /// Bearer token for the server (a platform admin token is written to
    /// `<data-dir>/admin-token` at first start).
    #[arg(long, global = true, env = "QUIVER_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    /// The host's own log lines (stderr): `text`, or `json` (one object a line).
    #[arg(
        long,
        global = true,
        env = "QUIVER_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
enum EventsCommand {
    /// Publish an event (durable when this returns); nobody subscribing keeps it.
    Publish {
        topic: String,
        /// The event's payload; `-` or none reads standard input.
        event: Option<String>,
        #[arg(long, default_value = "application/json")]
        content_type: String,
    },
    /// The dead events of a topic's subscribers: the reason and the attempt count.
    Dlq {
        topic: String,
        /// Only this subscriber's (default: every function subscribing to TOPIC).
        #[arg(long)]
        function: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Give dead events back to their subscriber, with a fresh set of attempts.
    Replay {
        topic: String,
        #[arg(long)]
        function: Option<String>,
        /// Only these events (repeatable; default: all of them).
        #[arg(long = "id")]
        ids: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
enum MonitorCommand {
    /// A monitor's report windows, newest first: per metric last/mean/min/max, alerts.
    Reports {
        name: String,
        /// Windows at most.
        #[arg(long, default_value_t = 24)]
        limit: usize,
    },
}

#[derive(clap::Args, Debug, Clone)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "QUIVER_LISTEN", default_value = "127.0.0.1:8080")]
    listen: std::net::SocketAddr,
    /// Where the registry, blobs and compiled artifacts live.
    #[arg(long, env = "QUIVER_DATA_DIR", default_value = ".quiver")]
    data_dir: PathBuf,
    /// Largest request body accepted by /fn and /http routes.
    #[arg(long, env = "QUIVER_MAX_BODY", default_value = "16MiB")]
    max_body: bytesize::ByteSize,
    /// Instance allocator: `pooling` (probed, falls back to on-demand) or `on-demand`.
    #[arg(long, env = "QUIVER_ALLOCATOR", value_enum, default_value = "pooling")]
    allocator: crate::runtime::Allocator,
    /// Keep features in Redis (`redis://127.0.0.1:6379/0`) instead of in process.
    #[arg(long, env = "QUIVER_REDIS")]
    redis: Option<String>,
    /// Push components and models to this OCI registry (`oci://127.0.0.1:5000/quiver`)
    /// and pull from it what the data dir lacks (plain HTTP to loopback only;
    /// credentials from QUIVER_REGISTRY_USERNAME / QUIVER_REGISTRY_PASSWORD).
    #[arg(
        long = "registry",
        env = "QUIVER_REGISTRY",
        value_name = "oci://HOST/PATH"
    )]
    oci_registry: Option<String>,
    /// A secret the hosts sharing `--registry` hold (at least 32 bytes): with it, a
    /// deploy pushes the compiled code beside the component, and a host that lacks a
    /// version's code pulls it, MAC-checked, instead of compiling.
    #[arg(
        long,
        env = "QUIVER_PRECOMPILED_KEY_FILE",
        value_name = "PATH",
        requires = "oci_registry"
    )]
    precompiled_key_file: Option<PathBuf>,
    /// How long a feature-store call may take before it fails as `unavailable`.
    #[arg(long, env = "QUIVER_FEATURES_TIMEOUT", default_value = "250ms")]
    features_timeout: humantime::Duration,
    /// Bytes of features each tenant may keep in the embedded store; a write past it
    /// fails with `limit_exceeded`.
    #[arg(long, env = "QUIVER_FEATURES_CAPACITY", default_value = "256MiB")]
    features_capacity: bytesize::ByteSize,
    /// Threads that run models (wasi-nn compute); 0: half the cores, at least 1.
    #[arg(long, env = "QUIVER_INFERENCE_THREADS", default_value_t = 0)]
    inference_threads: usize,
    /// What runs `cpu` models: `tract` (built in) or `ort` (ONNX Runtime from
    /// ORT_DYLIB_PATH; a build with `--features ort`). `gpu` models always use ort.
    #[arg(long, env = "QUIVER_ONNX_BACKEND", value_enum, default_value = "tract")]
    onnx_backend: crate::nn::OnnxBackend,
    /// Also serve the Open Inference Protocol over gRPC
    /// (`inference.GRPCInferenceService`) on this address.
    #[arg(long, env = "QUIVER_GRPC_LISTEN")]
    grpc_listen: Option<std::net::SocketAddr>,
    /// Serve HTTPS: a PEM certificate chain (with --tls-key).
    #[arg(long, env = "QUIVER_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, env = "QUIVER_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// How often tenants' usage counters are saved to the data dir (they are also
    /// saved when the server stops on Ctrl-C or SIGTERM).
    #[arg(long, env = "QUIVER_USAGE_SAVE_INTERVAL", default_value = "10s")]
    usage_save_interval: humantime::Duration,
    /// This host's name as an event consumer (default: hostname-pid); unique per host.
    #[arg(long, env = "QUIVER_HOST_ID")]
    host_id: Option<String>,
    /// How long an event is leased to this host; an event a host held this long
    /// without an answer (it died) goes to another.
    #[arg(long, env = "QUIVER_EVENT_VISIBILITY", default_value = "30s")]
    event_visibility: humantime::Duration,
    /// Events every subscriber is done with are kept this long ...
    #[arg(long, env = "QUIVER_EVENTS_MAX_AGE", default_value = "7d")]
    events_max_age: humantime::Duration,
    /// ... and at most this many per topic (an unacknowledged event is never trimmed).
    #[arg(long, env = "QUIVER_EVENTS_MAX_LEN", default_value_t = 100_000)]
    events_max_len: u64,
    /// How often the trim policy runs.
    #[arg(long, env = "QUIVER_EVENTS_TRIM_INTERVAL", default_value = "60s")]
    events_trim_interval: humantime::Duration,
    /// Export traces and metrics over OTLP/HTTP (protobuf) to this receiver
    /// (`http://127.0.0.1:4318`; `/v1/traces` and `/v1/metrics` are added). Off by default.
    #[arg(long, env = "QUIVER_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
    /// Also append every function's log lines (JSON, one per line) to
    /// `<dir>/<tenant>/<function>.log`.
    #[arg(long, env = "QUIVER_FUNCTION_LOG_DIR")]
    function_log_dir: Option<PathBuf>,
    /// A function's log file is rotated to `.log.1` past this size.
    #[arg(long, env = "QUIVER_FUNCTION_LOG_MAX_SIZE", default_value = "16MiB")]
    function_log_max_size: bytesize::ByteSize,
    /// How often metrics are pushed to --otlp-endpoint.
    #[arg(long, env = "QUIVER_OTLP_METRICS_INTERVAL", default_value = "10s")]
    otlp_metrics_interval: humantime::Duration,
    /// The share of new traces exported (0 to 1); a caller's `traceparent` decides
    /// for its own trace.
    #[arg(long, env = "QUIVER_OTLP_SAMPLE_RATIO", default_value_t = 1.0)]
    otlp_sample_ratio: f64,
}

impl ServeArgs {
    fn config(&self) -> ServerConfig {
        ServerConfig {
            listen: self.listen,
            data_dir: self.data_dir.clone(),
            max_body: self.max_body.as_u64() as usize,
            allocator: self.allocator,
            inference_threads: self.inference_threads,
            onnx_backend: self.onnx_backend,
            tls: self.tls_cert.clone().zip(self.tls_key.clone()),
            grpc_listen: self.grpc_listen,
            usage_save_interval: *self.usage_save_interval,
            oci_registry: self.oci_registry.clone(),
            precompiled_key_file: self.precompiled_key_file.clone(),
            triggers: crate::triggers::TriggerConfig {
                consumer: self
                    .host_id
                    .clone()
                    .unwrap_or_else(crate::triggers::default_consumer),
                visibility: *self.event_visibility,
                trim: crate::events::Trim {
                    max_age: *self.events_max_age,
                    max_len: self.events_max_len,
                },
                trim_every: *self.events_trim_interval,
                ..Default::default()
            },
            function_logs: self
                .function_log_dir
                .clone()
                .map(|d| (d, self.function_log_max_size.as_u64())),
            otlp: self
                .otlp_endpoint
                .clone()
                .map(|endpoint| crate::OtlpConfig {
                    endpoint,
                    metrics_interval: (*self.otlp_metrics_interval)
                        .max(std::time::Duration::from_millis(100)),
                    sample_ratio: self.otlp_sample_ratio,
                }),
            features: match &self.redis {
                Some(url) => crate::FeatureStoreConfig::Redis {
                    url: url.clone(),
                    timeout: *self.features_timeout,
                },
                None => crate::FeatureStoreConfig::Embedded {
                    capacity: usize::try_from(self.features_capacity.as_u64())
                        .unwrap_or(usize::MAX),
                },
            },
        }
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the Quiver host.
    Serve(ServeArgs),
    /// Start a host on embedded defaults, deploy the first-party functions and a
    /// pipeline, send the sample records through and print the results.
    Demo {
        #[command(flatten)]
        serve: ServeArgs,
        /// The first-party functions directory.
        #[arg(long, default_value = "functions")]
        functions: PathBuf,
        /// Keep serving after the demo instead of exiting.
        #[arg(long)]
        keep_serving: bool,
    },
    /// Build (if needed) and upload a function directory, a pipeline, a .wasm file, or a
    /// component from an OCI registry (`oci://HOST/REPO:TAG`, with --kind).
    Deploy {
        path: PathBuf,
        /// Override the manifest's name.
        #[arg(long)]
        name: Option<String>,
        /// Override the manifest's version.
        #[arg(long)]
        version: Option<String>,
        /// The kind of a bare .wasm (ingest, transform, inference, monitor, trainer, http).
        #[arg(long)]
        kind: Option<String>,
        /// Override any manifest field: `--set limits.timeout=5s --set config.k=v`.
        #[arg(long = "set", value_name = "KEY.PATH=VALUE")]
        sets: Vec<String>,
        /// Sign the component's digest with this ed25519 private key (PKCS#8 PEM,
        /// from `quiver keys generate` or `openssl genpkey -algorithm ed25519`).
        #[arg(long, value_name = "KEY")]
        sign: Option<PathBuf>,
    },
    /// Make and show ed25519 signing keys for `quiver deploy --sign`.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Invoke a function: NAME or NAME@VERSION.
    Invoke {
        function: String,
        /// The request body: JSON text, or @FILE to read it from a file.
        #[arg(long, short)]
        data: String,
        #[arg(long, default_value = "application/json")]
        content_type: String,
    },
    /// List functions and the versions serving them.
    Ls,
    /// List the versions of a function.
    Versions { name: String },
    /// Split a function's traffic across versions (`1.2.0=90 1.3.0=10`); no split
    /// given: show it (and each version's calls, errors and latency). `--clear` (or
    /// a rollback) returns it to the serving version. `--shadow VERSION` mirrors a
    /// copy of each unpinned call to VERSION (its answers only recorded) until
    /// `--no-shadow` or a rollback.
    Traffic {
        name: String,
        /// VERSION=WEIGHT, repeated.
        split: Vec<String>,
        #[arg(long, conflicts_with = "split")]
        clear: bool,
        /// Mirror each unpinned call to this version.
        #[arg(long, conflicts_with = "no_shadow")]
        shadow: Option<String>,
        /// End the shadow.
        #[arg(long)]
        no_shadow: bool,
    },
    /// A function's stdout, stderr and log lines (the newest 1000 are kept).
    Logs {
        name: String,
        /// Keep printing new lines as they come.
        #[arg(long, short)]
        follow: bool,
        /// The newest N lines first.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Serve the previous version of a function (or --to VERSION).
    Rollback {
        name: String,
        #[arg(long)]
        to: Option<String>,
    },
    /// Delete a function version: NAME@VERSION. The serving version, or one a
    /// pipeline pins, is refused unless --force (then `stable` moves to the highest
    /// version left). The bytes stay until `quiver gc`.
    Rm {
        function: String,
        #[arg(long)]
        force: bool,
    },
    /// Remove blobs and compiled artifacts that no version of any tenant references.
    Gc,
    /// Online features of the tenant.
    #[command(subcommand)]
    Features(FeaturesCommand),
    /// Score a CSV file through a function or pipeline: streamed in chunks across
    /// instances, in input order, with a progress bar; refused rows go to a rejects
    /// file with the reason; rerun the same command to resume after an interruption.
    Batch(batch::BatchJob),
    /// Models in the registry (ONNX), bound by inference functions in `[models]`.
    #[command(subcommand)]
    Models(models::ModelsCommand),
    /// Serve a stored model with no code: NAME@RANGE (`resnet@^1`) or NAME@ALIAS
    /// (`resnet@champion`, followed as it moves) deploys the first-party inference
    /// function bound to it, as function NAME (or --name) at the version it
    /// resolves to now, so `/v2/models/NAME/infer` answers.
    ServeModel {
        model: String,
        /// The function's name (default: the model's).
        #[arg(long)]
        name: Option<String>,
    },
    /// Tenants, their quotas and grants (platform admin).
    #[command(subcommand)]
    Tenants(tenancy::TenantsCommand),
    /// Bearer tokens of `--tenant`.
    #[command(subcommand)]
    Tokens(tenancy::TokensCommand),
    /// Events of `--tenant`'s topics.
    #[command(subcommand)]
    Events(EventsCommand),
    /// Monitors of `--tenant`: their reports, per window.
    #[command(subcommand)]
    Monitor(MonitorCommand),
    /// Labels for `--tenant`'s earlier predictions (joined by x-quiver-request-id).
    #[command(subcommand)]
    Feedback(feedback::FeedbackCommand),
    /// The predictions `--tenant`'s functions logged ([datasets] log), with labels.
    #[command(subcommand)]
    Datasets(feedback::DatasetsCommand),
    /// The audit log of admin actions (`--tenant`'s, or `--all`); `verify` checks its chain.
    Audit {
        #[command(subcommand)]
        command: Option<tenancy::AuditCommand>,
        /// Every tenant's entries and the platform's (platform admin).
        #[arg(long)]
        all: bool,
    },
    /// What `--tenant` used since the server started, and what it stores.
    Usage,
}

#[derive(Subcommand, Debug)]
enum FeaturesCommand {
    /// Backfill a group from a CSV file (header row; one entity per row), with progress.
    Load {
        /// The feature group to write.
        #[arg(long)]
        group: String,
        /// CSV file: an entity column plus one column per feature. Numbers become
        /// i64 or f64, `true`/`false` bools, anything else text; empty cells are skipped.
        file: PathBuf,
        /// The column that names the entity.
        #[arg(long, default_value = "entity")]
        entity_column: String,
        /// Expire written entities after this long (e.g. `24h`).
        #[arg(long)]
        ttl: Option<humantime::Duration>,
        /// Rows per request.
        #[arg(long, default_value_t = 1000)]
        batch: usize,
    },
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let client = Client::new(&cli.server, &cli.tenant, cli.token.as_deref())?;
    match cli.command {
        Command::Serve(args) => {
            let server = crate::start(&args.config()).await?;
            let scheme = match args.tls_cert {
                Some(_) => "https",
                None => "http",
            };
            match cli.json {
                true => println!(
                    "{}",
                    serde_json::json!({ "listening": format!("{scheme}://{}", server.addr) })
                ),
                false => println!("quiver listening on {scheme}://{}", server.addr),
            }
            if let Some(at) = server.grpc_addr {
                tracing::info!("gRPC (inference.GRPCInferenceService) listening on {at}");
            }
            let mut handle = server.handle;
            tokio::select! {
                r = &mut handle => r??,
                _ = stop_signal() => {}
            }
            server_stop(&server.state).await;
            Ok(())
        }
        Command::Demo {
            serve,
            functions,
            keep_serving,
        } => {
            demo::run(
                &serve.config(),
                &functions,
                keep_serving,
                &cli.tenant,
                cli.json,
            )
            .await
        }
        Command::Deploy {
            path,
            name,
            version,
            kind,
            sets,
            sign,
        } => {
            let overrides = Overrides {
                name,
                version,
                kind,
                sets,
                sign,
            };
            let out = deploy(&client, &path, &overrides, !cli.json).await?;
            match cli.json {
                true => println!("{out}"),
                false => println!(
                    "{} {}@{} ({}) {}",
                    if out["unchanged"] == true {
                        "unchanged"
                    } else {
                        "deployed"
                    },
                    s(&out["name"]),
                    s(&out["version"]),
                    s(&out["kind"]),
                    s(&out["digest"])
                ),
            }
            Ok(())
        }
        Command::Invoke {
            function,
            data,
            content_type,
        } => {
            let body = match data.strip_prefix('@') {
                Some(file) => std::fs::read(file).with_context(|| format!("reading {file}"))?,
                None => data.into_bytes(),
            };
            let (version, out) = client.invoke(&function, &content_type, body).await?;
            match cli.json {
                true => println!("{}", serde_json::json!({"version": version, "result": out})),
                false => {
                    eprintln!(
                        "served by {}@{version}",
                        crate::functions::split_ref(&function).0
                    );
                    println!("{}", serde_json::to_string_pretty(&out)?);
                }
            }
            Ok(())
        }
        Command::Models(cmd) => models::run(&client, cmd, cli.json).await,
        Command::ServeModel { model, name } => {
            let (model_name, req) = crate::functions::split_ref(&model);
            let req = req.unwrap_or("*");
            let record = serve_model::newest_matching(&client, model_name, req).await?;
            let function = name.as_deref().unwrap_or(model_name);
            let out = serve_model::serve(&client, &record, req, function).await?;
            match cli.json {
                true => println!("{out}"),
                false => println!(
                    "serving model {model_name}@{} as function {}@{}: POST /v2/models/{}/infer",
                    s(&record["version"]),
                    s(&out["name"]),
                    s(&out["version"]),
                    s(&out["name"])
                ),
            }
            Ok(())
        }
        Command::Tenants(cmd) => tenancy::tenants(&client, cmd, cli.json).await,
        Command::Keys(cmd) => keys(cmd, cli.json),
        Command::Tokens(cmd) => tenancy::tokens(&client, cmd, cli.json).await,
        Command::Audit { command, all } => tenancy::audit(&client, command, all, cli.json).await,
        Command::Usage => tenancy::usage(&client, cli.json).await,
        Command::Events(EventsCommand::Publish {
            topic,
            event,
            content_type,
        }) => {
            let payload = match event.as_deref() {
                None | Some("-") => {
                    let mut buf = Vec::new();
                    std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)?;
                    buf
                }
                Some(text) => text.as_bytes().to_vec(),
            };
            let v = client.publish_event(&topic, &content_type, payload).await?;
            match cli.json {
                true => println!("{v}"),
                false => println!("published event {} to {topic}", v["id"]),
            }
            Ok(())
        }
        Command::Feedback(cmd) => feedback::feedback(&client, cmd, cli.json).await,
        Command::Datasets(cmd) => feedback::datasets(&client, cmd, cli.json).await,
        Command::Monitor(MonitorCommand::Reports { name, limit }) => {
            let v = client
                .get(&format!("monitors/{name}/reports?limit={limit}"))
                .await?;
            if cli.json {
                println!("{v}");
                return Ok(());
            }
            let windows = v["windows"].as_array().cloned().unwrap_or_default();
            if windows.is_empty() {
                println!("no reports from {name} yet");
            }
            for w in windows {
                let start = w["start_ms"].as_i64().unwrap_or(0);
                let at = chrono::DateTime::from_timestamp_millis(start)
                    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                    .unwrap_or_default();
                println!(
                    "{at}\tobservations {}\trows {}\t{}",
                    w["observations"],
                    w["rows"],
                    w["monitor_version"].as_str().unwrap_or("")
                );
                if let Some(metrics) = w["metrics"].as_object() {
                    for (k, m) in metrics {
                        println!(
                            "  {k}\tlast {}\tmean {}\tmin {}\tmax {}",
                            m["last"], m["mean"], m["min"], m["max"]
                        );
                    }
                }
                for a in w["alerts"].as_array().into_iter().flatten() {
                    println!("  alert: {}", a.as_str().unwrap_or(""));
                }
            }
            Ok(())
        }
        Command::Events(EventsCommand::Dlq {
            topic,
            function,
            limit,
        }) => {
            let mut path = format!("events/{}/{topic}/dlq?limit={limit}", client.tenant());
            if let Some(f) = &function {
                path.push_str(&format!("&function={f}"));
            }
            let v = client.get_root(&path).await?;
            if cli.json {
                println!("{v}");
                return Ok(());
            }
            let dead = v["dead"].as_array().cloned().unwrap_or_default();
            if dead.is_empty() {
                println!("no dead events on {topic}");
            }
            for d in dead {
                println!(
                    "{}\t{}\tattempts {}\t{}",
                    d["id"].as_str().unwrap_or("?"),
                    d["function"].as_str().unwrap_or("?"),
                    d["attempts"],
                    d["reason"].as_str().unwrap_or("")
                );
            }
            Ok(())
        }
        Command::Events(EventsCommand::Replay {
            topic,
            function,
            ids,
        }) => {
            let mut body = serde_json::json!({});
            if let Some(f) = function {
                body["function"] = f.into();
            }
            if !ids.is_empty() {
                body["ids"] = ids.into();
            }
            let path = format!("events/{}/{topic}/replay", client.tenant());
            let v = client.post_root(&path, &body).await?;
            match cli.json {
                true => println!("{v}"),
                false => println!("replayed {} events on {topic}", v["replayed"]),
            }
            Ok(())
        }
        Command::Batch(job) => {
            let done = batch::run(&client, &job, !cli.json).await?;
            let summary = serde_json::json!({
                "scored": done.scored, "rejected": done.rejected, "resumed_at_row": done.resumed_at + 1,
                "output": job.output.display().to_string(),
            });
            match cli.json {
                true => println!("{summary}"),
                false => println!(
                    "scored {} rows, rejected {}{} -> {}",
                    done.scored,
                    done.rejected,
                    match done.resumed_at {
                        0 => String::new(),
                        n => format!(" (resumed at row {})", n + 1),
                    },
                    job.output.display()
                ),
            }
            Ok(())
        }
        Command::Ls => {
            let out = client.get("functions").await?;
            if cli.json {
                println!("{out}");
                return Ok(());
            }
            println!(
                "{:<24} {:<10} {:<10} {:<6} {:>9} {:>6} {:>5} {:>4} {:>6} DIGEST",
                "NAME", "VERSION", "KIND", "STATE", "IN-FLIGHT", "QUEUED", "BUSY", "IDLE", "COLD"
            );
            for f in out["functions"].as_array().into_iter().flatten() {
                println!(
                    "{:<24} {:<10} {:<10} {:<6} {:>9} {:>6} {:>5} {:>4} {:>6} {}",
                    s(&f["name"]),
                    s(&f["version"]),
                    s(&f["kind"]),
                    s(&f["state"]),
                    f["in_flight"],
                    f["queued"],
                    f["busy_instances"],
                    f["idle_instances"],
                    f["cold_starts"],
                    short(&f["digest"])
                );
            }
            Ok(())
        }
        Command::Traffic {
            name,
            split,
            clear,
            shadow,
            no_shadow,
        } => {
            let path = format!("functions/{name}/traffic");
            let shadow = match (shadow, no_shadow) {
                (Some(v), _) => Some(Value::from(v)),
                (None, true) => Some(Value::Null),
                (None, false) => None,
            };
            let out = match (split.is_empty(), clear, shadow) {
                (true, false, None) => client.get(&path).await?,
                (true, false, Some(shadow)) => {
                    client
                        .put_json(&path, &serde_json::json!({ "shadow": shadow }))
                        .await?
                }
                (_, _, shadow) => {
                    let mut weights = serde_json::Map::new();
                    for s in &split {
                        let (v, w) = s
                            .split_once('=')
                            .with_context(|| format!("`{s}` is not VERSION=WEIGHT"))?;
                        let w: u32 = w
                            .parse()
                            .with_context(|| format!("`{s}`: the weight is not a whole number"))?;
                        weights.insert(v.to_string(), w.into());
                    }
                    let mut body = serde_json::json!({ "split": weights });
                    if let Some(shadow) = shadow {
                        body["shadow"] = shadow;
                    }
                    client.put_json(&path, &body).await?
                }
            };
            if cli.json {
                println!("{out}");
                return Ok(());
            }
            if let Some(v) = out["shadow"].as_str() {
                println!("{name}@{v}\tshadow (a copy of each unpinned call)");
            }
            match out["split"].as_object().filter(|s| !s.is_empty()) {
                None => println!("{name}: no split; the serving version takes every call"),
                Some(s) => {
                    let total: u64 = s.values().filter_map(Value::as_u64).sum();
                    for (v, w) in s {
                        let w = w.as_u64().unwrap_or(0);
                        println!(
                            "{name}@{v}\t{w}\t{:.1} %",
                            100.0 * w as f64 / total.max(1) as f64
                        );
                    }
                }
            }
            Ok(())
        }
        Command::Logs {
            name,
            follow,
            limit,
        } => {
            logs::logs(
                &client,
                &name,
                limit.clamp(1, crate::logs::MAX_READ),
                follow,
                cli.json,
            )
            .await
        }
        Command::Versions { name } => {
            let out = client.get(&format!("functions/{name}/versions")).await?;
            if cli.json {
                println!("{out}");
                return Ok(());
            }
            println!(
                "  {:<10} {:<22} {:>10} DIGEST",
                "VERSION", "CREATED", "SIZE"
            );
            for v in out["versions"].as_array().into_iter().flatten() {
                let mark = if v["version"] == out["serving"] {
                    "*"
                } else {
                    " "
                };
                println!(
                    "{mark} {:<10} {:<22} {:>10} {}",
                    s(&v["version"]),
                    s(&v["created_at"]),
                    v["size"],
                    short(&v["digest"])
                );
            }
            Ok(())
        }
        Command::Features(FeaturesCommand::Load {
            group,
            file,
            entity_column,
            ttl,
            batch,
        }) => {
            let loaded = features_load::load(
                &client,
                &group,
                &file,
                &entity_column,
                ttl.map(|t| *t),
                batch.max(1),
                !cli.json,
            )
            .await?;
            match cli.json {
                true => println!(
                    "{}",
                    serde_json::json!({ "group": group, "written": loaded })
                ),
                false => println!("loaded {loaded} entities into feature group `{group}`"),
            }
            Ok(())
        }
        Command::Rm { function, force } => {
            let (name, version, out) = client
                .delete_version("functions", &function, force, "rm")
                .await?;
            match cli.json {
                true => println!("{out}"),
                false => match out["serving"].as_str() {
                    Some(v) => println!("deleted {name}@{version}; {name} serves {v}"),
                    None => println!("deleted {name}@{version}; no version of {name} is left"),
                },
            }
            Ok(())
        }
        Command::Gc => {
            let out = client.post_platform("gc").await?;
            match cli.json {
                true => println!("{out}"),
                false => println!(
                    "removed {} blobs and {} compiled artifacts; {} blobs in use",
                    out["blobs_removed"], out["artifacts_removed"], out["blobs_kept"]
                ),
            }
            Ok(())
        }
        Command::Rollback { name, to } => {
            let out = client
                .post_json(
                    &format!("functions/{name}/rollback"),
                    &serde_json::json!({ "to": to }),
                )
                .await?;
            match cli.json {
                true => println!("{out}"),
                false => println!("{name} now serves {}", s(&out["serving"])),
            }
            Ok(())
        }
    }
}

fn s(v: &Value) -> String {
    v.as_str()
        .map(str::to_string)
        .unwrap_or_else(|| v.to_string())
}

fn short(v: &Value) -> String {
    let d = s(v);
    d.get(..19).map(|p| format!("{p}…")).unwrap_or(d)
}

/// What `deploy` changes in the manifest it sends, and the key it signs with.
#[derive(Debug, Default)]
pub(crate) struct Overrides {
    pub name: Option<String>,
    pub version: Option<String>,
    pub kind: Option<String>,
    pub sets: Vec<String>,
    pub sign: Option<PathBuf>,
}

#[derive(clap::Subcommand, Debug)]
pub enum KeysCommand {
    /// Write a new private key to PATH (mode 0600; refused if PATH exists) and
    /// print its public key, which `quiver tenants grant T signer KEY` trusts.
    Generate { path: PathBuf },
    /// Print the public key of the private key in PATH.
    Public { path: PathBuf },
}

/// Read a private key file, refusing one too large to be a key before reading it.
pub(crate) fn read_signing_key(path: &Path) -> anyhow::Result<crate::signing::SigningKey> {
    let len = std::fs::metadata(path)
        .with_context(|| format!("reading {}", path.display()))?
        .len();
    if len > crate::signing::MAX_KEY_FILE {
        bail!(
            "{} is {len} bytes: not an ed25519 key (at most {} bytes)",
            path.display(),
            crate::signing::MAX_KEY_FILE
        );
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    crate::signing::SigningKey::from_pem(&text)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

fn keys(cmd: KeysCommand, json_out: bool) -> anyhow::Result<()> {
    let (key, path) = match cmd {
        KeysCommand::Generate { path } => {
            let (key, pem) = crate::signing::SigningKey::generate().map_err(anyhow::Error::msg)?;
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
            let mut file = opts
                .open(&path)
                .with_context(|| format!("creating {}", path.display()))?;
            std::io::Write::write_all(&mut file, pem.as_bytes())
                .and_then(|()| file.sync_all())
                .with_context(|| format!("writing {}", path.display()))?;
            (key, path)
        }
        KeysCommand::Public { path } => (read_signing_key(&path)?, path),
    };
    let public = key.public().to_string();
    match json_out {
        true => println!(
            "{}",
            serde_json::json!({ "public_key": public, "path": path })
        ),
        false => println!("{public}"),
    }
    Ok(())
}

pub(crate) async fn deploy(
    client: &Client,
    path: &Path,
    overrides: &Overrides,
    progress: bool,
) -> anyhow::Result<Value> {
    let Overrides {
        name,
        version,
        kind,
        sets,
        sign,
    } = overrides;
    let (name, version, kind) = (name.clone(), version.clone(), kind.clone());
    // Read before building: a bad key path fails in a moment, not after a build.
    let key = sign.as_deref().map(read_signing_key).transpose()?;
    let oci_ref = path.to_str().filter(|p| p.starts_with("oci://"));
    let mut pulled = None;
    let (mut manifest, component_path) = if let Some(url) = oci_ref {
        let kind = kind.context("deploying from an OCI registry needs --kind")?;
        let (bytes, repo_name, tag) =
            crate::oci::pull_component(url, crate::server::MAX_COMPONENT_SIZE as u64).await?;
        let version = version
            .clone()
            .or(tag.filter(|t| semver::Version::parse(t).is_ok()))
            .context("the tag is not a semver version: give --version")?;
        pulled = Some(bytes);
        let manifest = bare_manifest(repo_name, version, kind);
        (manifest.with_overrides(sets)?, None)
    } else if path.is_dir() {
        let manifest_path = path.join("quiver.toml");
        let text = std::fs::read_to_string(&manifest_path)
            .with_context(|| format!("reading {}", manifest_path.display()))?;
        let mut manifest =
            Manifest::parse(&text).with_context(|| manifest_path.display().to_string())?;
        if let Some(k) = kind {
            manifest.function.kind = k;
        }
        manifest = manifest.with_overrides(sets)?;
        let wasm = match manifest.function.kind.as_str() {
            "pipeline" => None,
            _ if path.join("Cargo.toml").is_file() => {
                Some(build::build_component(path, progress).await?)
            }
            _ => bail!(
                "{} has no Cargo.toml to build; deploy a .wasm file with --kind instead",
                path.display()
            ),
        };
        (manifest, wasm)
    } else if path.is_file() {
        let kind = kind.context("deploying a bare .wasm needs --kind")?;
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("function")
            .replace('_', "-");
        let version = version
            .clone()
            .context("deploying a bare .wasm needs --version")?;
        let manifest = bare_manifest(stem, version, kind);
        (manifest.with_overrides(sets)?, Some(path.to_path_buf()))
    } else {
        bail!("{} does not exist", path.display());
    };
    if let Some(n) = name {
        manifest.function.name = n;
    }
    if let Some(v) = version {
        manifest.function.version = v;
    }
    manifest.check()?;
    let component = match &component_path {
        Some(p) => Some(std::fs::read(p).with_context(|| format!("reading {}", p.display()))?),
        None => pulled,
    };
    let spinner = build::spinner(
        progress,
        format!(
            "uploading {}@{}",
            manifest.function.name, manifest.function.version
        ),
    );
    let signature = match (&key, &component) {
        (Some(key), Some(bytes)) => Some(key.sign(&quiver_registry::Digest::of(bytes).to_string())),
        (Some(_), None) => bail!("a pipeline has no component to sign; sign its stages"),
        (None, _) => None,
    };
    let out = client
        .deploy(&manifest.to_toml()?, component, signature.as_ref())
        .await;
    spinner.finish_and_clear();
    out
}

/// The manifest of a bare component (a .wasm file, or one pulled from an OCI
/// registry): its name, version and kind, every section at its default.
fn bare_manifest(name: String, version: String, kind: String) -> Manifest {
    Manifest {
        function: crate::manifest::FunctionSection {
            name,
            version,
            kind,
        },
        scaling: None,
        limits: None,
        triggers: None,
        models: Default::default(),
        config: Default::default(),
        pipeline: None,
        features: None,
        cache: None,
        inference: None,
        capabilities: None,
        events: None,
        monitor: None,
        datasets: None,
        trainer: None,
    }
}

/// Ctrl-C or SIGTERM (what systemd and Kubernetes send to stop a service).
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// Save tenants' usage before the process exits.
async fn server_stop(state: &std::sync::Arc<crate::server::AppState>) {
    let _ = tokio::task::spawn_blocking(crate::otel::flush).await;
    let tenancy = state.tenancy.clone();
    match tokio::task::spawn_blocking(move || tenancy.save_usage()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!("saving usage at stop: {e}"),
        Err(e) => tracing::warn!("saving usage at stop: {e}"),
    }
}
