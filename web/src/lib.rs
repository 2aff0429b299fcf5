//! Slipway's web UI: the pages as askama templates (`templates/`), their view
//! models, and the static assets (`static/`: one stylesheet, one small
//! hand-written script; nothing from a CDN, so the server works offline).
//! The handlers that fill these views live in the server crate (`server::ui`).

pub use askama;

pub mod deploys;
pub mod log;
use askama::Template;

pub const APP_CSS: &str = include_str!("../static/app.css");
pub const APP_JS: &str = include_str!("../static/app.js");

/// A version of the static assets (a hash of all of them), put in their URLs
/// so browsers may cache them for good: a new build changes the URLs.
pub fn asset_version() -> &'static str {
    static VERSION: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    VERSION.get_or_init(|| {
        // FNV-1a: stable across builds and platforms, unlike DefaultHasher.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for part in [APP_CSS, APP_JS, log::LOG_CSS, log::LOG_JS] {
            for b in part.bytes().chain([0u8]) {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
        }
        format!("{h:016x}")
    })
}

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

/// A deployment a pipeline caused (the dashboard, the pipeline page).
#[derive(Debug, Clone)]
pub struct DeploymentLink {
    pub id: i64,
    pub repo: String,
    pub environment: String,
    pub state: String,
    pub icon: &'static str,
    /// The pipeline's id and number, if a pipeline built it.
    pub pipeline: Option<(i64, i64)>,
    pub requested_by: String,
}

#[derive(Template)]
#[template(path = "dashboard.html")]
pub struct Dashboard {
    pub nav: Option<Nav>,
    pub pipelines: Vec<PipelineRow>,
    pub deployments: Vec<DeploymentLink>,
}

/// A step on the pipeline page.
#[derive(Debug, Clone)]
pub struct StepItem {
    pub position: i64,
    pub name: String,
    pub status: String,
    pub icon: &'static str,
    pub duration: String,
}

/// A job on the pipeline page.
#[derive(Debug, Clone)]
pub struct JobCard {
    pub id: i64,
    pub name: String,
    pub status: String,
    pub icon: &'static str,
    /// The jobs it needs, comma-separated.
    pub needs: String,
    pub duration: String,
    pub reason: Option<String>,
    pub steps: Vec<StepItem>,
    /// Size of its artifacts, when it left some.
    pub artifacts: Option<String>,
}

#[derive(Debug, Clone)]
pub struct ImageItem {
    pub repository: String,
    pub tags: String,
    pub digest: String,
    /// `host/repository@digest`.
    pub pull: String,
    pub job: String,
    pub step: String,
}

#[derive(Template)]
#[template(path = "pipeline.html")]
pub struct PipelinePage {
    pub nav: Option<Nav>,
    pub id: i64,
    pub repo: String,
    pub number: i64,
    pub status: String,
    pub icon: &'static str,
    pub git_ref: String,
    pub commit: String,
    pub message: String,
    pub author: String,
    pub event: String,
    pub trigger: String,
    pub created: String,
    pub duration: String,
    pub error: Option<String>,
    /// Jobs by depth in the `needs` graph: a job's column is one more than
    /// the deepest job it needs.
    pub columns: Vec<Vec<JobCard>>,
    pub images: Vec<ImageItem>,
    /// host:port of the registry, for pull references.
    pub registry: String,
    /// The viewer may cancel and re-run (not a viewer role).
    pub can_act: bool,
    /// Still pending or running.
    pub active: bool,
    pub csrf: String,
    /// The deployments this run caused.
    pub deployments: Vec<DeploymentLink>,
}

#[derive(Debug, Clone)]
pub struct LatestRun {
    pub id: i64,
    pub number: i64,
    pub status: String,
    pub icon: &'static str,
}

#[derive(Debug, Clone)]
pub struct BranchRow {
    pub name: String,
    pub commit_short: String,
    pub latest: Option<LatestRun>,
}

#[derive(Template)]
#[template(path = "repo.html")]
pub struct RepoPage {
    pub nav: Option<Nav>,
    pub name: String,
    pub url: String,
    pub default_branch: String,
    pub branches: Vec<BranchRow>,
    pub pipelines: Vec<PipelineRow>,
    pub can_run: bool,
    pub csrf: String,
}

#[derive(Debug, Clone)]
pub struct RepositoryRow {
    pub name: String,
    /// Its tags, comma-separated (the first few).
    pub tags: String,
}

#[derive(Template)]
#[template(path = "images.html")]
pub struct ImagesPage {
    pub nav: Option<Nav>,
    pub repositories: Vec<RepositoryRow>,
}

#[derive(Debug, Clone)]
pub struct LayerRow {
    pub digest: String,
    pub size: String,
    pub media_type: String,
}

#[derive(Debug, Clone)]
pub struct ReferrerRow {
    pub artifact_type: String,
    pub digest: String,
}

#[derive(Debug, Clone)]
pub struct BuiltBy {
    pub pipeline_id: i64,
    pub repo: String,
    pub number: i64,
    pub commit_short: String,
}

#[derive(Debug, Clone)]
pub struct TagDetail {
    pub tag: String,
    pub digest: String,
    pub size: String,
    pub created: String,
    pub pull: String,
    pub layers: Vec<LayerRow>,
    pub referrers: Vec<ReferrerRow>,
    pub built_by: Option<BuiltBy>,
}

#[derive(Template)]
#[template(path = "image_repo.html")]
pub struct ImageRepoPage {
    pub nav: Option<Nav>,
    pub name: String,
    pub tags: Vec<TagDetail>,
}

#[derive(Debug, Clone)]
pub struct RunningJob {
    pub pipeline_id: i64,
    pub label: String,
}

#[derive(Debug, Clone)]
pub struct RunnerRow {
    pub name: String,
    pub online: bool,
    pub labels: String,
    pub capacity: i64,
    pub busy: usize,
    pub jobs: Vec<RunningJob>,
    pub last_seen: String,
}

#[derive(Template)]
#[template(path = "runners.html")]
pub struct RunnersPage {
    pub nav: Option<Nav>,
    pub runners: Vec<RunnerRow>,
}

#[derive(Debug, Clone)]
pub struct CandidateRow {
    pub runner: String,
    pub can_take: bool,
    pub why_not: String,
}

#[derive(Debug, Clone)]
pub struct WaitingRow {
    /// `3`, or `waiting for build` while its needs run.
    pub position: String,
    pub pipeline_id: i64,
    pub repo: String,
    pub job: String,
    pub waiting: String,
    pub labels: String,
    pub runners: Vec<CandidateRow>,
}

#[derive(Template)]
#[template(path = "queue.html")]
pub struct QueuePage {
    pub nav: Option<Nav>,
    pub waiting: Vec<WaitingRow>,
}

/// Columns of jobs by depth: `needs[i]` lists the indexes job `i` needs.
pub fn depth_columns(needs: &[Vec<usize>]) -> Vec<Vec<usize>> {
    fn depth(i: usize, needs: &[Vec<usize>], memo: &mut Vec<Option<usize>>, guard: usize) -> usize {
        if let Some(d) = memo[i] {
            return d;
        }
        // Specs are checked for cycles; the guard only keeps a bad row finite.
        let d = if guard > needs.len() {
            0
        } else {
            needs[i]
                .iter()
                .map(|&n| depth(n, needs, memo, guard + 1) + 1)
                .max()
                .unwrap_or(0)
        };
        memo[i] = Some(d);
        d
    }
    let mut memo = vec![None; needs.len()];
    let mut columns: Vec<Vec<usize>> = Vec::new();
    for i in 0..needs.len() {
        let d = depth(i, needs, &mut memo, 0);
        if columns.len() <= d {
            columns.resize(d + 1, Vec::new());
        }
        columns[d].push(i);
    }
    columns
}

/// Bytes as people read them.
pub fn human_size(bytes: i64) -> String {
    let b = bytes.max(0) as f64;
    if b >= 1024.0 * 1024.0 * 1024.0 {
        format!("{:.1} GiB", b / (1024.0 * 1024.0 * 1024.0))
    } else if b >= 1024.0 * 1024.0 {
        format!("{:.1} MiB", b / (1024.0 * 1024.0))
    } else if b >= 1024.0 {
        format!("{:.1} KiB", b / 1024.0)
    } else {
        format!("{bytes} B")
    }
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
    fn jobs_are_laid_out_by_the_depth_of_their_needs() {
        // 0 <- 1 <- 3, 0 <- 2, 4 alone
        let cols = depth_columns(&[vec![], vec![0], vec![0], vec![1, 2], vec![]]);
        assert_eq!(cols, vec![vec![0, 4], vec![1, 2], vec![3]]);
        assert_eq!(human_size(1536), "1.5 KiB");
    }

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
            deployments: Vec::new(),
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
