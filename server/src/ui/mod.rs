//! The web UI's handlers: server-rendered pages (templates and view models in
//! the `slipway-web` crate), sign-in with a session cookie, CSRF tokens on
//! every form, and the static assets. Pages are read-only views of the same
//! data as the REST API; the pages' script calls that API with the session
//! cookie for live updates.

use axum::extract::{Form, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use slipway_web::askama::Template;

use crate::app::AppState;
use crate::auth::sessions;
use crate::auth::users::User;

mod deploys;
mod images;
mod log;
mod pipeline;
mod queue;

pub fn router() -> Router<AppState> {
    Router::new()
        .merge(log::router())
        .merge(pipeline::router())
        .merge(deploys::router())
        .merge(images::router())
        .merge(queue::router())
        .route("/", get(dashboard))
        .route("/signin", get(signin_page).post(signin))
        .route("/signout", post(signout))
        .route("/static/app.css", get(css))
        .route("/static/app.js", get(js))
}

/// What every page's response carries: no framing, no sniffing, scripts and
/// styles only from this server.
/// Static assets are addressed by `?v=<hash of them all>`, so a browser may
/// keep them as long as it likes.
pub(crate) const ASSET_CACHE: &str = "public, max-age=31536000, immutable";

pub(crate) fn page(body: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'",
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "same-origin"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

pub(crate) fn render(t: impl Template) -> Response {
    match t.render() {
        Ok(body) => page(body),
        Err(e) => {
            tracing::error!(error = %e, "rendering a page failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "rendering the page failed",
            )
                .into_response()
        }
    }
}

async fn css() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, ASSET_CACHE),
        ],
        slipway_web::APP_CSS,
    )
        .into_response()
}

async fn js() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, ASSET_CACHE),
        ],
        slipway_web::APP_JS,
    )
        .into_response()
}

/// The signed-in user of a page request, or a redirect to sign in.
pub struct Viewer {
    pub user: User,
    pub csrf: String,
}

impl Viewer {
    pub fn nav(&self) -> Option<slipway_web::Nav> {
        Some(slipway_web::Nav {
            user: self.user.username.clone(),
            role: self.user.role.as_str().to_owned(),
            csrf: self.csrf.clone(),
        })
    }
}

impl axum::extract::FromRequestParts<AppState> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        app: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let back = || {
            let here = parts
                .uri
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/");
            Redirect::to(&format!("/signin?next={}", encode(here))).into_response()
        };
        let Some(token) = sessions::cookie(&parts.headers, sessions::COOKIE) else {
            return Err(back());
        };
        match sessions::lookup(&app.db, token).await {
            Ok(Some((user, csrf))) => Ok(Viewer { user, csrf }),
            Ok(None) => Err(back()),
            Err(e) => {
                tracing::error!(error = %e, "reading a session failed");
                Err((
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the database is unavailable",
                )
                    .into_response())
            }
        }
    }
}

/// Percent-encoding for a query value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Only a path on this server may follow a sign-in: one `/` and then a path
/// character. Browsers drop tabs and newlines from a `Location` and read `\`
/// as `/`, so `/\t/evil.example` or `/\evil.example` would leave the site.
/// Refused: a second `/`, a `\` anywhere, any control character, space or
/// non-ASCII byte; and, in case a later hop decodes it once more, a value
/// whose percent-decoding a browser would read as `//…` or `/\…`. Anything
/// refused goes to `/`.
fn local_path(next: &str) -> &str {
    let bytes = next.as_bytes();
    let plain = bytes.first() == Some(&b'/')
        && bytes.get(1) != Some(&b'/')
        && bytes.iter().all(|&b| b.is_ascii_graphic() && b != b'\\');
    if plain && !leaves_the_site(&percent_decode(bytes)) {
        next
    } else {
        "/"
    }
}

/// Whether a browser would read `location` as another origin (or scheme):
/// after the URL parser's clean-up (leading and trailing C0 controls and
/// spaces trimmed, tabs and newlines removed) it does not start with one `/`
/// followed by something other than `/` or `\`.
fn leaves_the_site(location: &[u8]) -> bool {
    let trimmed = location
        .iter()
        .position(|&b| b > b' ')
        .map_or(&[][..], |start| {
            let end = location.iter().rposition(|&b| b > b' ').unwrap_or(start);
            &location[start..=end]
        });
    let mut cleaned = trimmed
        .iter()
        .filter(|&&b| !matches!(b, b'\t' | b'\n' | b'\r'));
    cleaned.next() != Some(&b'/') || matches!(cleaned.next(), Some(b'/' | b'\\'))
}

/// `%XX` sequences as bytes; anything else (a lone `%` too) as it is.
fn percent_decode(s: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' && i + 2 < s.len() {
            if let (Some(h), Some(l)) = (hex(s[i + 1]), hex(s[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(s[i]);
        i += 1;
    }
    out
}

fn secure_flag(app: &AppState) -> &'static str {
    match &app.auth.public_url {
        Some(u) if u.starts_with("https://") => "; Secure",
        None if app.settings.tls() => "; Secure",
        _ => "",
    }
}

#[derive(Deserialize)]
struct NextQuery {
    next: Option<String>,
}

async fn signin_page(
    State(app): State<AppState>,
    axum::extract::Query(q): axum::extract::Query<NextQuery>,
) -> Response {
    signin_form(&app, None, q.next.as_deref().unwrap_or("/"), StatusCode::OK)
}

/// The sign-in form with a fresh login token, also set as a cookie: the form
/// must send it back (a page on another site cannot read the cookie).
fn signin_form(app: &AppState, error: Option<String>, next: &str, status: StatusCode) -> Response {
    let token = sessions::random_token();
    let mut response = render(slipway_web::SignIn {
        nav: None,
        error,
        next: local_path(next).to_owned(),
        login_csrf: token.clone(),
    });
    *response.status_mut() = status;
    if let Ok(v) = format!(
        "{}={token}; Path=/signin; HttpOnly; SameSite=Strict; Max-Age=3600{}",
        sessions::LOGIN_COOKIE,
        secure_flag(app)
    )
    .parse()
    {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
    response
}

#[derive(Deserialize)]
struct SignInForm {
    username: String,
    password: String,
    csrf: String,
    #[serde(default)]
    next: String,
}

async fn signin(
    State(app): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<SignInForm>,
) -> Response {
    let expected = sessions::cookie(&headers, sessions::LOGIN_COOKIE).unwrap_or("");
    if expected.is_empty() || !sessions::same(expected, &form.csrf) {
        return signin_form(
            &app,
            Some("The sign-in form expired or did not come from this server; try again.".into()),
            &form.next,
            StatusCode::FORBIDDEN,
        );
    }
    let user =
        match crate::auth::users::check_password(&app.db, &form.username, &form.password).await {
            Ok(Some(user)) => user,
            Ok(None) => {
                tracing::info!(user = %form.username, "web sign-in refused");
                return signin_form(
                    &app,
                    Some("Wrong user name or password.".into()),
                    &form.next,
                    StatusCode::UNAUTHORIZED,
                );
            }
            Err(e) => {
                tracing::error!(error = %e, "sign-in failed");
                return (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the database is unavailable",
                )
                    .into_response();
            }
        };
    let (token, _csrf) = match sessions::create(&app.db, &user).await {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "creating a session failed");
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "the database is unavailable",
            )
                .into_response();
        }
    };
    let mut response = Redirect::to(local_path(&form.next)).into_response();
    let cookie = format!(
        "{}={token}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}{}",
        sessions::COOKIE,
        sessions::LIFETIME_MS / 1000,
        secure_flag(&app)
    );
    if let Ok(v) = cookie.parse() {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
    response
}

#[derive(Deserialize)]
struct CsrfForm {
    csrf: String,
}

async fn signout(
    State(app): State<AppState>,
    viewer: Viewer,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    if !sessions::same(&form.csrf, &viewer.csrf) {
        return (
            StatusCode::FORBIDDEN,
            "the form's CSRF token does not match the session",
        )
            .into_response();
    }
    if let Some(token) = sessions::cookie(&headers, sessions::COOKIE) {
        let _ = sessions::delete(&app.db, token).await;
    }
    let mut response = Redirect::to("/signin").into_response();
    if let Ok(v) = format!(
        "{}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0",
        sessions::COOKIE
    )
    .parse()
    {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
    response
}

async fn dashboard(State(app): State<AppState>, viewer: Viewer) -> Response {
    let list =
        match crate::api::pipelines::recent(&app, None, &crate::api::SqlScope::all(), 25).await {
            Ok(list) => list,
            Err(e) => return e.into_response(),
        };
    let pipelines = list.into_iter().map(pipeline::row).collect();
    let deployments = match pipeline::deployment_links(&app, None).await {
        Ok(d) => d,
        Err(e) => return crate::api::ApiError::from(e).into_response(),
    };
    render(slipway_web::Dashboard {
        nav: viewer.nav(),
        pipelines,
        deployments,
    })
}
