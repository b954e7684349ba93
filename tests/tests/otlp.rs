//! OpenTelemetry export (`--otlp-endpoint`) to a real OTLP/HTTP receiver started
//! here: a loopback HTTP server that decodes each export request with the
//! `opentelemetry-proto` types. A call's spans must arrive as one tree with the
//! right parents: the client's `traceparent` → the call → queue, cold start,
//! instantiate, each guest → the host calls a guest made (features, wasi-nn); an
//! event a guest publishes carries its publish span, the parent of the call it
//! triggers. Metrics arrive as OTLP sums and histograms.

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use quiver_tests::{read_sample, Server};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Default)]
struct Received {
    spans: Vec<Span>,
    metrics: Vec<ExportMetricsServiceRequest>,
    /// Requests that were not valid OTLP protobuf (must stay empty).
    malformed: Vec<String>,
}

/// An OTLP/HTTP receiver on loopback: `POST /v1/traces` and `POST /v1/metrics`
/// with protobuf bodies, answered 200 with an empty protobuf response.
struct Receiver {
    port: u16,
    got: Arc<Mutex<Received>>,
}

impl Receiver {
    fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let got = Arc::new(Mutex::new(Received::default()));
        let shared = got.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let got = shared.clone();
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(conn.try_clone().unwrap());
                    let mut conn = conn;
                    // HTTP/1.1, keep-alive: one request after another.
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let path = line.split(' ').nth(1).unwrap_or("").to_string();
                        let mut length = 0usize;
                        loop {
                            let mut h = String::new();
                            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                                return;
                            }
                            let h = h.trim_end();
                            if h.is_empty() {
                                break;
                            }
                            if let Some((k, v)) = h.split_once(':') {
                                if k.eq_ignore_ascii_case("content-length") {
                                    length = v.trim().parse().unwrap_or(0);
                                }
                            }
                        }
                        let mut body = vec![0; length];
                        if reader.read_exact(&mut body).is_err() {
                            return;
                        }
                        let mut g = got.lock().unwrap();
                        match path.as_str() {
                            "/v1/traces" => match ExportTraceServiceRequest::decode(&body[..]) {
                                Ok(req) => {
                                    for rs in req.resource_spans {
                                        for ss in rs.scope_spans {
                                            g.spans.extend(ss.spans);
                                        }
                                    }
                                }
                                Err(e) => g.malformed.push(format!("traces: {e}")),
                            },
                            "/v1/metrics" => match ExportMetricsServiceRequest::decode(&body[..]) {
                                Ok(req) => g.metrics.push(req),
                                Err(e) => g.malformed.push(format!("metrics: {e}")),
                            },
                            other => g.malformed.push(format!("unexpected path {other}")),
                        }
                        drop(g);
                        let _ = conn.write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n",
                        );
                    }
                });
            }
        });
        Receiver { port, got }
    }

    fn spans_of(&self, trace: &[u8]) -> Vec<Span> {
        let g = self.got.lock().unwrap();
        g.spans
            .iter()
            .filter(|s| s.trace_id == trace)
            .cloned()
            .collect()
    }

    /// Wait until `ok` holds for the spans of `trace`.
    fn wait_spans(&self, trace: &[u8], ok: impl Fn(&[Span]) -> bool) -> Vec<Span> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let spans = self.spans_of(trace);
            if ok(&spans) {
                return spans;
            }
            assert!(
                Instant::now() < deadline,
                "spans of the trace never arrived complete: {:#?}",
                names(&spans)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn names(spans: &[Span]) -> Vec<(String, String, String)> {
    let h = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    spans
        .iter()
        .map(|s| (s.name.clone(), h(&s.span_id), h(&s.parent_span_id)))
        .collect()
}

fn attr(s: &Span, key: &str) -> Option<String> {
    s.attributes
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| a.value.as_ref()?.value.as_ref())
        .map(|v| match v {
            AnyValue::StringValue(s) => s.clone(),
            AnyValue::IntValue(i) => i.to_string(),
            other => format!("{other:?}"),
        })
}

/// POST `body` to `/fn/default/{function}` in the client trace `trace` (its span
/// 00f067aa0ba902b7, `flags` 01: sampled, 00: not); the response.
fn call_in_trace(
    server: &Server,
    function: &str,
    trace: &str,
    flags: &str,
    body: impl Into<reqwest::blocking::Body>,
) -> reqwest::blocking::Response {
    let r = server
        .http()
        .post(format!("{}/fn/default/{function}", server.url))
        .header("content-type", "application/json")
        .header(
            "traceparent",
            format!("00-{trace}-00f067aa0ba902b7-{flags}"),
        )
        .body(body)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    r
}

fn named<'a>(spans: &'a [Span], name: &str) -> Vec<&'a Span> {
    spans.iter().filter(|s| s.name == name).collect()
}

#[test]
fn a_call_s_span_tree_and_the_metrics_reach_the_otlp_receiver() {
    let receiver = Receiver::start();
    let endpoint = format!("http://127.0.0.1:{}", receiver.port);
    let server = Server::start_with(&[
        "--otlp-endpoint",
        &endpoint,
        "--otlp-metrics-interval",
        "500ms",
    ]);
    server.deploy_fraud_score();
    server.deploy("ingest-json");
    server.deploy("txn-features");
    server.deploy("fraud-pipeline");

    // A client's sampled trace: the call's span is its child.
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let client_span = "00f067aa0ba902b7";
    let r = call_in_trace(
        &server,
        "fraud-pipeline",
        trace,
        "01",
        read_sample("fraud-pipeline"),
    );
    let request_id = r.headers()["x-quiver-request-id"]
        .to_str()
        .unwrap()
        .to_string();

    let spans = receiver.wait_spans(&hex(trace), |s| {
        named(s, "fn fraud-pipeline").len() == 1
            && named(s, "guest").len() >= 3
            && !named(s, "wasi-nn.compute").is_empty()
    });
    let root = named(&spans, "fn fraud-pipeline")[0];
    assert_eq!(
        root.parent_span_id,
        hex(client_span),
        "{:#?}",
        names(&spans)
    );
    assert_eq!(
        root.span_id,
        hex(&request_id),
        "the request id is the call's span id"
    );
    assert_eq!(attr(root, "quiver.tenant").as_deref(), Some("default"));
    assert_eq!(
        attr(root, "quiver.function").as_deref(),
        Some("fraud-pipeline")
    );
    assert_eq!(attr(root, "quiver.version").as_deref(), Some("2.2.0"));
    assert_eq!(attr(root, "faas.trigger").as_deref(), Some("http"));
    assert_eq!(
        attr(root, "http.response.status_code").as_deref(),
        Some("200")
    );
    assert!(
        attr(root, "quiver.model_versions")
            .unwrap_or_default()
            .contains("fraud-model@1.0.0"),
        "{:?}",
        root.attributes
    );
    let child_of = |s: &Span, parent: &Span| s.parent_span_id == parent.span_id;
    let queue = named(&spans, "queue");
    assert!(
        queue.iter().any(|q| child_of(q, root)),
        "{:#?}",
        names(&spans)
    );
    // The first call loaded the pipeline under the call, and its stages inside
    // that load.
    let cold = named(&spans, "cold_start");
    let pipeline_load: Vec<&&Span> = cold.iter().filter(|c| child_of(c, root)).collect();
    assert_eq!(pipeline_load.len(), 1, "{:#?}", names(&spans));
    assert_eq!(
        attr(pipeline_load[0], "quiver.function").as_deref(),
        Some("fraud-pipeline")
    );
    let stage_loads = cold
        .iter()
        .filter(|c| child_of(c, pipeline_load[0]))
        .count();
    assert_eq!(stage_loads, 3, "{:#?}", names(&spans));
    let guests = named(&spans, "guest");
    assert!(
        guests.iter().all(|g| child_of(g, root)),
        "{:#?}",
        names(&spans)
    );
    assert!(named(&spans, "instantiate")
        .iter()
        .all(|i| child_of(i, root)));
    // Host calls are children of the guest that made them.
    let under_a_guest = |s: &Span| guests.iter().any(|g| child_of(s, g));
    let features = named(&spans, "features.get");
    assert!(!features.is_empty() && features.iter().all(|s| under_a_guest(s)));
    let nn = named(&spans, "wasi-nn.compute");
    assert!(nn.iter().all(|s| under_a_guest(s)), "{:#?}", names(&spans));
    assert_eq!(attr(nn[0], "quiver.model").as_deref(), Some("fraud-model"));
    assert_eq!(
        attr(nn[0], "quiver.model_version").as_deref(),
        Some("1.0.0")
    );
    for s in &spans {
        assert!(s.start_time_unix_nano <= s.end_time_unix_nano && s.start_time_unix_nano > 0);
    }

    // A warm call: no cold start this time.
    let trace2 = "5bf92f3577b34da6a3ce929d0e0e4736";
    call_in_trace(
        &server,
        "fraud-pipeline",
        trace2,
        "01",
        read_sample("fraud-pipeline"),
    );
    let warm = receiver.wait_spans(&hex(trace2), |s| named(s, "guest").len() >= 3);
    assert!(named(&warm, "cold_start").is_empty(), "{:#?}", names(&warm));

    // An unsampled trace (flags 00) exports nothing.
    let trace3 = "6bf92f3577b34da6a3ce929d0e0e4736";
    call_in_trace(
        &server,
        "fraud-pipeline",
        trace3,
        "00",
        read_sample("fraud-pipeline"),
    );

    // Events: the emitter's publish span is the parent of the subscriber's call.
    server.deploy_emitter_and_sink();
    let trace4 = "7bf92f3577b34da6a3ce929d0e0e4736";
    call_in_trace(
        &server,
        "emitter",
        trace4,
        "01",
        r#"{"mode": "publish", "topic": "scored", "score": 0.25}"#,
    );
    let spans = receiver.wait_spans(&hex(trace4), |s| !named(s, "event sink").is_empty());
    let publish = named(&spans, "events.publish");
    assert_eq!(publish.len(), 1, "{:#?}", names(&spans));
    assert_eq!(
        attr(publish[0], "messaging.destination.name").as_deref(),
        Some("scored")
    );
    let emitter_guest = named(&spans, "guest")
        .into_iter()
        .find(|g| child_of(publish[0], g))
        .unwrap_or_else(|| panic!("publish under a guest: {:#?}", names(&spans)));
    let emitter = named(&spans, "fn emitter")[0];
    assert!(child_of(emitter_guest, emitter));
    let delivered = named(&spans, "event sink")[0];
    assert!(child_of(delivered, publish[0]), "{:#?}", names(&spans));
    assert_eq!(attr(delivered, "faas.trigger").as_deref(), Some("pubsub"));

    // Metrics: the registry, as OTLP, with the call counted.
    let deadline = Instant::now() + Duration::from_secs(30);
    let counted = loop {
        let found = {
            let g = receiver.got.lock().unwrap();
            g.metrics.iter().rev().find_map(|req| {
                let metrics = &req.resource_metrics.first()?.scope_metrics.first()?.metrics;
                let sum = metrics.iter().find(|m| m.name == "quiver_invocations_total")?;
                let Some(Data::Sum(sum)) = &sum.data else {
                    return None;
                };
                let total: f64 = sum
                    .data_points
                    .iter()
                    .filter(|p| {
                        p.attributes.iter().any(|a| {
                            a.key == "function"
                                && matches!(
                                    a.value.as_ref().and_then(|v| v.value.as_ref()),
                                    Some(AnyValue::StringValue(f)) if f == "fraud-pipeline"
                                )
                        })
                    })
                    .map(|p| match p.value {
                        Some(opentelemetry_proto::tonic::metrics::v1::number_data_point::Value::AsDouble(v)) => v,
                        _ => 0.0,
                    })
                    .sum();
                let histogram = metrics
                    .iter()
                    .any(|m| m.name == "quiver_inference_duration_seconds"
                        && matches!(m.data, Some(Data::Histogram(_))));
                (total >= 3.0 && histogram).then_some(total)
            })
        };
        if let Some(n) = found {
            break n;
        }
        assert!(
            Instant::now() < deadline,
            "no OTLP metrics with the calls counted"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(counted, 3.0);
    assert!(
        receiver.spans_of(&hex(trace3)).is_empty(),
        "an unsampled trace was exported"
    );
    let g = receiver.got.lock().unwrap();
    assert!(g.malformed.is_empty(), "{:?}", g.malformed);
    drop(g);
}

#[test]
fn a_bad_otlp_endpoint_is_refused_at_start() {
    let err = quiver_tests::serve_refused(&["--otlp-endpoint", "ftp://x"]);
    assert!(err.contains("must be an http:// or https:// URL"), "{err}");
    let err = quiver_tests::serve_refused(&[
        "--otlp-endpoint",
        "http://127.0.0.1:9",
        "--otlp-sample-ratio",
        "2",
    ]);
    assert!(err.contains("--otlp-sample-ratio is 0 to 1"), "{err}");
}
