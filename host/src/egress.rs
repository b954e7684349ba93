//! Outbound HTTP (`wasi:http/outgoing-handler`), deny by default.
//!
//! A function may call out only to what its manifest's `[capabilities] outbound`
//! names, and a manifest may name only what its tenant was granted (`quiver tenants
//! grant T outbound PATTERN`). Anything else fails inside the guest with
//! `HTTP-request-denied` before a socket is opened, and is counted.

use crate::tenancy::Usage;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

/// `scheme://host[:port]`, the host optionally `*.suffix` (one or more labels).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    scheme: String,
    host: Host,
    port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Host {
    Exact(String),
    /// `*.example.com`: any name ending in `.example.com` (not `example.com`).
    Suffix(String),
}

fn default_port(scheme: &str) -> u16 {
    match scheme {
        "https" => 443,
        _ => 80,
    }
}

impl Pattern {
    pub fn parse(s: &str) -> Result<Pattern, String> {
        let bad = |why: &str| {
            format!("outbound `{s}`: {why} (expected scheme://host[:port], e.g. https://api.example.com or https://*.example.com:8443)")
        };
        let (scheme, rest) = s.split_once("://").ok_or_else(|| bad("no scheme"))?;
        if scheme != "http" && scheme != "https" {
            return Err(bad("the scheme must be http or https"));
        }
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#', '@']) {
            return Err(bad(
                "only a scheme, a host and a port; no path, query or user",
            ));
        }
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) => (
                h,
                p.parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| bad("the port is not a number from 1 to 65535"))?,
            ),
            None => (rest, default_port(scheme)),
        };
        let host = host.to_ascii_lowercase();
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
        };
        let host = match host.strip_prefix("*.") {
            Some(suffix) if suffix.split('.').all(label_ok) => Host::Suffix(suffix.to_string()),
            None if host.split('.').all(label_ok) => Host::Exact(host),
            _ => {
                return Err(bad(
                    "the host is not a DNS name (a leading `*.` is the only wildcard)",
                ))
            }
        };
        Ok(Pattern {
            scheme: scheme.to_string(),
            host,
            port,
        })
    }

    /// Does a request to `scheme://host:port` match?
    pub fn matches(&self, scheme: &str, host: &str, port: u16) -> bool {
        if self.scheme != scheme || self.port != port {
            return false;
        }
        let host = host.to_ascii_lowercase();
        match &self.host {
            Host::Exact(h) => *h == host,
            Host::Suffix(s) => host
                .strip_suffix(s.as_str())
                .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
        }
    }

    /// Is everything `other` matches also matched by `self` (a grant covering a
    /// manifest's entry)?
    pub fn covers(&self, other: &Pattern) -> bool {
        if self.scheme != other.scheme || self.port != other.port {
            return false;
        }
        match (&self.host, &other.host) {
            (Host::Exact(a), Host::Exact(b)) => a == b,
            (Host::Suffix(_), Host::Exact(b)) => self.matches(&other.scheme, b, other.port),
            (Host::Suffix(a), Host::Suffix(b)) => {
                a == b || b.strip_suffix(a.as_str()).is_some_and(|h| h.ends_with('.'))
            }
            (Host::Exact(_), Host::Suffix(_)) => false,
        }
    }
}

/// Check a manifest's `outbound` list against the tenant's grants.
pub fn check_outbound(requested: &[String], granted: &[String]) -> Result<Vec<Pattern>, String> {
    let grants = granted
        .iter()
        .map(|g| Pattern::parse(g))
        .collect::<Result<Vec<_>, _>>()?;
    requested
        .iter()
        .map(|r| {
            let p = Pattern::parse(r)?;
            match grants.iter().any(|g| g.covers(&p)) {
                true => Ok(p),
                false => Err(format!(
                    "[capabilities] outbound `{r}` is not within this tenant's grants ({}); a platform admin grants it with `quiver tenants grant TENANT outbound PATTERN`",
                    match granted.is_empty() {
                        true => "none".to_string(),
                        false => granted.join(", "),
                    }
                )),
            }
        })
        .collect()
}

/// What one deployment may call out to, and where its calls are counted.
#[derive(Default)]
pub struct EgressPolicy {
    pub allowed: Vec<Pattern>,
    pub usage: Option<Usage>,
}

impl EgressPolicy {
    pub fn allows(&self, uri: &http::Uri) -> bool {
        let Some(scheme) = uri.scheme_str() else {
            return false;
        };
        let Some(host) = uri.host() else {
            return false;
        };
        let port = uri.port_u16().unwrap_or(default_port(scheme));
        self.allowed.iter().any(|p| p.matches(scheme, host, port))
    }
}

/// The `wasi:http` hooks of one store: the deployment's policy.
#[derive(Clone, Default)]
pub struct Egress(pub Arc<EgressPolicy>);

type Io = Box<dyn Future<Output = Result<(), HttpError>> + Send>;

impl WasiHttpHooks for Egress {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Io,
    ) -> Box<dyn Future<Output = Result<(http::Response<WasiBody>, Io), HttpError>> + Send> {
        let allowed = self.0.allows(request.uri());
        if let Some(u) = &self.0.usage {
            match allowed {
                true => u.egress_calls.fetch_add(1, Ordering::Relaxed),
                false => u.egress_denied.fetch_add(1, Ordering::Relaxed),
            };
        }
        if !allowed {
            tracing::info!(uri = %request.uri(), "outbound request denied by policy");
            return Box::new(async { Err(HttpError::HttpRequestDenied) });
        }
        Box::new(async move {
            use http_body_util::BodyExt;
            let (res, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((res.map(BodyExt::boxed_unsync), Box::new(io) as Io))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_parse_match_and_cover() {
        let p = Pattern::parse("https://*.example.com").unwrap();
        assert!(p.matches("https", "api.example.com", 443));
        assert!(p.matches("https", "a.b.example.com", 443));
        assert!(!p.matches("https", "example.com", 443));
        assert!(!p.matches("https", "evilexample.com", 443));
        assert!(!p.matches("http", "api.example.com", 80));
        assert!(!p.matches("https", "api.example.com", 8443));
        let exact = Pattern::parse("https://api.example.com:443").unwrap();
        assert!(p.covers(&exact));
        assert!(p.covers(&Pattern::parse("https://*.eu.example.com").unwrap()));
        assert!(!exact.covers(&p));
        assert!(!p.covers(&Pattern::parse("https://example.com").unwrap()));
        let local = Pattern::parse("http://127.0.0.1:8080").unwrap();
        assert!(local.matches("http", "127.0.0.1", 8080));
        for bad in [
            "api.example.com",
            "ftp://x.com",
            "https://x.com/path",
            "https://user@x.com",
            "https://x.com:0",
            "https://x.com:99999",
            "https://*",
            "https://a.*.com",
            "https://",
        ] {
            assert!(Pattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_manifest_may_ask_only_within_its_grants() {
        let granted = vec!["https://*.example.com".to_string()];
        assert!(check_outbound(&["https://api.example.com".into()], &granted).is_ok());
        let e = check_outbound(&["https://api.other.com".into()], &granted).unwrap_err();
        assert!(e.contains("not within"), "{e}");
        assert!(check_outbound(&["http://127.0.0.1:9".into()], &[]).is_err());
        assert!(check_outbound(&[], &[]).unwrap().is_empty());
    }

    #[test]
    fn the_policy_denies_what_it_does_not_name() {
        let policy = EgressPolicy {
            allowed: vec![Pattern::parse("http://127.0.0.1:8080").unwrap()],
            usage: None,
        };
        assert!(policy.allows(&"http://127.0.0.1:8080/x".parse().unwrap()));
        assert!(!policy.allows(&"http://127.0.0.1:8081/x".parse().unwrap()));
        assert!(!policy.allows(&"https://127.0.0.1:8080/x".parse().unwrap()));
        assert!(!policy.allows(&"/relative".parse().unwrap()));
    }
}
