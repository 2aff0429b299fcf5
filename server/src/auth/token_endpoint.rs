//! `GET /auth/token`: the Docker registry token endpoint. Authenticates with Basic
//! credentials (password or API token), then issues a short-lived token carrying
//! the requested scopes the caller actually holds (possibly none, as the
//! protocol asks: the registry then refuses what is missing).

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use slipway_registry::access::{Action, Caller, CallerKind};
use slipway_registry::name::check_name;
use slipway_registry::RegistryError;

use super::registry_token::AccessEntry;
use super::{credentials, AuthError, Principal, Scope};
use crate::app::AppState;

#[derive(Serialize)]
struct TokenResponse {
    token: String,
    access_token: String,
    expires_in: u64,
    issued_at: String,
}

/// One requested scope, `repository:<name>:<action>[,<action>...]` or
/// `registry:catalog:*`. Malformed scopes are ignored, as distribution does.
fn parse_scope(scope: &str) -> Option<(&str, &str, Vec<&str>)> {
    let (kind, rest) = scope.split_once(':')?;
    let (name, actions) = rest.rsplit_once(':')?;
    Some((
        kind,
        name,
        actions.split(',').filter(|a| !a.is_empty()).collect(),
    ))
}

fn unauthorized(reason: &str) -> Response {
    tracing::debug!(reason, "token request refused");
    RegistryError::Unauthorized {
        challenge: "Basic realm=\"slipway\"".into(),
    }
    .into_response()
}

pub async fn get(
    State(app): State<AppState>,
    headers: HeaderMap,
    Query(params): Query<Vec<(String, String)>>,
) -> Response {
    let principal: Option<Principal> = match credentials(&headers) {
        Err(e) => return unauthorized(&e.to_string()),
        Ok(None) => None,
        Ok(Some(creds)) => match app.auth.principal(&creds).await {
            Ok(Some(p)) => Some(p),
            Ok(None) => {
                return unauthorized(
                    "only passwords and API tokens can be exchanged for registry tokens",
                )
            }
            Err(AuthError::Database(e)) => return RegistryError::Database(e).into_response(),
            Err(e) => return unauthorized(&e.to_string()),
        },
    };
    if principal.is_none() && !app.auth.anonymous_pull {
        return unauthorized("credentials required");
    }
    let caller = match &principal {
        Some(p) => Caller {
            name: Some(p.user.username.clone()),
            kind: CallerKind::Credentials,
            grants: p.grants(),
        },
        None => Caller::anonymous(vec![slipway_registry::access::Grant {
            repositories: slipway_registry::access::RepoPattern::all(),
            actions: vec![Action::Pull],
        }]),
    };
    let mut access = Vec::new();
    for scope in params
        .iter()
        .filter(|(k, _)| k == "scope")
        .flat_map(|(_, v)| v.split(' '))
    {
        match parse_scope(scope) {
            Some(("repository", name, actions)) if check_name(name).is_ok() => {
                let allowed: Vec<String> = actions
                    .into_iter()
                    .filter_map(Action::parse)
                    .filter(|a| caller.may(name, *a))
                    .map(|a| a.as_str().to_owned())
                    .collect();
                access.push(AccessEntry {
                    kind: "repository".into(),
                    name: name.into(),
                    actions: allowed,
                    repositories: None,
                });
            }
            // Listing names only, of the repositories the caller may pull:
            // the token grants no pull of its own.
            Some(("registry", "catalog", _)) => {
                if let Some(p) = principal.as_ref().filter(|p| p.has(Scope::Pull)) {
                    access.push(AccessEntry {
                        kind: "registry".into(),
                        name: "catalog".into(),
                        actions: vec!["*".into()],
                        repositories: Some(p.repositories.as_str().to_owned()),
                    });
                }
            }
            _ => {}
        }
    }
    let subject = principal
        .as_ref()
        .map(|p| p.user.username.as_str())
        .unwrap_or("anonymous");
    let issued = app.auth.registry_tokens.issue(subject, access);
    axum::Json(TokenResponse {
        access_token: issued.token.clone(),
        token: issued.token,
        expires_in: issued.expires_in,
        issued_at: humantime::format_rfc3339_seconds(issued.issued_at).to_string(),
    })
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::parse_scope;

    #[test]
    fn scopes() {
        assert_eq!(
            parse_scope("repository:a/b:pull,push"),
            Some(("repository", "a/b", vec!["pull", "push"]))
        );
        assert_eq!(
            parse_scope("registry:catalog:*"),
            Some(("registry", "catalog", vec!["*"]))
        );
        assert_eq!(parse_scope("nonsense"), None);
    }
}
