//! Slipway's web UI: the pages as askama templates (`templates/`), their view
//! models, and the static assets (`static/`: one stylesheet, one small
//! hand-written script; nothing from a CDN, so the server works offline).
//! The handlers that fill these views live in the server crate (`server::ui`).

pub use askama;

pub mod log;
use askama::Template;

pub const APP_CSS: &str = include_str!("../static/app.css");
pub const APP_JS: &str = include_str!("../static/app.js");

/// The signed-in user, shown in the header (with the sign-out form's token).
#[derive(Debug, Clone)]
pub struct Nav {
    pub user: String,
    pub role: String,
    pub csrf: String,
}

/// A status as text plus an icon, so it never depends on colour alone.
pub fn status_icon(status: &str) -> &'static str {
    match status {
        "success" => "✔",
        "failure" => "✘",
        "error" => "⚠",
        "running" | "leased" => "▶",
        "pending" | "queued" => "…",
        "blocked" => "⏸",
        "cancelled" => "⊘",
        "skipped" => "↷",
        _ => "•",
    }
}

#[derive(Template)]
#[template(path = "signin.html")]
pub struct SignIn {
    pub nav: Option<Nav>,
    pub error: Option<String>,
    /// Where to go after signing in (a local path).
    pub next: String,
    /// Double-submitted with the login cookie.
    pub login_csrf: String,
}

/// One row of the dashboard.
#[derive(Debug, Clone)]
pub struct PipelineRow {
    pub id: i64,
    pub repo: String,
    pub number: i64,
    pub status: String,
    pub icon: &'static str,
    pub git_ref: String,
    pub commit_short: String,
    pub message: String,
    pub author: String,
    pub duration: String,
    pub trigger: String,
}

#[derive(Template)]
#[template(path = "dashboard.html")]
pub struct Dashboard {
    pub nav: Option<Nav>,
    pub pipelines: Vec<PipelineRow>,
}

/// `90` → `1m 30s`.
pub fn duration(ms: i64) -> String {
    let s = (ms.max(0) + 500) / 1000;
    if s < 60 {
        format!("{s}s")
    } else {
        format!("{}m {}s", s / 60, s % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_from_users_is_escaped() {
        let page = Dashboard {
            nav: Some(Nav {
                user: "<b>eve</b>".into(),
                role: "user".into(),
                csrf: "t".into(),
            }),
            pipelines: vec![PipelineRow {
                id: 1,
                repo: "r".into(),
                number: 1,
                status: "success".into(),
                icon: status_icon("success"),
                git_ref: "main".into(),
                commit_short: "abc".into(),
                message: "<script>alert(1)</script>".into(),
                author: "a".into(),
                duration: duration(90_000),
                trigger: "t".into(),
            }],
        }
        .render()
        .unwrap();
        assert!(!page.contains("<script>alert"), "{page}");
        assert!(
            page.contains("&#60;script&#62;") || page.contains("&lt;script&gt;"),
            "{page}"
        );
        assert!(page.contains("1m 30s"));
        assert!(!page.contains("<b>eve</b>"));
    }
}
