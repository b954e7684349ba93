//! A standard `wasi:http/proxy` component: it runs unchanged under `wasmtime serve`,
//! Spin and Quiver. Answers `hello from Quiver` with the method and path it saw, and
//! echoes a request body back. `/spin/{ms}` busy-waits `ms` milliseconds (at most
//! 60000) first and answers `spun {ms} ms` instead: a request that holds a CPU.
//! `/fetch/{host:port}` makes an outbound `GET http://{host:port}/` through
//! `wasi:http/outgoing-handler` and answers `fetched {status}` or `refused {error}`
//! (so the component imports the whole proxy world, as other toolchains' do).
use std::io::{Read as _, Write as _};
use wasip2::http::types::{
    Fields, IncomingBody, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

struct Hello;

/// The longest `/spin/{ms}` busy-wait, in milliseconds.
const MAX_SPIN_MS: u64 = 60_000;

/// For `/spin/{ms}` (a query is ignored): busy-waits `ms` milliseconds, capped at
/// [`MAX_SPIN_MS`], and returns how long it spun.
fn spin(path: &str) -> Option<u64> {
    let path = path.split('?').next().unwrap_or_default();
    let ms: u64 = path.strip_prefix("/spin/")?.parse().ok()?;
    let ms = ms.min(MAX_SPIN_MS);
    let start = std::time::Instant::now();
    let wait = std::time::Duration::from_millis(ms);
    while start.elapsed() < wait {
        std::hint::spin_loop();
    }
    Some(ms)
}

/// `/fetch/{authority}`: one outbound GET, and what came of it.
fn fetch(path: &str) -> Option<String> {
    use wasip2::http::outgoing_handler::{handle, OutgoingRequest};
    use wasip2::http::types::Scheme;
    let authority = path.split('?').next()?.strip_prefix("/fetch/")?;
    let req = OutgoingRequest::new(Fields::new());
    let _ = req.set_scheme(Some(&Scheme::Http));
    let _ = req.set_authority(Some(authority));
    let _ = req.set_path_with_query(Some("/"));
    let outcome = match handle(req, None) {
        Err(e) => format!("refused {e:?}"),
        Ok(future) => {
            future.subscribe().block();
            match future.get() {
                Some(Ok(Ok(resp))) => format!("fetched {}", resp.status()),
                Some(Ok(Err(e))) => format!("refused {e:?}"),
                other => format!("refused {other:?}"),
            }
        }
    };
    Some(format!("{outcome}\n"))
}

wasip2::http::proxy::export!(Hello);

impl wasip2::exports::http::incoming_handler::Guest for Hello {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let method = match request.method() {
            Method::Get => "GET".to_string(),
            Method::Head => "HEAD".to_string(),
            Method::Post => "POST".to_string(),
            Method::Put => "PUT".to_string(),
            Method::Delete => "DELETE".to_string(),
            Method::Connect => "CONNECT".to_string(),
            Method::Options => "OPTIONS".to_string(),
            Method::Trace => "TRACE".to_string(),
            Method::Patch => "PATCH".to_string(),
            Method::Other(m) => m,
        };
        let path = request.path_with_query().unwrap_or_default();
        let mut body = Vec::new();
        if let Ok(incoming) = request.consume() {
            if let Ok(mut stream) = incoming.stream() {
                // A read error ends the body early; the reply says how much arrived.
                let _ = stream.read_to_end(&mut body);
            }
            IncomingBody::finish(incoming);
        }
        let text = if let Some(ms) = spin(&path) {
            format!("spun {ms} ms\n")
        } else if let Some(outcome) = fetch(&path) {
            outcome
        } else if body.is_empty() {
            format!("hello from Quiver: {method} {path}\n")
        } else {
            format!(
                "hello from Quiver: {method} {path} ({} bytes)\n",
                body.len()
            )
        };

        let headers = Fields::new();
        let _ = headers.set("content-type", &[b"text/plain".to_vec()]);
        let response = OutgoingResponse::new(headers);
        let Ok(out) = response.body() else { return };
        ResponseOutparam::set(response_out, Ok(response));
        if let Ok(mut stream) = out.write() {
            let _ = stream.write_all(text.as_bytes());
            let _ = stream.write_all(&body);
            let _ = stream.flush();
        }
        let _ = OutgoingBody::finish(out, None);
    }
}
