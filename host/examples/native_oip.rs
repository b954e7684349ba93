//! The native peer of `scripts/bench-peers.sh`: an Open Inference Protocol v2 REST
//! server with no sandbox — axum, Quiver's own wire decoding and encoding
//! (`server::oip_wire::direct`), and the same ONNX backend Quiver runs, called
//! directly on a blocking thread. No tenants, tokens, quotas, call path, metrics or
//! Wasm: the limit of what serving a model over HTTP costs on this machine.
//!
//! usage: native_oip ADDR tract|ort NAME=MODEL.onnx...

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use quiver_host::bindings::{Batch, Column, ElementType, Field, Tensor as QTensor};
use quiver_host::nn::{OnnxBackend, OnnxModel};
use quiver_host::server::oip_wire::direct;
use std::collections::HashMap;
use std::sync::Arc;
use tract_onnx::prelude::{DatumType, IntoTValue as _, TVec, Tensor};

type Models = Arc<HashMap<String, Arc<OnnxModel>>>;

/// Little-endian bytes as a tensor of `T` (what the wire decoding checked sized).
fn typed<T: tract_onnx::prelude::Datum + Copy, const N: usize>(
    shape: &[usize],
    data: &[u8],
    from: fn([u8; N]) -> T,
) -> tract_onnx::prelude::TractResult<Tensor> {
    let values: Vec<T> = data
        .chunks_exact(N)
        .map(|c| from(c.try_into().expect("chunks of N bytes")))
        .collect();
    Tensor::from_shape(shape, &values)
}

fn to_tract(field: &Field) -> Result<Tensor, String> {
    let col = |shape: &[usize], r: tract_onnx::prelude::TractResult<Tensor>| {
        r.map_err(|e| format!("{}: {e} ({shape:?})", field.name))
    };
    match &field.values {
        Column::Tensor(t) => {
            let shape: Vec<usize> = t.shape.iter().map(|d| *d as usize).collect();
            let r = match t.element {
                ElementType::Float32 => typed(&shape, &t.data, f32::from_le_bytes),
                ElementType::Float64 => typed(&shape, &t.data, f64::from_le_bytes),
                ElementType::Int64 => typed(&shape, &t.data, i64::from_le_bytes),
                ElementType::Int32 => typed(&shape, &t.data, i32::from_le_bytes),
                ElementType::Uint8 => typed(&shape, &t.data, u8::from_le_bytes),
                other => return Err(format!("{}: {other:?} is not served here", field.name)),
            };
            col(&shape, r)
        }
        Column::Float32(v) => col(&[v.len()], Tensor::from_shape(&[v.len()], v)),
        Column::Float64(v) => col(&[v.len()], Tensor::from_shape(&[v.len()], v)),
        Column::Int64(v) => col(&[v.len()], Tensor::from_shape(&[v.len()], v)),
        _ => Err(format!("{}: not a numeric tensor", field.name)),
    }
}

fn from_tract(name: &str, t: &Tensor) -> Result<Field, String> {
    let element = match t.datum_type() {
        DatumType::F32 => ElementType::Float32,
        DatumType::F64 => ElementType::Float64,
        DatumType::I64 => ElementType::Int64,
        DatumType::I32 => ElementType::Int32,
        DatumType::U8 => ElementType::Uint8,
        DatumType::Bool => ElementType::Boolean,
        other => return Err(format!("output {name}: {other:?}")),
    };
    let data = t.as_bytes().to_vec();
    Ok(Field {
        name: name.to_string(),
        values: Column::Tensor(QTensor {
            shape: t.shape().iter().map(|d| *d as u32).collect(),
            element,
            data,
        }),
    })
}

fn bad(status: StatusCode, message: String) -> Response {
    (status, axum::Json(serde_json::json!({ "error": message }))).into_response()
}

async fn infer(
    State(models): State<Models>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(model) = models.get(&name).cloned() else {
        return bad(StatusCode::NOT_FOUND, format!("no model {name}"));
    };
    let req = match direct::decode(&headers, &body) {
        Ok(r) => r,
        Err(e) => return bad(StatusCode::BAD_REQUEST, e),
    };
    let run = tokio::task::spawn_blocking(move || -> Result<(Vec<u8>, Option<usize>), String> {
        let mut inputs = TVec::new();
        for spec in &model.inputs {
            let f = req
                .batch
                .fields
                .iter()
                .find(|f| f.name == spec.name)
                .ok_or_else(|| format!("missing input {}", spec.name))?;
            inputs.push(to_tract(f)?.into_tvalue());
        }
        let out = model.run(inputs).map_err(|e| e.to_string())?;
        let fields = model
            .outputs
            .iter()
            .zip(out.iter())
            .map(|(spec, t)| from_tract(&spec.name, t))
            .collect::<Result<Vec<_>, _>>()?;
        direct::encode(&name, &Batch { fields }, &req)
    });
    match run.await {
        Ok(Ok((body, None))) => ([("content-type", "application/json")], body).into_response(),
        Ok(Ok((body, Some(header)))) => (
            [
                ("content-type", "application/octet-stream".to_string()),
                ("inference-header-content-length", header.to_string()),
            ],
            body,
        )
            .into_response(),
        Ok(Err(e)) => bad(StatusCode::BAD_REQUEST, e),
        Err(e) => bad(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [addr, backend, specs @ ..] = args.as_slice() else {
        anyhow::bail!("usage: native_oip ADDR tract|ort NAME=MODEL.onnx...");
    };
    let backend = match backend.as_str() {
        "tract" => OnnxBackend::Tract,
        "ort" => OnnxBackend::Ort,
        other => anyhow::bail!("backend `{other}`: tract or ort"),
    };
    let mut models = HashMap::new();
    for spec in specs {
        let (name, path) = spec
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("`{spec}` is not NAME=PATH"))?;
        let model = backend.load(&std::fs::read(path)?, "cpu")?;
        models.insert(name.to_string(), Arc::new(model));
    }
    let app = axum::Router::new()
        .route("/v2/models/{name}/infer", post(infer))
        .layer(axum::extract::DefaultBodyLimit::max(64 << 20))
        .with_state(Arc::new(models));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(addr.as_str()).await?;
        println!("native_oip listening on {addr}");
        axum::serve(listener, app).await?;
        Ok(())
    })
}
