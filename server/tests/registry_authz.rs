//! Authorization matrix: every registry and API route, called anonymously, with a
//! pull-only API token, with a pull+push API token, and with a registry token
//! whose scope is too narrow. Each cell checks the status code.

mod common;

use common::*;
use reqwest::Method;

struct World {
    server: TestServer,
    repo: &'static str,
    layout: OciLayout,
    _scratch: tempfile::TempDir,
}

fn world() -> World {
    let server = TestServer::start();
    let scratch = scratch_dir("authz");
    let layout = OciLayout::write(
        &scratch.path().join("img"),
        "v1",
        &[(Compression::None, 1024)],
    );
    let repo = "team/app";
    server.push_layout_http(&layout, repo, "v1", &server.admin_auth());
    World {
        server,
        repo,
        layout,
        _scratch: scratch,
    }
}

fn call(
    w: &World,
    method: Method,
    path: &str,
    auth: &Auth,
    body: Option<Vec<u8>>,
    content_type: Option<&str>,
) -> HttpResponse {
    let url = format!("{}{path}", w.server.url());
    let mut req = http_client().request(method.clone(), &url);
    if let Some(ct) = content_type {
        req = req.header("Content-Type", ct);
    }
    if let Some(body) = body {
        req = req.body(body);
    }
    HttpResponse::send(method.as_str(), &url, auth.apply(req))
}

/// A fresh upload session made by the admin, for the routes that need one.
fn new_session(w: &World) -> String {
    let r = call(
        w,
        Method::POST,
        &format!("/v2/{}/blobs/uploads/", w.repo),
        &w.server.admin_auth(),
        None,
        None,
    );
    assert_eq!(r.status, 202, "{}", r.describe());
    r.header("location").unwrap().to_owned()
}

/// Route name, then the status for each caller.
struct Expect {
    route: &'static str,
    anonymous: u16,
    pull: u16,
    push: u16,
}

fn run_route(w: &World, route: &str, auth: &Auth) -> u16 {
    let repo = w.repo;
    let blob = &w.layout.layers[0].digest;
    let manifest = w.layout.manifest_bytes.clone();
    let content = b"fresh blob".to_vec();
    let content_digest = sha256_digest(&content);
    let r = match route {
        "GET /v2/" => call(w, Method::GET, "/v2/", auth, None, None),
        "GET /v2/_catalog" => call(w, Method::GET, "/v2/_catalog", auth, None, None),
        "GET tags/list" => call(
            w,
            Method::GET,
            &format!("/v2/{repo}/tags/list"),
            auth,
            None,
            None,
        ),
        "GET manifest" => call(
            w,
            Method::GET,
            &format!("/v2/{repo}/manifests/v1"),
            auth,
            None,
            None,
        ),
        "HEAD manifest" => call(
            w,
            Method::HEAD,
            &format!("/v2/{repo}/manifests/v1"),
            auth,
            None,
            None,
        ),
        "PUT manifest" => call(
            w,
            Method::PUT,
            &format!("/v2/{repo}/manifests/v2"),
            auth,
            Some(manifest),
            Some(OCI_MANIFEST),
        ),
        "DELETE manifest" => call(
            w,
            Method::DELETE,
            &format!("/v2/{repo}/manifests/v1"),
            auth,
            None,
            None,
        ),
        "GET blob" => call(
            w,
            Method::GET,
            &format!("/v2/{repo}/blobs/{blob}"),
            auth,
            None,
            None,
        ),
        "HEAD blob" => call(
            w,
            Method::HEAD,
            &format!("/v2/{repo}/blobs/{blob}"),
            auth,
            None,
            None,
        ),
        "DELETE blob" => call(
            w,
            Method::DELETE,
            &format!("/v2/{repo}/blobs/{blob}"),
            auth,
            None,
            None,
        ),
        "POST upload" => call(
            w,
            Method::POST,
            &format!("/v2/{repo}/blobs/uploads/"),
            auth,
            None,
            None,
        ),
        "POST upload monolithic" => call(
            w,
            Method::POST,
            &format!("/v2/{repo}/blobs/uploads/?digest={content_digest}"),
            auth,
            Some(content),
            None,
        ),
        "POST mount" => call(
            w,
            Method::POST,
            &format!("/v2/other/blobs/uploads/?mount={blob}&from={repo}"),
            auth,
            None,
            None,
        ),
        "PATCH upload" => call(w, Method::PATCH, &new_session(w), auth, Some(content), None),
        "GET upload" => call(w, Method::GET, &new_session(w), auth, None, None),
        "PUT upload" => {
            let location = new_session(w);
            call(
                w,
                Method::PUT,
                &format!("{location}?digest={content_digest}"),
                auth,
                Some(content),
                None,
            )
        }
        "DELETE upload" => call(w, Method::DELETE, &new_session(w), auth, None, None),
        "GET referrers" => call(
            w,
            Method::GET,
            &format!("/v2/{repo}/referrers/{}", w.layout.manifest_digest),
            auth,
            None,
            None,
        ),
        "GET /auth/token" => call(
            w,
            Method::GET,
            &format!("/auth/token?service=slipway&scope=repository:{repo}:pull"),
            auth,
            None,
            None,
        ),
        "GET /api/v1/whoami" => call(w, Method::GET, "/api/v1/whoami", auth, None, None),
        "POST /api/v1/tokens" => call(
            w,
            Method::POST,
            "/api/v1/tokens",
            auth,
            Some(br#"{"name":"t","scopes":["pull","push","delete"]}"#.to_vec()),
            Some("application/json"),
        ),
        "POST /api/v1/users" => call(
            w,
            Method::POST,
            "/api/v1/users",
            auth,
            Some(
                format!(
                    r#"{{"username":"u{}","password":"longenough"}}"#,
                    rand_suffix()
                )
                .into_bytes(),
            ),
            Some("application/json"),
        ),
        "POST /api/v1/registry/gc" => call(
            w,
            Method::POST,
            "/api/v1/registry/gc?dry_run=true",
            auth,
            None,
            None,
        ),
        "GET /metrics" => call(w, Method::GET, "/metrics", auth, None, None),
        "GET /healthz" => call(w, Method::GET, "/healthz", auth, None, None),
        "GET /readyz" => call(w, Method::GET, "/readyz", auth, None, None),
        other => panic!("no such route in the matrix: {other}"),
    };
    r.status
}

#[test]
fn every_route_checks_its_scope() {
    let w = world();
    let pull = Auth::Bearer(w.server.create_token(&["pull"], "*"));
    let push = Auth::Bearer(w.server.create_token(&["pull", "push"], "*"));
    // (route, anonymous, pull token, push token). Health probes are public on purpose.
    let matrix = [
        Expect {
            route: "GET /v2/",
            anonymous: 401,
            pull: 200,
            push: 200,
        },
        Expect {
            route: "GET /v2/_catalog",
            anonymous: 401,
            pull: 200,
            push: 200,
        },
        Expect {
            route: "GET tags/list",
            anonymous: 401,
            pull: 200,
            push: 200,
        },
        Expect {
            route: "GET manifest",
            anonymous: 401,
            pull: 200,
            push: 200,
        },
        Expect {
            route: "HEAD manifest",
            anonymous: 401,
            pull: 200,
            push: 200,
        },
        Expect {
            route: "PUT manifest",
            anonymous: 401,
            pull: 403,
            push: 201,
        },
        Expect {
            route: "DELETE manifest",
            anonymous: 401,
            pull: 403,
            push: 403,
        },
        Expect {
            route: "GET blob",
            anonymous: 401,
            pull: 200,
            push: 200,
        },
        Expect {
            route: "HEAD blob",
            anonymous: 401,
            pull: 200,
            push: 200,
        },
        Expect {
            route: "DELETE blob",
            anonymous: 401,
            pull: 403,
            push: 403,
        },
        Expect {
            route: "POST upload",
            anonymous: 401,
            pull: 403,
            push: 202,
        },
        Expect {
            route: "POST upload monolithic",
            anonymous: 401,
            pull: 403,
            push: 201,
        },
        Expect {
            route: "POST mount",
            anonymous: 401,
            pull: 403,
            push: 201,
        },
        Expect {
            route: "PATCH upload",
            anonymous: 401,
            pull: 403,
            push: 202,
        },
        Expect {
            route: "GET upload",
            anonymous: 401,
            pull: 403,
            push: 204,
        },
        Expect {
            route: "PUT upload",
            anonymous: 401,
            pull: 403,
            push: 201,
        },
        Expect {
            route: "DELETE upload",
            anonymous: 401,
            pull: 403,
            push: 204,
        },
        Expect {
            route: "GET referrers",
            anonymous: 401,
            pull: 200,
            push: 200,
        },
        Expect {
            route: "GET /auth/token",
            anonymous: 401,
            pull: 200,
            push: 200,
        },
        Expect {
            route: "GET /api/v1/whoami",
            anonymous: 401,
            pull: 200,
            push: 200,
        },
        Expect {
            route: "POST /api/v1/tokens",
            anonymous: 401,
            pull: 403,
            push: 403,
        },
        Expect {
            route: "POST /api/v1/users",
            anonymous: 401,
            pull: 403,
            push: 403,
        },
        Expect {
            route: "POST /api/v1/registry/gc",
            anonymous: 401,
            pull: 403,
            push: 403,
        },
        Expect {
            route: "GET /metrics",
            anonymous: 401,
            pull: 403,
            push: 403,
        },
        Expect {
            route: "GET /healthz",
            anonymous: 200,
            pull: 200,
            push: 200,
        },
        Expect {
            route: "GET /readyz",
            anonymous: 200,
            pull: 200,
            push: 200,
        },
    ];
    let mut wrong = Vec::new();
    for e in &matrix {
        for (who, auth, want) in [
            ("anonymous", &Auth::None, e.anonymous),
            ("pull token", &pull, e.pull),
            ("push token", &push, e.push),
        ] {
            let got = run_route(&w, e.route, auth);
            if got != want {
                wrong.push(format!("{} as {who}: got {got}, want {want}", e.route));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "authorization matrix mismatches:\n{}",
        wrong.join("\n")
    );
    // The admin can do what the tokens could not.
    let admin = w.server.admin_auth();
    for (route, want) in [
        ("DELETE blob", 409),
        ("DELETE manifest", 202),
        ("POST /api/v1/registry/gc", 200),
        ("GET /metrics", 200),
    ] {
        assert_eq!(run_route(&w, route, &admin), want, "{route} as admin");
    }
}

#[test]
fn anonymous_challenge_names_the_token_endpoint_and_scope() {
    let w = world();
    let r = call(
        &w,
        Method::GET,
        &format!("/v2/{}/manifests/v1", w.repo),
        &Auth::None,
        None,
        None,
    );
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["errors"][0]["code"], "UNAUTHORIZED");
    let challenge = r.header("www-authenticate").unwrap();
    assert_eq!(
        challenge,
        format!(
            "Bearer realm=\"{}/auth/token\",service=\"slipway\",scope=\"repository:team/app:pull\"",
            w.server.url()
        )
    );
}

#[test]
fn scoped_registry_tokens_carry_only_what_was_granted() {
    let w = world();
    let pull_only = w.server.create_token(&["pull"], "*");
    // Ask for pull and push with a pull-only API token: the token gets pull only.
    let r = call(
        &w,
        Method::GET,
        &format!(
            "/auth/token?service=slipway&scope=repository:{}:pull,push",
            w.repo
        ),
        &Auth::Basic("ci".into(), pull_only),
        None,
        None,
    );
    assert_eq!(r.status, 200, "{}", r.describe());
    let jwt = r.json()["token"].as_str().unwrap().to_owned();
    let bearer = Auth::Bearer(jwt);
    assert_eq!(
        call(
            &w,
            Method::GET,
            &format!("/v2/{}/manifests/v1", w.repo),
            &bearer,
            None,
            None
        )
        .status,
        200
    );
    // A push with it is refused with a challenge naming the scope it needs (RFC 6750 §3.1).
    let r = call(
        &w,
        Method::POST,
        &format!("/v2/{}/blobs/uploads/", w.repo),
        &bearer,
        None,
        None,
    );
    assert_eq!(
        r.status, 403,
        "RFC 6750: a token lacking scope gets 403 with the challenge"
    );
    assert!(
        r.header("www-authenticate")
            .unwrap()
            .contains("error=\"insufficient_scope\""),
        "{}",
        r.describe()
    );
    // The token names one repository; another is refused.
    assert_eq!(
        call(&w, Method::GET, "/v2/other/tags/list", &bearer, None, None).status,
        403
    );
    // A forged token is refused.
    let forged = Auth::Bearer("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl".into());
    assert_eq!(
        call(&w, Method::GET, "/v2/", &forged, None, None).status,
        401
    );
    // Wrong passwords and unknown API tokens are refused at the token endpoint too.
    let bad = Auth::Basic("admin".into(), "wrong".into());
    assert_eq!(
        call(
            &w,
            Method::GET,
            "/auth/token?service=slipway",
            &bad,
            None,
            None
        )
        .status,
        401
    );
    let unknown = Auth::Basic("x".into(), "slp_unknown".into());
    assert_eq!(
        call(
            &w,
            Method::GET,
            "/auth/token?service=slipway",
            &unknown,
            None,
            None
        )
        .status,
        401
    );
}

#[test]
fn repository_limited_tokens_stay_inside_their_pattern() {
    let w = world();
    let team_only = Auth::Bearer(w.server.create_token(&["pull", "push"], "team/*"));
    assert_eq!(
        call(
            &w,
            Method::GET,
            &format!("/v2/{}/tags/list", w.repo),
            &team_only,
            None,
            None
        )
        .status,
        200
    );
    assert_eq!(
        call(
            &w,
            Method::POST,
            "/v2/elsewhere/blobs/uploads/",
            &team_only,
            None,
            None
        )
        .status,
        403
    );
    // Mounting from a repository it cannot pull from falls back to a plain upload.
    w.server
        .push_layout_http(&w.layout, "private/app", "v1", &w.server.admin_auth());
    let blob = &w.layout.layers[0].digest;
    let r = call(
        &w,
        Method::POST,
        &format!("/v2/team/new/blobs/uploads/?mount={blob}&from=private/app"),
        &team_only,
        None,
        None,
    );
    assert_eq!(
        r.status,
        202,
        "mount from an unreadable repository must not link the blob: {}",
        r.describe()
    );
    // The catalog lists only what the token may pull.
    let r = call(&w, Method::GET, "/v2/_catalog", &team_only, None, None);
    let repos: Vec<String> = serde_json::from_value(r.json()["repositories"].clone()).unwrap();
    assert!(repos.iter().all(|r| r.starts_with("team/")), "{repos:?}");
    // It cannot mint a token that reaches further than itself.
    let r = call(
        &w,
        Method::POST,
        "/api/v1/tokens",
        &team_only,
        Some(br#"{"name":"wider","scopes":["pull"],"repository":"*"}"#.to_vec()),
        Some("application/json"),
    );
    assert_eq!(r.status, 403, "{}", r.describe());
}

/// A registry token for `scope`, asked for with `auth`.
fn registry_token(w: &World, auth: &Auth, scope: &str) -> Auth {
    let r = call(
        w,
        Method::GET,
        &format!("/auth/token?service=slipway&scope={scope}"),
        auth,
        None,
        None,
    );
    assert_eq!(r.status, 200, "{}", r.describe());
    Auth::Bearer(r.json()["token"].as_str().unwrap().to_owned())
}

/// The repositories `_catalog` shows `auth`.
fn catalog(w: &World, auth: &Auth) -> Vec<String> {
    let r = call(w, Method::GET, "/v2/_catalog", auth, None, None);
    assert_eq!(r.status, 200, "{}", r.describe());
    serde_json::from_value(r.json()["repositories"].clone()).unwrap()
}

/// `registry:catalog:*` lets a token list names, of the repositories its
/// requester may pull, and pull nothing. The attack: a pull token limited to
/// `team/*` asked for the catalog scope and read `other/secretimg`'s tags and
/// manifests with the token it got.
#[test]
fn the_catalog_scope_lists_names_and_pulls_nothing() {
    let w = world();
    let admin = w.server.admin_auth();
    w.server
        .push_layout_http(&w.layout, "other/secretimg", "v1", &admin);
    let blob = w.layout.layers[0].digest.clone();
    let team_pull = Auth::Basic("ci".into(), w.server.create_token(&["pull"], "team/*"));
    let catalog_token = registry_token(&w, &team_pull, "registry:catalog:*");
    for (method, path) in [
        (Method::GET, "/v2/other/secretimg/tags/list".to_owned()),
        (Method::GET, "/v2/other/secretimg/manifests/v1".to_owned()),
        (Method::HEAD, "/v2/other/secretimg/manifests/v1".to_owned()),
        (Method::GET, format!("/v2/other/secretimg/blobs/{blob}")),
        (Method::HEAD, format!("/v2/other/secretimg/blobs/{blob}")),
        // Not even what its requester may pull: the scope did not ask for it.
        (Method::GET, "/v2/team/app/manifests/v1".to_owned()),
    ] {
        let r = call(&w, method.clone(), &path, &catalog_token, None, None);
        assert_eq!(
            r.status,
            403,
            "catalog token: {method} {path}: {}",
            r.describe()
        );
    }
    assert_eq!(catalog(&w, &catalog_token), ["team/app"]);
    // The limited API token itself lists what it reaches, too.
    assert_eq!(catalog(&w, &team_pull), ["team/app"]);

    // With a repository scope beside it, that repository pulls as asked.
    let both = registry_token(
        &w,
        &team_pull,
        "registry:catalog:*%20repository:team/app:pull",
    );
    assert_eq!(
        call(
            &w,
            Method::GET,
            "/v2/team/app/manifests/v1",
            &both,
            None,
            None
        )
        .status,
        200
    );
    assert_eq!(
        call(
            &w,
            Method::GET,
            "/v2/other/secretimg/tags/list",
            &both,
            None,
            None
        )
        .status,
        403
    );

    // An unlimited user's catalog token lists everything, and pulls nothing.
    let admin_catalog = registry_token(&w, &admin, "registry:catalog:*");
    assert_eq!(catalog(&w, &admin_catalog), ["other/secretimg", "team/app"]);
    assert_eq!(
        call(
            &w,
            Method::GET,
            "/v2/other/secretimg/tags/list",
            &admin_catalog,
            None,
            None
        )
        .status,
        403
    );
    // A credential that may not pull gets no catalog grant at all.
    let push_only = Auth::Basic("ci".into(), w.server.create_token(&["push"], "*"));
    let r = call(
        &w,
        Method::GET,
        "/v2/_catalog",
        &registry_token(&w, &push_only, "registry:catalog:*"),
        None,
        None,
    );
    assert_eq!(r.status, 401, "{}", r.describe());
}

#[test]
fn anonymous_pull_when_switched_on() {
    let server = TestServer::start_with_env(&[("SLIPWAY_REGISTRY__ANONYMOUS_PULL", "true")]);
    let scratch = scratch_dir("anon");
    let layout = OciLayout::write(
        &scratch.path().join("img"),
        "v1",
        &[(Compression::None, 64)],
    );
    server.push_layout_http(&layout, "pub/app", "v1", &server.admin_auth());
    server.assert_manifest_served("pub/app", "v1", &layout.manifest_digest, &Auth::None);
    let url = format!("{}/v2/pub/app/blobs/uploads/", server.url());
    let r = HttpResponse::send("POST", &url, http_client().post(&url));
    assert_eq!(
        r.status,
        401,
        "anonymous push stays refused: {}",
        r.describe()
    );
}
