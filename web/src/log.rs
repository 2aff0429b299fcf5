//! The step log page: a server-rendered shell (step, job, status, the tools)
//! and `static/log.js`, which draws the log itself.
//!
//! The script is a virtual scroller: a spacer as tall as all the lines (at a
//! fixed line height; scaled down past what browsers can lay out) and a window
//! of the ~200 lines around the viewport, fetched from the REST API in chunks
//! of 1,000 (`log?from_line=&to_line=&format=json`, a small LRU of chunks). It
//! opens at the tail, follows a running step over `log/stream` (sticking to
//! the bottom only while the reader is there), draws ANSI colours as classes
//! (SGR 30–37, 90–97, 40–47, bold; other escapes removed), links every line
//! (`#L12`, `#L10-L20`), searches on the server (`log/search`), and shows
//! each line's time on request. Log text only ever reaches the page through
//! `textContent`. The data it needs is in the `#log` element's `data-*`
//! attributes (the CSP allows no inline script).

use askama::Template;

use crate::Nav;

pub const LOG_JS: &str = include_str!("../static/log.js");
pub const LOG_CSS: &str = include_str!("../static/log.css");

/// `/jobs/{job}/steps/{position}`.
#[derive(Template)]
#[template(path = "log.html")]
pub struct LogPage {
    pub nav: Option<Nav>,
    pub job: i64,
    pub position: i64,
    pub step: String,
    pub job_name: String,
    pub pipeline_id: i64,
    pub repo: String,
    pub number: i64,
    pub status: String,
    pub icon: &'static str,
    pub exit_code: Option<i64>,
    pub duration: String,
    /// The job attempt whose log is shown.
    pub attempt: i64,
    /// Every attempt of the job so far (links when more than one).
    pub attempts: Vec<i64>,
    /// Lines in the log when the page was made.
    pub total_lines: u64,
    /// The step may still write: the script follows the log live.
    pub live: bool,
    /// The last lines (number, plain text), on screen before the script runs.
    pub tail: Vec<(u64, String)>,
}

impl LogPage {
    /// The API path of this step's log.
    pub fn api(&self) -> String {
        format!("/api/v1/jobs/{}/steps/{}/log", self.job, self.position)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page() -> LogPage {
        LogPage {
            nav: None,
            job: 7,
            position: 2,
            step: "<img src=x onerror=alert(1)>".into(),
            job_name: "te\"st".into(),
            pipeline_id: 3,
            repo: "team/app".into(),
            number: 4,
            status: "running".into(),
            icon: crate::status_icon("running"),
            exit_code: None,
            duration: "5s".into(),
            attempt: 2,
            attempts: vec![1, 2],
            total_lines: 12,
            live: true,
            tail: vec![(12, "<b>last</b> line".into())],
        }
    }

    #[test]
    fn names_are_escaped_and_the_script_gets_its_data_in_attributes() {
        let html = page().render().unwrap();
        assert!(!html.contains("<img src=x"), "{html}");
        assert!(!html.contains("te\"st"), "{html}");
        assert!(html.contains("data-job=\"7\""), "{html}");
        assert!(html.contains("data-attempt=\"2\""), "{html}");
        assert!(html.contains("data-lines=\"12\""), "{html}");
        assert!(html.contains("data-live=\"true\""), "{html}");
        assert!(html.contains("href=\"/pipelines/3\""), "{html}");
        // The tail comes with the page, escaped.
        assert!(
            html.contains("&#60;b&#62;last&#60;/b&#62; line") || html.contains("&lt;b&gt;last"),
            "{html}"
        );
        assert!(
            html.contains("/api/v1/jobs/7/steps/2/log?download=1&amp;attempt=2")
                || html.contains("/api/v1/jobs/7/steps/2/log?download=1&#38;attempt=2"),
            "{html}"
        );
        // No inline script or style for the CSP to refuse.
        assert!(
            !html.contains("<script>") && !html.contains("style="),
            "{html}"
        );
    }
}
