//! `/{tenant}/oauth2/v2.0/authorize` and the interactive pages behind it: sign-in, MFA, consent,
//! then the redirect (query, fragment or form_post) with a code or an error.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

use crate::error::{StsError, Trace};
use crate::html;
use crate::scopes::{self, Scope};
use crate::state::{
    AuthCode, Emu, FLOW_LIFETIME_MS, Flow, FlowStage, Inner, MS, PkceMethod, SsoSession, TenantPath, random_token,
};
use crate::token::{Params, parse_params};

/// Entra's session cookie name; the emulator's holds an SSO session id.
pub(crate) const SSO_COOKIE: &str = "ESTSAUTH";

/// Where the answer of an authorize request goes.
#[derive(Debug, Clone)]
struct Target {
    redirect_uri: String,
    mode: String,
    state: Option<String>,
}

enum Outcome {
    /// An interactive page (sign-in, MFA, consent).
    Page(String),
    /// An error the user sees; no redirect (the redirect URI is not trusted yet, or Entra shows it).
    ErrorPage(StsError),
    /// Back to the client: a code, or an error when `error` is set.
    Redirect { target: Target, fields: Vec<(String, String)>, error: Option<u32> },
}

struct Reply {
    outcome: Outcome,
    /// A new SSO session to set as cookie.
    set_sso: Option<String>,
}

impl From<Outcome> for Reply {
    fn from(outcome: Outcome) -> Reply {
        Reply { outcome, set_sso: None }
    }
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

fn redirect_error(target: &Target, trace: &Trace, e: StsError, subcode: Option<&str>) -> Outcome {
    let mut fields =
        vec![("error".to_string(), e.error.to_string()), ("error_description".into(), trace.description(&e))];
    if let Some(s) = subcode {
        fields.push(("error_subcode".into(), s.into()));
    }
    Outcome::Redirect { target: target.clone(), fields, error: Some(e.code) }
}

/// Registered redirect URI match: exact, except that loopback URIs ignore the port (RFC 8252,
/// "localhost exceptions" in Entra's reply URL rules).
pub(crate) fn redirect_matches(registered: &str, given: &str) -> bool {
    if registered == given {
        return true;
    }
    let (Ok(a), Ok(b)) = (url::Url::parse(registered), url::Url::parse(given)) else {
        return false;
    };
    let loopback = |u: &url::Url| matches!(u.host_str(), Some("localhost" | "127.0.0.1"));
    loopback(&a)
        && loopback(&b)
        && a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.path() == b.path()
        && a.query() == b.query()
}

fn render(emu: &Emu, trace: &Trace, reply: Reply, secure: bool) -> Response {
    let mut resp = match reply.outcome {
        Outcome::Page(html) => (StatusCode::OK, Html(html)).into_response(),
        Outcome::ErrorPage(e) => {
            emu.faults().count_error(e.code);
            tracing::info!(code = e.code, "sign-in error page: {}", e.message);
            let page = html::error(&e.headline(), e.code, &trace.trace_id, &trace.correlation_id, &trace.timestamp);
            (StatusCode::BAD_REQUEST, Html(page)).into_response()
        }
        Outcome::Redirect { target, mut fields, error } => {
            if let Some(code) = error {
                emu.faults().count_error(code);
            }
            if let Some(s) = &target.state {
                fields.push(("state".into(), s.clone()));
            }
            deliver(&target, &fields)
        }
    };
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store, no-cache"));
    if let Ok(v) = HeaderValue::from_str(&trace.trace_id) {
        h.insert("x-ms-request-id", v);
    }
    if let Some(id) = reply.set_sso {
        let attrs = if secure { "; Secure; SameSite=None" } else { "; SameSite=Lax" };
        if let Ok(v) = HeaderValue::from_str(&format!("{SSO_COOKIE}={id}; Path=/; HttpOnly{attrs}")) {
            h.append(header::SET_COOKIE, v);
        }
    }
    resp
}

/// Sends fields to the client's redirect URI in the requested response mode.
fn deliver(target: &Target, fields: &[(String, String)]) -> Response {
    if target.mode == "form_post" {
        return (StatusCode::OK, Html(html::form_post(&target.redirect_uri, fields))).into_response();
    }
    let Ok(mut url) = url::Url::parse(&target.redirect_uri) else {
        return (StatusCode::BAD_REQUEST, "bad redirect_uri").into_response();
    };
    if target.mode == "fragment" {
        let mut ser = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in fields {
            ser.append_pair(k, v);
        }
        url.set_fragment(Some(&ser.finish()));
    } else {
        let mut q = url.query_pairs_mut();
        for (k, v) in fields {
            q.append_pair(k, v);
        }
    }
    let mut resp = StatusCode::FOUND.into_response();
    if let Ok(v) = HeaderValue::from_str(url.as_str()) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

fn is_secure(emu: &Emu) -> bool {
    emu.base_url.starts_with("https://")
}

pub(crate) async fn authorize(
    State(emu): State<Arc<Emu>>,
    Path(tenant): Path<String>,
    method: Method,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    let mut params = query.map(|q| parse_params(q.as_bytes())).unwrap_or_default();
    if method == Method::POST {
        params.extend(parse_params(&body));
    }
    let trace = Trace::new(&headers, emu.clock.now_ms());
    let reply = start(&emu, &tenant, &params, cookie(&headers, SSO_COOKIE), &trace);
    render(&emu, &trace, reply, is_secure(&emu))
}

fn start(emu: &Emu, tenant_raw: &str, p: &Params, sso: Option<String>, trace: &Trace) -> Reply {
    let now_ms = emu.clock.now_ms();
    let mut g = emu.lock();
    g.maybe_prune(now_ms);
    let Some(path) = g.tenant_path(tenant_raw) else {
        return Outcome::ErrorPage(StsError::tenant_not_found(tenant_raw)).into();
    };
    let Some(client_id) = p.get("client_id").filter(|s| !s.is_empty()) else {
        return Outcome::ErrorPage(StsError::missing("client_id")).into();
    };
    let Some(app) = g.app(client_id).cloned() else {
        return Outcome::ErrorPage(StsError::app_not_found(client_id, tenant_raw)).into();
    };
    match &path {
        TenantPath::Tenant(t) if !g.app_usable_in(&app, t) => {
            return Outcome::ErrorPage(StsError::app_not_found(client_id, tenant_raw)).into();
        }
        TenantPath::Consumers => {
            return Outcome::ErrorPage(StsError::new(
                "invalid_request",
                9002332,
                format!(
                    "Application '{client_id}'({}) is configured for use by Azure Active Directory users only. Please \
                     do not use the /consumers endpoint to serve this request.",
                    app.spec.name
                ),
            ))
            .into();
        }
        p if p.is_multi() && !app.spec.multi_tenant => {
            return Outcome::ErrorPage(StsError::single_tenant_on_common(client_id, &app.spec.name)).into();
        }
        _ => {}
    }
    let Some(redirect_uri) = p.get("redirect_uri").filter(|s| !s.is_empty()) else {
        return Outcome::ErrorPage(StsError::new("invalid_request", 900971, "No reply address provided.")).into();
    };
    if !app.spec.redirect_uris.iter().any(|r| redirect_matches(r, redirect_uri)) {
        return Outcome::ErrorPage(StsError::new(
            "invalid_request",
            50011,
            format!(
                "The redirect URI '{redirect_uri}' specified in the request does not match the redirect URIs \
                 configured for the application '{client_id}'. Make sure the redirect URI sent in the request matches \
                 one added to your application in the Azure portal. Navigate to https://aka.ms/redirectUriMismatchError \
                 to learn more about how to fix this."
            ),
        ))
        .into();
    }
    // From here on errors go back to the (now trusted) redirect URI.
    let mode = p.get("response_mode").cloned().unwrap_or_else(|| "query".into());
    let target = Target { redirect_uri: redirect_uri.clone(), mode: mode.clone(), state: p.get("state").cloned() };
    if !matches!(mode.as_str(), "query" | "fragment" | "form_post") {
        let t = Target { mode: "query".into(), ..target };
        let e = StsError::new(
            "invalid_request",
            70007,
            format!("The response_mode '{mode}' is not supported; use 'query', 'fragment' or 'form_post'."),
        );
        return redirect_error(&t, trace, e, None).into();
    }
    match p.get("response_type").map(String::as_str) {
        None | Some("") => return redirect_error(&target, trace, StsError::missing("response_type"), None).into(),
        Some("code") => {}
        Some(rt) if rt.split(' ').any(|t| t == "id_token") => {
            let e = StsError::new(
                "unsupported_response_type",
                700054,
                "response_type 'id_token' is not enabled for the application.",
            );
            return redirect_error(&target, trace, e, None).into();
        }
        Some(rt) => {
            let e = StsError::new(
                "unsupported_response_type",
                70005,
                format!("The app requested an unsupported response type '{rt}'. Use 'code'."),
            );
            return redirect_error(&target, trace, e, None).into();
        }
    }
    let raw_scopes = scopes::split(p.get("scope").map(String::as_str).unwrap_or_default());
    if raw_scopes.is_empty() {
        return redirect_error(&target, trace, StsError::missing("scope"), None).into();
    }
    let tenant_for_scopes = match &path {
        TenantPath::Tenant(t) => g.tenant_by_id(t).cloned(),
        _ => g.tenant_by_id(&app.tenant_id).cloned(),
    }
    .expect("resolved tenant exists");
    let parsed = match g.parse_scopes(&tenant_for_scopes, &raw_scopes) {
        Ok(s) => s,
        Err(b) => return redirect_error(&target, trace, StsError::invalid_scope(&b.0), None).into(),
    };
    for perm in scopes::permissions(&parsed) {
        if tenant_for_scopes.generic() {
            break;
        }
        if !g.resource_known(&perm.resource) {
            let e = StsError::resource_not_found(&perm.resource.uri, tenant_for_scopes.display());
            return redirect_error(&target, trace, e, None).into();
        }
        if !g.permission_exists(&tenant_for_scopes, &app, perm) {
            let e = StsError::new(
                "invalid_client",
                650053,
                format!(
                    "The application '{}' asked for scope '{}' that doesn't exist on the resource '{}'. Contact the \
                     app vendor.",
                    app.spec.name, perm.name, perm.resource.id
                ),
            );
            return redirect_error(&target, trace, e, None).into();
        }
    }
    let prompt = p.get("prompt").cloned();
    if let Some(pr) = &prompt
        && !matches!(pr.as_str(), "login" | "none" | "consent" | "select_account")
    {
        let e = StsError::new("invalid_request", 90100, format!("The 'prompt' parameter value '{pr}' is not valid."));
        return redirect_error(&target, trace, e, None).into();
    }
    let challenge = match (p.get("code_challenge"), p.get("code_challenge_method")) {
        (None, None) => None,
        (None, Some(_)) => return redirect_error(&target, trace, StsError::missing("code_challenge"), None).into(),
        (Some(c), m) => {
            let method = match m.map(String::as_str) {
                None | Some("plain") => PkceMethod::Plain,
                Some("S256") => PkceMethod::S256,
                Some(other) => {
                    let e = StsError::new(
                        "invalid_request",
                        90100,
                        format!("The code_challenge_method '{other}' is not supported; use 'S256' or 'plain'."),
                    );
                    return redirect_error(&target, trace, e, None).into();
                }
            };
            if !(43..=128).contains(&c.len()) {
                let e = StsError::new("invalid_request", 501491, "Invalid size of Code_Challenge parameter.");
                return redirect_error(&target, trace, e, None).into();
            }
            Some((c.clone(), method))
        }
    };
    let offline = scopes::has_oidc(&parsed, "offline_access") || p.get("access_type").is_some_and(|v| v == "offline");
    let flow = Flow {
        id: random_token(24),
        path: path.clone(),
        path_raw: tenant_raw.to_string(),
        client_id: client_id.clone(),
        redirect_uri: redirect_uri.clone(),
        response_mode: mode,
        state: target.state.clone(),
        nonce: p.get("nonce").cloned(),
        scopes: raw_scopes,
        prompt: prompt.clone(),
        challenge,
        offline,
        created_ms: now_ms,
        stage: FlowStage::SignIn,
        user: None,
        session_seq: 0,
        auth_time_s: 0,
        mfa_done: false,
        sso: None,
    };
    let id = flow.id.clone();
    g.flows.insert(id.clone(), flow);
    // Single sign-on: a live session cookie skips the password, unless the client forces a prompt.
    let forced = matches!(prompt.as_deref(), Some("login" | "select_account"));
    let session = sso.filter(|_| !forced).and_then(|s| g.sso.get(&s).cloned().map(|v| (s, v)));
    if let Some((sid, s)) = session {
        let allowed = match &path {
            TenantPath::Tenant(t) => *t == s.tenant_id,
            _ => true,
        };
        let live = g.user(&s.tenant_id, &s.user_oid).is_some_and(|u| u.revoked_for(s.session_seq).is_none());
        if allowed && live {
            let f = g.flows.get_mut(&id).expect("flow just inserted");
            f.user = Some((s.tenant_id.clone(), s.user_oid.clone()));
            f.session_seq = s.session_seq;
            f.auth_time_s = s.auth_time_s;
            f.mfa_done = s.mfa;
            f.sso = Some(sid);
            return after_sign_in(&mut g, emu, &id, trace).into();
        }
    }
    if prompt.as_deref() == Some("none") {
        let e = StsError::new(
            "login_required",
            50058,
            "A silent sign-in request was sent but no user is signed in. The cookies used to represent the user's \
             session were not sent in the request to Azure AD.",
        );
        return redirect_error(&target, trace, e, None).into();
    }
    let hint = p.get("login_hint").cloned().unwrap_or_default();
    Outcome::Page(html::sign_in(
        &format!("/{tenant_raw}/login"),
        &id,
        &app.spec.name,
        tenant_for_scopes.display(),
        &hint,
        None,
    ))
    .into()
}

fn target_of(f: &Flow) -> Target {
    Target { redirect_uri: f.redirect_uri.clone(), mode: f.response_mode.clone(), state: f.state.clone() }
}

/// The user is known: MFA, consent, then the code.
fn after_sign_in(g: &mut Inner, emu: &Emu, flow_id: &str, trace: &Trace) -> Outcome {
    let Some(flow) = g.flows.get(flow_id).cloned() else {
        return stale_flow();
    };
    let (tid, oid) = flow.user.clone().expect("signed in");
    let (Some(user), Some(app), Some(tenant)) =
        (g.user(&tid, &oid).cloned(), g.app(&flow.client_id).cloned(), g.tenant_by_id(&tid).cloned())
    else {
        return stale_flow();
    };
    let target = target_of(&flow);
    let silent = flow.prompt.as_deref() == Some("none");
    if user.spec.blocked_by_conditional_access {
        let e = StsError::new(
            "access_denied",
            53003,
            "Access has been blocked by Conditional Access policies. The access policy does not allow token issuance.",
        );
        return if silent { redirect_error(&target, trace, e, None) } else { Outcome::ErrorPage(e) };
    }
    if user.spec.mfa_required && !flow.mfa_done {
        if silent {
            let e = StsError::new(
                "interaction_required",
                50076,
                "Due to a configuration change made by your administrator, or because you moved to a new location, \
                 you must use multi-factor authentication to access this resource.",
            );
            return redirect_error(&target, trace, e, None);
        }
        g.flows.get_mut(flow_id).expect("flow exists").stage = FlowStage::Mfa;
        return Outcome::Page(html::mfa(&format!("/{}/mfa", flow.path_raw), flow_id, &user.spec.username, None));
    }
    let parsed = g.parse_scopes(&tenant, &flow.scopes).unwrap_or_default();
    let granted = g.granted(&tenant, &app, &user);
    let missing: Vec<_> = scopes::permissions(&parsed)
        .into_iter()
        .filter(|p| !p.is_default() && !granted.iter().any(|q| q.key() == p.key()))
        .cloned()
        .collect();
    let forced = flow.prompt.as_deref() == Some("consent");
    if !missing.is_empty() || forced {
        if silent {
            let e = crate::token::consent_missing(&app);
            let e = StsError::new("consent_required", e.code, e.message);
            return redirect_error(&target, trace, e, None);
        }
        if !tenant.spec.user_consent_allowed && !missing.is_empty() {
            return Outcome::ErrorPage(StsError::new(
                "access_denied",
                90094,
                format!(
                    "{} needs permission to access resources in your organization that only an admin can grant. \
                     Please ask an admin to grant permission to this app before you can use it.",
                    app.spec.name
                ),
            ));
        }
        g.flows.get_mut(flow_id).expect("flow exists").stage = FlowStage::Consent;
        let labels = parsed
            .iter()
            .filter_map(|s| match s {
                Scope::Oidc(o) if o == "offline_access" => {
                    Some((o.clone(), "Maintain access to data you have given it access to".to_string()))
                }
                Scope::Oidc(o) if o == "openid" => Some((o.clone(), "Sign you in and read your profile".to_string())),
                Scope::Oidc(_) => None,
                Scope::Perm(p) => Some((p.full(), p.full())),
            })
            .collect::<Vec<_>>();
        return Outcome::Page(html::consent(
            &format!("/{}/consent", flow.path_raw),
            flow_id,
            &app.spec.name,
            &user.spec.username,
            &labels,
        ));
    }
    issue_code(g, emu, flow_id)
}

fn issue_code(g: &mut Inner, emu: &Emu, flow_id: &str) -> Outcome {
    let Some(flow) = g.flows.remove(flow_id) else {
        return stale_flow();
    };
    let (tid, oid) = flow.user.clone().expect("signed in");
    let code = format!("1.emu.{}", random_token(48));
    g.codes.insert(
        code.clone(),
        AuthCode {
            client_id: flow.client_id.clone(),
            tenant_id: tid,
            path: flow.path.clone(),
            redirect_uri: flow.redirect_uri.clone(),
            scopes: flow.scopes.clone(),
            user_oid: oid,
            challenge: flow.challenge.clone(),
            nonce: flow.nonce.clone(),
            issued_ms: emu.clock.now_ms(),
            session_seq: flow.session_seq,
            auth_time_s: flow.auth_time_s,
            mfa: flow.mfa_done,
            offline: flow.offline,
            redeemed: false,
        },
    );
    let mut fields = vec![("code".to_string(), code)];
    if let Some(s) = &flow.sso {
        fields.push(("session_state".into(), s.clone()));
    }
    Outcome::Redirect { target: target_of(&flow), fields, error: None }
}

fn stale_flow() -> Outcome {
    Outcome::ErrorPage(StsError::new(
        "invalid_request",
        50089,
        "Authentication failed due to flow token expired. Start the sign-in again from the application.",
    ))
}

/// The flow a form post continues, if it is still alive.
fn live_flow(g: &Inner, form: &Params, now_ms: i64, stage: FlowStage) -> Option<Flow> {
    let f = g.flows.get(form.get("flow")?)?;
    (now_ms - f.created_ms < FLOW_LIFETIME_MS && f.stage == stage).then(|| f.clone())
}

pub(crate) async fn login_post(
    State(emu): State<Arc<Emu>>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let now_ms = emu.clock.now_ms();
    let trace = Trace::new(&headers, now_ms);
    let form = parse_params(&body);
    let reply = {
        let mut g = emu.lock();
        sign_in(&mut g, &emu, &tenant, &form, now_ms, &trace)
    };
    render(&emu, &trace, reply, is_secure(&emu))
}

fn sign_in(g: &mut Inner, emu: &Emu, tenant_raw: &str, form: &Params, now_ms: i64, trace: &Trace) -> Reply {
    let Some(flow) = live_flow(g, form, now_ms, FlowStage::SignIn) else {
        return stale_flow().into();
    };
    let app = g.app(&flow.client_id).cloned().expect("flows name existing apps");
    let username = form.get("username").map(|s| s.trim().to_string()).unwrap_or_default();
    let password = form.get("password").cloned().unwrap_or_default();
    let scope_tenant = match &flow.path {
        TenantPath::Tenant(t) => Some(t.clone()),
        _ => None,
    };
    let dir_name = scope_tenant
        .as_deref()
        .and_then(|t| g.tenant_by_id(t))
        .map(|t| t.display().to_string())
        .unwrap_or_else(|| "Microsoft".into());
    // Wrong user name or password: the sign-in page again, with the error, for the same flow.
    let again = |e: StsError| -> Reply {
        emu.faults().count_error(e.code);
        Outcome::Page(html::sign_in(
            &format!("/{tenant_raw}/login"),
            &flow.id,
            &app.spec.name,
            &dir_name,
            &username,
            Some(&e.headline()),
        ))
        .into()
    };
    let Some(user) = g.user_by_name(scope_tenant.as_deref(), &username).cloned() else {
        let e = StsError::new(
            "invalid_request",
            50034,
            format!(
                "The user account {username} does not exist in the '{dir_name}' directory. To sign into this \
                 application, the account must be added to the directory."
            ),
        );
        return again(e);
    };
    if user.spec.password != password {
        return again(StsError::new(
            "invalid_grant",
            50126,
            "Error validating credentials due to invalid username or password.",
        ));
    }
    if !g.app_usable_in(&app, &user.tenant_id) {
        return Outcome::ErrorPage(StsError::app_not_found(&app.client_id, &user.tenant_id)).into();
    }
    let seq = g.next_seq();
    let auth_time_s = now_ms / MS;
    let sid = random_token(24);
    g.sso.insert(
        sid.clone(),
        SsoSession {
            tenant_id: user.tenant_id.clone(),
            user_oid: user.oid.clone(),
            session_seq: seq,
            auth_time_s,
            mfa: false,
        },
    );
    let f = g.flows.get_mut(&flow.id).expect("flow exists");
    f.user = Some((user.tenant_id.clone(), user.oid.clone()));
    f.session_seq = seq;
    f.auth_time_s = auth_time_s;
    f.mfa_done = false;
    f.sso = Some(sid.clone());
    tracing::info!(user = %user.spec.username, client_id = %app.client_id, "signed in");
    Reply { outcome: after_sign_in(g, emu, &flow.id, trace), set_sso: Some(sid) }
}

pub(crate) async fn mfa_post(
    State(emu): State<Arc<Emu>>,
    Path(_tenant): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let now_ms = emu.clock.now_ms();
    let trace = Trace::new(&headers, now_ms);
    let form = parse_params(&body);
    let reply: Reply = {
        let mut g = emu.lock();
        match live_flow(&g, &form, now_ms, FlowStage::Mfa) {
            None => stale_flow().into(),
            Some(flow) => {
                let (tid, oid) = flow.user.clone().expect("signed in");
                let user = g.user(&tid, &oid).cloned();
                match user {
                    None => stale_flow().into(),
                    Some(u) if form.get("otp").map(|s| s.trim()) != Some(u.mfa_code()) => {
                        let e = StsError::new(
                            "invalid_grant",
                            500121,
                            "Authentication failed during strong authentication request. The code is not correct.",
                        );
                        emu.faults().count_error(e.code);
                        Outcome::Page(html::mfa(
                            &format!("/{}/mfa", flow.path_raw),
                            &flow.id,
                            &u.spec.username,
                            Some(&e.headline()),
                        ))
                        .into()
                    }
                    Some(_) => {
                        let f = g.flows.get_mut(&flow.id).expect("flow exists");
                        f.mfa_done = true;
                        f.stage = FlowStage::SignIn;
                        if let Some(s) = flow.sso.as_ref().and_then(|s| g.sso.get_mut(s)) {
                            s.mfa = true;
                        }
                        after_sign_in(&mut g, &emu, &flow.id, &trace).into()
                    }
                }
            }
        }
    };
    render(&emu, &trace, reply, is_secure(&emu))
}

pub(crate) async fn consent_post(
    State(emu): State<Arc<Emu>>,
    Path(_tenant): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let now_ms = emu.clock.now_ms();
    let trace = Trace::new(&headers, now_ms);
    let form = parse_params(&body);
    let reply: Reply = {
        let mut g = emu.lock();
        match live_flow(&g, &form, now_ms, FlowStage::Consent) {
            None => stale_flow().into(),
            Some(flow) if form.get("action").map(String::as_str) != Some("accept") => {
                g.flows.remove(&flow.id);
                let e = StsError::new("access_denied", 65004, "User declined to consent to access the app.");
                redirect_error(&target_of(&flow), &trace, e, Some("cancel")).into()
            }
            Some(flow) => {
                let (tid, oid) = flow.user.clone().expect("signed in");
                let tenant = g.tenant_by_id(&tid).cloned().expect("tenant of a user");
                let parsed = g.parse_scopes(&tenant, &flow.scopes).unwrap_or_default();
                let consented: Vec<String> = flow
                    .scopes
                    .iter()
                    .zip(&parsed)
                    .filter(|(_, s)| matches!(s, Scope::Perm(p) if !p.is_default()))
                    .map(|(raw, _)| raw.clone())
                    .collect();
                if let Some(u) = g.user_mut(&tid, &oid) {
                    let list = u.consents.entry(flow.client_id.clone()).or_default();
                    for s in consented {
                        if !list.iter().any(|x| x.eq_ignore_ascii_case(&s)) {
                            list.push(s);
                        }
                    }
                }
                tracing::info!(client_id = %flow.client_id, "consent granted");
                issue_code(&mut g, &emu, &flow.id).into()
            }
        }
    };
    render(&emu, &trace, reply, is_secure(&emu))
}

/// `GET /{tenant}/oauth2/v2.0/logout`: ends the SSO session, then goes to
/// `post_logout_redirect_uri` if given.
pub(crate) async fn logout(
    State(emu): State<Arc<Emu>>,
    Path(_tenant): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let params = query.map(|q| parse_params(q.as_bytes())).unwrap_or_default();
    if let Some(sid) = cookie(&headers, SSO_COOKIE) {
        emu.lock().sso.remove(&sid);
    }
    let mut resp = match params.get("post_logout_redirect_uri").and_then(|u| url::Url::parse(u).ok()) {
        Some(u) => {
            let mut r = StatusCode::FOUND.into_response();
            if let Ok(v) = HeaderValue::from_str(u.as_str()) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            r
        }
        None => Html(html::info("You signed out of your account", &["It's a good idea to close all browser windows."]))
            .into_response(),
    };
    if let Ok(v) = HeaderValue::from_str(&format!("{SSO_COOKIE}=; Path=/; Max-Age=0")) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_redirects_ignore_the_port() {
        assert!(redirect_matches("http://localhost/cb", "http://localhost:5000/cb"));
        assert!(redirect_matches(
            "http://127.0.0.1:1/wm/externalAuth/redirect.html",
            "http://127.0.0.1:4321/wm/externalAuth/redirect.html"
        ));
        assert!(!redirect_matches("http://localhost/cb", "http://localhost:5000/other"));
        assert!(!redirect_matches("https://app.example/cb", "https://app.example:444/cb"));
        assert!(!redirect_matches("https://app.example/cb", "https://app.example/CB"));
    }
}
