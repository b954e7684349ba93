//! The auth seam: one layer in front of every route authenticates the bearer token,
//! looks up what the matched route needs (one policy table, [`need`]) and decides
//! before any handler runs. A route the table does not name needs the platform
//! admin (fail closed). Handlers read the verdict as [`Access`].
//!
//! Another tenant's resource is answered 404 with the same body whether it exists
//! or not; an anonymous call to anything but a public function is 401 whether the
//! function exists or not: names do not leak.

use super::{extract, ApiError, AppState};
use crate::tenancy::{AuthError, Denied, Principal, Scope, TenantId};
use axum::extract::{MatchedPath, RawPathParams, Request, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};
use std::sync::Arc;

/// What a route needs of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Need {
    /// Nothing (health, protocol metadata).
    Open,
    /// A token of the path's tenant with this scope (the platform admin passes).
    Tenant(Scope),
    /// As `Tenant(Invoke)`, or no token at all: then only public functions answer.
    InvokeOrPublic,
    /// A token of any tenant; what it sees is filtered to that tenant (`/metrics`).
    AnyToken,
    /// The platform admin token.
    Platform,
}

/// The policy table: method and matched route -> what the caller needs.
pub(crate) fn need(method: &Method, route: &str) -> Need {
    let read = method == Method::GET || method == Method::HEAD;
    let tenant_read_or_deploy = match read {
        true => Need::Tenant(Scope::Invoke),
        false => Need::Tenant(Scope::Deploy),
    };
    match route {
        "/healthz" | "/v2" | "/v2/health/live" | "/v2/health/ready" => Need::Open,
        "/metrics" => Need::AnyToken,
        // The dashboard: its page and assets hold no data; its data routes answer
        // what the caller's token sees (every tenant for the platform, else its own).
        "/ui" | "/ui/assets/{file}" => Need::Open,
        r if r.starts_with("/ui/api/") => Need::AnyToken,
        // Labels need a token even for a public function.
        "/fn/{tenant}/{name}/feedback" => Need::Tenant(Scope::Invoke),
        r if r.starts_with("/fn/") || r.starts_with("/http/") => Need::InvokeOrPublic,
        r if r.starts_with("/v2/tenants/{tenant}/") => Need::InvokeOrPublic,
        r if r.starts_with("/v2/models/") => Need::Tenant(Scope::Invoke),
        "/events/{tenant}/{topic}" => Need::Tenant(Scope::Invoke),
        r if r.starts_with("/events/{tenant}/{topic}/") => tenant_read_or_deploy,
        r if r.starts_with("/admin/v1/tenants/{tenant}/tokens") => Need::Tenant(Scope::Admin),
        r if r.starts_with("/admin/v1/tenants/{tenant}/audit") => Need::Tenant(Scope::Admin),
        r if r.starts_with("/admin/v1/tenants/{tenant}/quota") && !read => Need::Platform,
        r if r.starts_with("/admin/v1/tenants/{tenant}/grants") && !read => Need::Platform,
        r if r.starts_with("/admin/v1/tenants/{tenant}/") => tenant_read_or_deploy,
        _ => Need::Platform,
    }
}

/// The verdict, for handlers: who calls, and the tenant the call acts on.
#[derive(Clone, Debug)]
pub struct Access {
    /// `None`: no token (only public functions answer such a call).
    pub principal: Option<Arc<Principal>>,
    /// The path's tenant, or on the token-scoped protocol routes the token's.
    pub tenant: Option<TenantId>,
}

impl Access {
    pub fn tenant(&self) -> Result<&TenantId, ApiError> {
        self.tenant.as_ref().ok_or_else(|| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "this route has no tenant (a routing bug)",
            )
        })
    }

    /// The function a data-plane request names (`name` or `name@version`) in this
    /// request's tenant, checked: a bad name or version is 400 naming the part.
    pub fn function(&self, name_ref: &str) -> Result<crate::tenancy::FunctionRef, ApiError> {
        let tenant = self.tenant()?.clone();
        crate::tenancy::FunctionRef::parse(tenant, name_ref).map_err(ref_error)
    }

    /// As [`Access::function`], with the version apart (the OIP routes' shape).
    pub fn function_at(
        &self,
        name: &str,
        version: Option<&str>,
    ) -> Result<crate::tenancy::FunctionRef, ApiError> {
        let tenant = self.tenant()?.clone();
        crate::tenancy::FunctionRef::new(tenant, name, version).map_err(ref_error)
    }

    /// Who the audit log names.
    pub fn actor(&self) -> String {
        self.principal
            .as_ref()
            .map_or_else(|| "anonymous".into(), |p| p.actor())
    }
}

fn ref_error(e: crate::tenancy::RefError) -> ApiError {
    use crate::tenancy::RefError;
    match e {
        RefError::Name(m) => ApiError::new(StatusCode::BAD_REQUEST, "invalid_name", m),
        RefError::Version(m) => ApiError::new(StatusCode::BAD_REQUEST, "invalid_version", m),
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Access {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, ApiError> {
        parts.extensions.get::<Access>().cloned().ok_or_else(|| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the request did not pass the auth layer (a routing bug)",
            )
        })
    }
}

pub(crate) fn unauthorized(why: impl std::fmt::Display) -> ApiError {
    ApiError {
        www_authenticate: true,
        ..ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", why.to_string())
    }
}

/// The one answer for a tenant this caller may not see, existing or not.
pub(crate) fn hidden(tenant: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no tenant `{tenant}` that this token can see"),
    )
}

/// A tenant that does not exist, told to the platform admin (who sees them all).
fn no_tenant(tenant: &TenantId) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no tenant `{tenant}` (create it: quiver tenants create {tenant})"),
    )
}

fn forbidden(scope: Scope) -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "forbidden",
        format!("this needs a token with the `{}` scope", scope.as_str()),
    )
}

enum Caller {
    Anonymous,
    Principal(Principal),
}

fn caller(state: &AppState, req: &Request) -> Result<Caller, AuthError> {
    let Some(value) = req.headers().get("authorization") else {
        return Ok(Caller::Anonymous);
    };
    let value = value.to_str().map_err(|_| AuthError::Malformed)?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .ok_or(AuthError::Malformed)?
        .trim();
    state.tenancy.authenticate(token).map(Caller::Principal)
}

fn decide(
    state: &AppState,
    req: &Request,
    need: Need,
    path_tenant: Option<&str>,
) -> Result<Access, ApiError> {
    if need == Need::Open {
        return Ok(Access {
            principal: None,
            tenant: None,
        });
    }
    let caller = caller(state, req).map_err(unauthorized)?;
    // A tenant named in the path: checked, and known to exist, before anything else.
    let tenant = match path_tenant {
        None => None,
        Some(name) => Some(
            TenantId::parse(name)
                .map_err(|m| ApiError::new(StatusCode::BAD_REQUEST, "invalid_name", m))?,
        ),
    };
    let p = match caller {
        Caller::Anonymous if need == Need::InvokeOrPublic => {
            // Only public functions answer; the handler decides, after resolving,
            // and answers 401 for anything else (existing or not).
            let tenant = tenant.filter(|t| state.tenancy.tenant(t).is_some());
            return match tenant {
                Some(t) => Ok(Access {
                    principal: None,
                    tenant: Some(t),
                }),
                None => Err(unauthorized(AuthError::Missing)),
            };
        }
        Caller::Anonymous => return Err(unauthorized(AuthError::Missing)),
        Caller::Principal(p) => p,
    };
    let scope = match need {
        Need::Platform if p.is_platform() => {
            if let Some(t) = tenant
                .as_ref()
                .filter(|t| state.tenancy.tenant(t).is_none())
            {
                return Err(no_tenant(t));
            }
            return Ok(Access {
                tenant,
                principal: Some(Arc::new(p)),
            });
        }
        Need::Platform => {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "this needs the platform admin token",
            ))
        }
        Need::AnyToken => {
            return Ok(Access {
                tenant: p.tenant.clone(),
                principal: Some(Arc::new(p)),
            })
        }
        Need::Tenant(scope) => scope,
        Need::InvokeOrPublic | Need::Open => Scope::Invoke,
    };
    // No tenant in the path: the protocol routes act on the token's own tenant.
    let tenant =
        match (tenant, &p.tenant) {
            (Some(t), _) => t,
            (None, Some(own)) => own.clone(),
            (None, None) => return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "tenant_required",
                "a platform token names the tenant in the path: /v2/tenants/{tenant}/models/...",
            )),
        };
    match p.may(&tenant, scope) {
        Err(Denied::NotFound) => return Err(hidden(tenant.as_str())),
        Err(Denied::Scope(s)) => return Err(forbidden(s)),
        Ok(()) => {}
    }
    if state.tenancy.tenant(&tenant).is_none() {
        return Err(no_tenant(&tenant));
    }
    Ok(Access {
        principal: Some(Arc::new(p)),
        tenant: Some(tenant),
    })
}

/// The layer itself (`route_layer`: only matched routes reach it). Every admin
/// change that a token asked for, allowed or not, is appended to the audit log
/// (durably, before the answer goes out).
pub(crate) async fn authorize(
    State(state): State<Arc<AppState>>,
    route: Option<MatchedPath>,
    params: Result<RawPathParams, axum::extract::rejection::RawPathParamsRejection>,
    mut req: Request,
    next: Next,
) -> Response {
    let params = match params {
        Ok(p) => p,
        Err(e) => {
            let path = req.uri().path().to_string();
            return extract::reject(&path, StatusCode::BAD_REQUEST, "bad_request", e.body_text());
        }
    };
    let path_tenant = Some(&params).and_then(|p| {
        p.iter()
            .find(|(k, _)| *k == "tenant")
            .map(|(_, v)| v.to_string())
    });
    let route = route.map(|r| r.as_str().to_string()).unwrap_or_default();
    let need = match route.is_empty() {
        true => Need::Platform,
        false => need(req.method(), &route),
    };
    let audited = audited_action(req.method(), &route);
    let target = req.uri().path().to_string();
    let (resp, access) = match decide(&state, &req, need, path_tenant.as_deref()) {
        Ok(access) => {
            req.extensions_mut().insert(access.clone());
            (next.run(req).await, Some(access))
        }
        Err(e) => {
            // Refusals count in the bounded (route, code) series, like unknown names.
            let kind = match route.as_str() {
                r if r.starts_with("/fn/") => "fn",
                r if r.starts_with("/http/") => "http",
                r if r.starts_with("/v2/") => "oip",
                r if r.starts_with("/admin/") => "admin",
                _ => "other",
            };
            state
                .metrics
                .unresolved
                .with_label_values(&[kind, e.code])
                .inc();
            let mut resp = extract::reject(&target, e.status, e.code, e.message.clone());
            if e.www_authenticate {
                resp.headers_mut()
                    .insert("www-authenticate", HeaderValue::from_static("Bearer"));
            }
            // A refused change is recorded when a valid token asked for it.
            let access = match caller(&state, &req) {
                Ok(Caller::Principal(p)) => Some(Access {
                    tenant: p.tenant.clone(),
                    principal: Some(Arc::new(p)),
                }),
                _ => None,
            };
            (resp, access)
        }
    };
    let (Some(action), Some(access)) = (audited, access) else {
        return resp;
    };
    let Some(principal) = access.principal.clone() else {
        return resp;
    };
    let detail = resp
        .extensions()
        .get::<AuditDetail>()
        .map(|d| format!(" {}", d.0))
        .unwrap_or_default();
    let entry = crate::tenancy::NewAuditEntry {
        actor: principal.actor(),
        tenant: access.tenant.clone(),
        action: action.to_string(),
        target: format!("{target}{detail}"),
        result: match resp.status().is_success() {
            true => "ok".to_string(),
            false => format!("refused {}", resp.status().as_u16()),
        },
    };
    let tenancy = state.tenancy.clone();
    match tokio::task::spawn_blocking(move || tenancy.audit(entry)).await {
        Ok(Ok(_)) => resp,
        Ok(Err(e)) => audit_failed(e),
        Err(e) => audit_failed(e),
    }
}

fn audit_failed(e: impl std::fmt::Display) -> Response {
    tracing::error!("appending to the audit log failed: {e}");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "audit_failed",
        format!("the action ran but could not be recorded in the audit log: {e}"),
    )
    .into_response()
}

/// What a handler adds to its action's audit entry (e.g. the version and digest
/// it deployed), as a response extension.
#[derive(Clone, Debug)]
pub struct AuditDetail(pub String);

/// The audit log's name for a change made through an admin route; reads and the
/// data plane are not audited.
fn audited_action(method: &Method, route: &str) -> Option<&'static str> {
    if method == Method::GET || method == Method::HEAD {
        return None;
    }
    let t = "/admin/v1/tenants/{tenant}";
    let r = route.strip_prefix(t);
    Some(match (method.as_str(), route, r) {
        ("POST", _, Some("/functions")) => "deploy",
        ("DELETE", _, Some("/functions/{name}/versions/{version}")) => "rm",
        ("POST", _, Some("/functions/{name}/rollback")) => "rollback",
        ("PUT", _, Some("/functions/{name}/traffic")) => "traffic",
        ("POST", _, Some("/features/{group}")) => "features.load",
        ("POST", _, Some("/models")) => "models.push",
        ("DELETE", _, Some("/models/{name}/versions/{version}")) => "models.rm",
        ("PUT", _, Some("/models/{name}/aliases/{alias}")) => "models.alias",
        ("POST", _, Some("/models/{name}/rollouts")) => "models.rollout",
        ("POST", _, Some("/models/{name}/rollouts/abort")) => "models.rollout-abort",
        ("POST", _, Some("/tokens")) => "tokens.create",
        ("DELETE", _, Some("/tokens/{id}")) => "tokens.revoke",
        ("PUT", _, Some("/quota")) => "tenants.set-quota",
        ("POST", _, Some("/grants")) => "tenants.grant",
        ("DELETE", _, Some("/grants")) => "tenants.revoke-grant",
        ("POST", "/admin/v1/tenants", _) => "tenants.create",
        ("POST", "/admin/v1/gc", _) => "gc",
        (_, r, _) if r.starts_with("/admin/v1") => "admin",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_fails_closed_and_scopes_writes() {
        let get = Method::GET;
        let post = Method::POST;
        assert_eq!(need(&get, "/healthz"), Need::Open);
        assert_eq!(need(&get, "/something/new"), Need::Platform);
        assert_eq!(need(&post, "/admin/v1/gc"), Need::Platform);
        assert_eq!(need(&post, "/admin/v1/tenants"), Need::Platform);
        assert_eq!(
            need(&get, "/admin/v1/tenants/{tenant}/functions"),
            Need::Tenant(Scope::Invoke)
        );
        assert_eq!(
            need(&post, "/admin/v1/tenants/{tenant}/functions"),
            Need::Tenant(Scope::Deploy)
        );
        assert_eq!(
            need(
                &Method::DELETE,
                "/admin/v1/tenants/{tenant}/models/{name}/versions/{version}"
            ),
            Need::Tenant(Scope::Deploy)
        );
        assert_eq!(
            need(&get, "/admin/v1/tenants/{tenant}/tokens"),
            Need::Tenant(Scope::Admin)
        );
        assert_eq!(
            need(&Method::PUT, "/admin/v1/tenants/{tenant}/quota"),
            Need::Platform
        );
        assert_eq!(
            need(&post, "/admin/v1/tenants/{tenant}/grants"),
            Need::Platform
        );
        assert_eq!(need(&post, "/fn/{tenant}/{name}"), Need::InvokeOrPublic);
        assert_eq!(
            need(&post, "/fn/{tenant}/{name}/feedback"),
            Need::Tenant(Scope::Invoke)
        );
        assert_eq!(
            need(&post, "/v2/models/{name}/infer"),
            Need::Tenant(Scope::Invoke)
        );
        assert_eq!(need(&get, "/metrics"), Need::AnyToken);
    }

    #[test]
    fn the_dashboard_page_is_open_and_its_data_needs_a_token() {
        let get = Method::GET;
        assert_eq!(need(&get, "/ui"), Need::Open);
        assert_eq!(need(&get, "/ui/assets/{file}"), Need::Open);
        assert_eq!(need(&get, "/ui/api/overview"), Need::AnyToken);
        assert_eq!(need(&get, "/ui/api/series"), Need::AnyToken);
        // Nothing else under /ui is open by accident.
        assert_eq!(need(&get, "/ui/other"), Need::Platform);
        assert_eq!(need(&get, "/uix"), Need::Platform);
    }
}
