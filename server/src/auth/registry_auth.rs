//! The registry's view of authentication: Basic credentials and API tokens give
//! the user's grants directly; bearer tokens from `/auth/token` give exactly the
//! scopes they carry.

use std::sync::Arc;

use async_trait::async_trait;
use axum::http::HeaderMap;
use slipway_registry::access::{Action, Caller, CallerKind, Grant, RepoPattern};
use slipway_registry::{Authenticator, RegistryError};

use super::registry_token::SERVICE;
use super::{credentials, Auth, AuthError, Credentials};

pub struct RegistryAuth(pub Arc<Auth>);

impl RegistryAuth {
    fn anonymous_grants(&self) -> Vec<Grant> {
        if self.0.anonymous_pull {
            vec![Grant {
                repositories: RepoPattern::all(),
                actions: vec![Action::Pull],
            }]
        } else {
            Vec::new()
        }
    }

    fn refuse(&self, headers: &HeaderMap) -> RegistryError {
        RegistryError::Unauthorized {
            challenge: self.challenge(headers, None, false),
        }
    }
}

#[async_trait]
impl Authenticator for RegistryAuth {
    async fn authenticate(&self, headers: &HeaderMap) -> Result<Caller, RegistryError> {
        let mut anonymous = self.anonymous_grants();
        let Some(creds) = credentials(headers).map_err(|_| self.refuse(headers))? else {
            return Ok(Caller::anonymous(anonymous));
        };
        match self.0.principal(&creds).await {
            Ok(Some(principal)) => {
                let mut grants = principal.grants();
                grants.append(&mut anonymous);
                Ok(Caller {
                    name: Some(principal.user.username),
                    kind: CallerKind::Credentials,
                    grants,
                })
            }
            Ok(None) => {
                let Credentials::Bearer(token) = &creds else {
                    return Err(self.refuse(headers));
                };
                let claims = self
                    .0
                    .registry_tokens
                    .verify(token)
                    .ok_or_else(|| self.refuse(headers))?;
                let mut grants: Vec<Grant> = claims
                    .access
                    .iter()
                    .filter(|a| a.kind == "repository")
                    .map(|a| Grant {
                        repositories: RepoPattern::new(a.name.clone()),
                        actions: a.actions.iter().filter_map(|s| Action::parse(s)).collect(),
                    })
                    .collect();
                // The catalog scope lets `_catalog` show names, of the
                // repositories its requester may pull; it pulls nothing.
                grants.extend(
                    claims
                        .access
                        .iter()
                        .filter(|a| a.kind == "registry" && a.name == "catalog")
                        .filter_map(|a| a.repositories.as_ref())
                        .map(|pattern| Grant {
                            repositories: RepoPattern::new(pattern.clone()),
                            actions: vec![Action::List],
                        }),
                );
                grants.append(&mut anonymous);
                Ok(Caller {
                    name: Some(claims.sub),
                    kind: CallerKind::ScopedToken,
                    grants,
                })
            }
            Err(AuthError::Database(e)) => Err(RegistryError::Database(e)),
            Err(_) => Err(self.refuse(headers)),
        }
    }

    fn challenge(&self, headers: &HeaderMap, scope: Option<&str>, insufficient: bool) -> String {
        let mut challenge = format!(
            "Bearer realm=\"{}/auth/token\",service=\"{SERVICE}\"",
            self.0.base_url(headers)
        );
        if let Some(scope) = scope {
            challenge.push_str(&format!(",scope=\"{scope}\""));
        }
        if insufficient {
            challenge.push_str(",error=\"insufficient_scope\"");
        }
        challenge
    }
}
