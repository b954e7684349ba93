//! The Open Inference Protocol over gRPC (`inference.GRPCInferenceService`, the
//! vendored `proto/grpc_predict_v2.proto`, on `--grpc-listen`).
//!
//! Each RPC is translated into the REST request it mirrors and served in process
//! by the same router: the same auth layer (the `authorization` metadata is the
//! bearer token), call path, limits, metrics and errors. Tensors travel as the
//! REST binary extension (`raw_input_contents` as they came; typed `contents`
//! encoded the same way), so the data is not re-encoded as JSON; outputs come
//! back as `raw_output_contents`. REST errors become gRPC statuses with the same
//! message.
//!
//! The tenant is the token's; metadata `quiver-tenant` names it for the platform
//! admin's token and for public functions called without one (the REST
//! `/v2/tenants/{t}/...` routes).

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, Method, Request, StatusCode};
use serde_json::{json, Map, Value};
use std::sync::Arc;
use tonic::{Code, Response, Status};
use tower::ServiceExt as _;

pub mod pb {
    #![allow(clippy::all, clippy::pedantic)]
    tonic::include_proto!("inference");
}
use pb::grpc_inference_service_server::{GrpcInferenceService, GrpcInferenceServiceServer};
use pb::infer_parameter::ParameterChoice;

/// Serve gRPC on `listener` until the process stops; messages up to `max_body`
/// (the REST body limit), refused before they are read past it.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<super::AppState>,
) -> anyhow::Result<()> {
    let max = state.max_body;
    let service = GrpcInferenceServiceServer::new(Grpc {
        router: super::router(state),
        max_body: max,
    })
    .max_decoding_message_size(max)
    .max_encoding_message_size(usize::MAX);
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .add_service(service)
        .serve_with_incoming(incoming)
        .await?;
    Ok(())
}

struct Grpc {
    router: axum::Router,
    /// The REST body limit, which typed contents are checked against.
    max_body: usize,
}

/// A REST answer: status, the JSON header, and the binary part after it.
struct Answer {
    status: StatusCode,
    json: Value,
    binary: Bytes,
}

/// Path segments from clients are percent-encoded: a name cannot step into
/// another route; the route's own validation then judges it.
fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn code_of(status: StatusCode) -> Code {
    match status.as_u16() {
        400 | 415 | 422 => Code::InvalidArgument,
        413 => Code::ResourceExhausted,
        408 => Code::DeadlineExceeded,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::NotFound,
        409 => Code::FailedPrecondition,
        429 => Code::ResourceExhausted,
        503 => Code::Unavailable,
        504 => Code::DeadlineExceeded,
        502 => Code::Unavailable,
        _ => Code::Internal,
    }
}

impl Grpc {
    /// `/v2/models/{name}[/versions/{v}]{suffix}`, under the tenant the metadata
    /// names, if any.
    fn model_path(
        meta: &tonic::metadata::MetadataMap,
        name: &str,
        version: &str,
        suffix: &str,
    ) -> Result<String, Status> {
        if name.is_empty() {
            return Err(Status::invalid_argument("no model name"));
        }
        let mut path = String::from("/v2");
        if let Some(t) = meta.get("quiver-tenant") {
            let t = t
                .to_str()
                .map_err(|_| Status::invalid_argument("metadata quiver-tenant is not text"))?;
            path.push_str(&format!("/tenants/{}", segment(t)));
        }
        path.push_str(&format!("/models/{}", segment(name)));
        if !version.is_empty() {
            path.push_str(&format!("/versions/{}", segment(version)));
        }
        path.push_str(suffix);
        Ok(path)
    }

    async fn rest(
        &self,
        meta: &tonic::metadata::MetadataMap,
        method: Method,
        path: &str,
        body: Option<(Vec<u8>, usize)>,
    ) -> Result<Answer, Status> {
        let mut req = Request::builder().method(method).uri(path);
        for key in ["authorization", "traceparent", "x-quiver-route-key"] {
            if let Some(v) = meta.get(key) {
                let v = HeaderValue::from_bytes(v.as_bytes()).map_err(|_| {
                    Status::invalid_argument(format!("metadata {key} is not a header value"))
                })?;
                req = req.header(key, v);
            }
        }
        let body = match body {
            None => Body::empty(),
            Some((bytes, header_len)) => {
                req = req
                    .header("content-type", "application/octet-stream")
                    .header(super::oip_wire::HEADER_LENGTH, header_len);
                Body::from(bytes)
            }
        };
        let req = req
            .body(body)
            .map_err(|e| Status::invalid_argument(format!("not a request: {e}")))?;
        let resp = self
            .router
            .clone()
            .oneshot(req)
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        let status = resp.status();
        let retry_after = resp.headers().get("retry-after").cloned();
        let header_len = resp
            .headers()
            .get(super::oip_wire::HEADER_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.parse::<usize>().ok());
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .map_err(|e| Status::internal(format!("reading the answer: {e}")))?;
        let (json, binary) = match header_len {
            Some(n) if n <= bytes.len() => (bytes.slice(..n), bytes.slice(n..)),
            _ => (bytes, Bytes::new()),
        };
        let json: Value = serde_json::from_slice(&json).unwrap_or(Value::Null);
        if !status.is_success() {
            // The REST routes' errors: {"error": "..."} (OIP) or {"error": {"message"}}.
            let message = json["error"]
                .as_str()
                .or_else(|| json["error"]["message"].as_str())
                .unwrap_or("the request failed")
                .to_string();
            let mut meta = tonic::metadata::MetadataMap::new();
            // 429 and 503 say when to come back, as the REST routes do.
            if let Some(v) = retry_after
                .as_ref()
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
            {
                meta.insert("retry-after", v);
            }
            return Err(Status::with_metadata(code_of(status), message, meta));
        }
        Ok(Answer {
            status,
            json,
            binary,
        })
    }
}

fn parameter(p: &pb::InferParameter) -> Value {
    match &p.parameter_choice {
        Some(ParameterChoice::BoolParam(b)) => json!(b),
        Some(ParameterChoice::Int64Param(i)) => json!(i),
        Some(ParameterChoice::StringParam(s)) => json!(s),
        Some(ParameterChoice::DoubleParam(d)) => json!(d),
        Some(ParameterChoice::Uint64Param(u)) => json!(u),
        None => Value::Null,
    }
}

fn parameters(ps: &std::collections::HashMap<String, pb::InferParameter>) -> Map<String, Value> {
    ps.iter().map(|(k, v)| (k.clone(), parameter(v))).collect()
}

/// A tensor's typed `contents` as the binary extension's bytes (little-endian;
/// BYTES with a 4-byte length before each element), from the one field its
/// datatype uses: refused with the reason before anything is allocated past
/// `max` bytes.
fn contents_bytes(
    name: &str,
    datatype: &str,
    c: &pb::InferTensorContents,
    max: usize,
) -> Result<Vec<u8>, Status> {
    let filled = [
        !c.bool_contents.is_empty(),
        !c.int_contents.is_empty(),
        !c.int64_contents.is_empty(),
        !c.uint_contents.is_empty(),
        !c.uint64_contents.is_empty(),
        !c.fp32_contents.is_empty(),
        !c.fp64_contents.is_empty(),
        !c.bytes_contents.is_empty(),
    ];
    if filled.iter().filter(|f| **f).count() > 1 {
        return Err(Status::invalid_argument(format!(
            "input `{name}`: contents in more than one typed field"
        )));
    }
    let (n, size) = match datatype {
        "BOOL" => (c.bool_contents.len(), 1),
        "INT8" | "INT16" | "INT32" => (c.int_contents.len(), 4),
        "INT64" => (c.int64_contents.len(), 8),
        "UINT8" | "UINT16" | "UINT32" => (c.uint_contents.len(), 4),
        "UINT64" => (c.uint64_contents.len(), 8),
        "FP32" => (c.fp32_contents.len(), 4),
        "FP64" => (c.fp64_contents.len(), 8),
        "BYTES" => (1, {
            let total: usize = c.bytes_contents.iter().map(Vec::len).sum();
            total.saturating_add(c.bytes_contents.len().saturating_mul(4))
        }),
        other => {
            return Err(Status::invalid_argument(format!(
                "input `{name}` ({other}): send it in raw_input_contents (the protocol has no typed contents for it)"
            )))
        }
    };
    let need = n.saturating_mul(size);
    if need > max {
        return Err(Status::resource_exhausted(format!(
            "input `{name}`: its contents take {need} bytes, over the {max}-byte request limit"
        )));
    }
    let range = |lo: i64, hi: i64, v: i64, i: usize| -> Result<i64, Status> {
        (lo..=hi).contains(&v).then_some(v).ok_or_else(|| {
            Status::invalid_argument(format!(
                "input `{name}` ({datatype}): element {i} is {v}, outside {lo}..={hi}"
            ))
        })
    };
    let mut out = Vec::with_capacity(need);
    match datatype {
        "BOOL" => out.extend(c.bool_contents.iter().map(|b| u8::from(*b))),
        "INT8" => {
            for (i, v) in c.int_contents.iter().enumerate() {
                out.extend(
                    (range(i8::MIN.into(), i8::MAX.into(), (*v).into(), i)? as i8).to_le_bytes(),
                );
            }
        }
        "INT16" => {
            for (i, v) in c.int_contents.iter().enumerate() {
                out.extend(
                    (range(i16::MIN.into(), i16::MAX.into(), (*v).into(), i)? as i16).to_le_bytes(),
                );
            }
        }
        "INT32" => c
            .int_contents
            .iter()
            .for_each(|v| out.extend(v.to_le_bytes())),
        "INT64" => c
            .int64_contents
            .iter()
            .for_each(|v| out.extend(v.to_le_bytes())),
        "UINT8" => {
            for (i, v) in c.uint_contents.iter().enumerate() {
                out.push(range(0, u8::MAX.into(), (*v).into(), i)? as u8);
            }
        }
        "UINT16" => {
            for (i, v) in c.uint_contents.iter().enumerate() {
                out.extend((range(0, u16::MAX.into(), (*v).into(), i)? as u16).to_le_bytes());
            }
        }
        "UINT32" => c
            .uint_contents
            .iter()
            .for_each(|v| out.extend(v.to_le_bytes())),
        "UINT64" => c
            .uint64_contents
            .iter()
            .for_each(|v| out.extend(v.to_le_bytes())),
        "FP32" => c
            .fp32_contents
            .iter()
            .for_each(|v| out.extend(v.to_le_bytes())),
        "FP64" => c
            .fp64_contents
            .iter()
            .for_each(|v| out.extend(v.to_le_bytes())),
        _ => {
            // BYTES; each element is under 4 GiB (the message is bounded).
            for b in &c.bytes_contents {
                out.extend((b.len() as u32).to_le_bytes());
                out.extend_from_slice(b);
            }
        }
    }
    Ok(out)
}

#[tonic::async_trait]
impl GrpcInferenceService for Grpc {
    async fn server_live(
        &self,
        req: tonic::Request<pb::ServerLiveRequest>,
    ) -> Result<Response<pb::ServerLiveResponse>, Status> {
        let a = self
            .rest(req.metadata(), Method::GET, "/v2/health/live", None)
            .await?;
        Ok(Response::new(pb::ServerLiveResponse {
            live: a.json["live"].as_bool().unwrap_or(false),
        }))
    }

    async fn server_ready(
        &self,
        req: tonic::Request<pb::ServerReadyRequest>,
    ) -> Result<Response<pb::ServerReadyResponse>, Status> {
        let ready = match self
            .rest(req.metadata(), Method::GET, "/v2/health/ready", None)
            .await
        {
            Ok(a) => a.json["ready"].as_bool().unwrap_or(false),
            Err(s) if s.code() == Code::Unavailable => false,
            Err(s) => return Err(s),
        };
        Ok(Response::new(pb::ServerReadyResponse { ready }))
    }

    async fn model_ready(
        &self,
        req: tonic::Request<pb::ModelReadyRequest>,
    ) -> Result<Response<pb::ModelReadyResponse>, Status> {
        let m = req.get_ref();
        let path = Self::model_path(req.metadata(), &m.name, &m.version, "/ready")?;
        let a = self.rest(req.metadata(), Method::GET, &path, None).await?;
        Ok(Response::new(pb::ModelReadyResponse {
            ready: a.json["ready"].as_bool().unwrap_or(false),
        }))
    }

    async fn server_metadata(
        &self,
        req: tonic::Request<pb::ServerMetadataRequest>,
    ) -> Result<Response<pb::ServerMetadataResponse>, Status> {
        let a = self.rest(req.metadata(), Method::GET, "/v2", None).await?;
        let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
        Ok(Response::new(pb::ServerMetadataResponse {
            name: text(&a.json["name"]),
            version: text(&a.json["version"]),
            extensions: a.json["extensions"]
                .as_array()
                .map(|e| e.iter().map(text).collect())
                .unwrap_or_default(),
        }))
    }

    async fn model_metadata(
        &self,
        req: tonic::Request<pb::ModelMetadataRequest>,
    ) -> Result<Response<pb::ModelMetadataResponse>, Status> {
        let m = req.get_ref();
        let path = Self::model_path(req.metadata(), &m.name, &m.version, "")?;
        let a = self.rest(req.metadata(), Method::GET, &path, None).await?;
        let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
        let tensors = |v: &Value| {
            v.as_array()
                .map(|ts| {
                    ts.iter()
                        .map(|t| pb::model_metadata_response::TensorMetadata {
                            name: text(&t["name"]),
                            datatype: text(&t["datatype"]),
                            shape: t["shape"]
                                .as_array()
                                .map(|s| s.iter().filter_map(Value::as_i64).collect())
                                .unwrap_or_default(),
                        })
                        .collect()
                })
                .unwrap_or_default()
        };
        Ok(Response::new(pb::ModelMetadataResponse {
            name: text(&a.json["name"]),
            versions: a.json["versions"]
                .as_array()
                .map(|v| v.iter().map(text).collect())
                .unwrap_or_default(),
            platform: text(&a.json["platform"]),
            inputs: tensors(&a.json["inputs"]),
            outputs: tensors(&a.json["outputs"]),
            // The REST metadata's parameters, as text.
            properties: a.json["parameters"]
                .as_object()
                .map(|p| {
                    p.iter()
                        .map(|(k, v)| {
                            (
                                k.clone(),
                                v.as_str().map_or_else(|| v.to_string(), str::to_string),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default(),
        }))
    }

    async fn model_infer(
        &self,
        req: tonic::Request<pb::ModelInferRequest>,
    ) -> Result<Response<pb::ModelInferResponse>, Status> {
        let (meta, _, r) = req.into_parts();
        let path = Self::model_path(&meta, &r.model_name, &r.model_version, "/infer")?;
        let raw = !r.raw_input_contents.is_empty();
        if raw && r.raw_input_contents.len() != r.inputs.len() {
            return Err(Status::invalid_argument(format!(
                "{} inputs but {} raw_input_contents: one each, in order",
                r.inputs.len(),
                r.raw_input_contents.len()
            )));
        }
        // Typed contents become the binary extension's bytes too, so every input
        // travels as binary, in the order of the header's inputs.
        let mut typed: Vec<Vec<u8>> = Vec::new();
        let mut inputs = Vec::with_capacity(r.inputs.len());
        for (i, t) in r.inputs.iter().enumerate() {
            let bytes = match (raw, &t.contents) {
                (true, Some(_)) => {
                    return Err(Status::invalid_argument(format!(
                        "input `{}` has contents and the request has raw_input_contents: send one",
                        t.name
                    )))
                }
                (true, None) => r.raw_input_contents[i].len(),
                (false, c) => {
                    let empty = pb::InferTensorContents::default();
                    let c = c.as_ref().unwrap_or(&empty);
                    typed.push(contents_bytes(&t.name, &t.datatype, c, self.max_body)?);
                    typed.last().map_or(0, Vec::len)
                }
            };
            let mut params = parameters(&t.parameters);
            params.insert("binary_data_size".into(), json!(bytes));
            inputs.push(json!({
                "name": t.name, "datatype": t.datatype, "shape": t.shape, "parameters": params,
            }));
        }
        // Every output comes back binary: raw_output_contents.
        let outputs: Vec<Value> = r
            .outputs
            .iter()
            .map(|o| {
                let mut p = parameters(&o.parameters);
                p.insert("binary_data".into(), json!(true));
                json!({ "name": o.name, "parameters": p })
            })
            .collect();
        let mut params = parameters(&r.parameters);
        params.insert("binary_data_output".into(), json!(true));
        let mut header = json!({ "inputs": inputs, "outputs": outputs, "parameters": params });
        if !r.id.is_empty() {
            header["id"] = json!(r.id);
        }
        let mut body = header.to_string().into_bytes();
        let header_len = body.len();
        for part in r.raw_input_contents.iter().chain(&typed) {
            body.extend_from_slice(part);
        }
        let a = self
            .rest(&meta, Method::POST, &path, Some((body, header_len)))
            .await?;
        debug_assert!(a.status.is_success());
        let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
        let mut at = 0usize;
        let mut tensors = Vec::new();
        let mut raw_out = Vec::new();
        for o in a.json["outputs"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            let size = o["parameters"]["binary_data_size"]
                .as_u64()
                .and_then(|s| usize::try_from(s).ok())
                .filter(|s| at + s <= a.binary.len())
                .ok_or_else(|| {
                    Status::internal(format!(
                        "output {} came without its binary data (a bug)",
                        o["name"]
                    ))
                })?;
            raw_out.push(a.binary.slice(at..at + size).to_vec());
            at += size;
            tensors.push(pb::model_infer_response::InferOutputTensor {
                name: text(&o["name"]),
                datatype: text(&o["datatype"]),
                shape: o["shape"]
                    .as_array()
                    .map(|s| s.iter().filter_map(Value::as_i64).collect())
                    .unwrap_or_default(),
                parameters: Default::default(),
                contents: None,
            });
        }
        Ok(Response::new(pb::ModelInferResponse {
            model_name: text(&a.json["model_name"]),
            model_version: text(&a.json["model_version"]),
            id: text(&a.json["id"]),
            parameters: Default::default(),
            outputs: tensors,
            raw_output_contents: raw_out,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cannot_leave_their_path_segment() {
        assert_eq!(segment("fraud-score"), "fraud-score");
        assert_eq!(segment("../../admin/v1?x"), "..%2F..%2Fadmin%2Fv1%3Fx");
        let meta = tonic::metadata::MetadataMap::new();
        assert_eq!(
            Grpc::model_path(&meta, "m/x", "1.0.0", "/infer").unwrap(),
            "/v2/models/m%2Fx/versions/1.0.0/infer"
        );
        assert!(Grpc::model_path(&meta, "", "", "").is_err());
    }

    #[test]
    fn typed_contents_become_the_binary_extensions_bytes_or_a_clear_refusal() {
        let c = |f: fn(&mut pb::InferTensorContents)| {
            let mut c = pb::InferTensorContents::default();
            f(&mut c);
            c
        };
        let two = c(|c| {
            c.fp32_contents = vec![1.0];
            c.int64_contents = vec![1];
        });
        assert_eq!(
            contents_bytes("x", "FP32", &two, 1 << 20)
                .unwrap_err()
                .code(),
            Code::InvalidArgument
        );
        let fp = c(|c| c.fp64_contents = vec![0.5, 2.0]);
        let mut want = 0.5f64.to_le_bytes().to_vec();
        want.extend(2.0f64.to_le_bytes());
        assert_eq!(contents_bytes("x", "FP64", &fp, 1 << 20).unwrap(), want);
        let text = c(|c| c.bytes_contents = vec![b"hi".to_vec()]);
        assert_eq!(
            contents_bytes("x", "BYTES", &text, 1 << 20).unwrap(),
            [2, 0, 0, 0, b'h', b'i']
        );
        let int8 = c(|c| c.int_contents = vec![-3, 300]);
        let e = contents_bytes("x", "INT8", &int8, 1 << 20).unwrap_err();
        assert!(e.message().contains("element 1 is 300"), "{}", e.message());
        let big = c(|c| c.bool_contents = vec![true; 100]);
        assert_eq!(
            contents_bytes("x", "BOOL", &big, 99).unwrap_err().code(),
            Code::ResourceExhausted
        );
        let half = c(|c| c.fp32_contents = vec![1.0]);
        assert!(contents_bytes("x", "FP16", &half, 1 << 20)
            .unwrap_err()
            .message()
            .contains("raw_input_contents"));
    }
}
