//! Who may do what: bearer tokens with scopes over package-name prefixes.
//!
//! Tokens come from the configuration file. Each has a subject (the `actor` of the events it causes), scopes
//! (`read` < `write` < `admin`: each includes the ones before it) and package-name prefixes the scopes apply to.
//! Calls that name no package (uploads, blobs, the event feed) need the scope on at least one prefix; what they read
//! is then narrowed to the token's prefixes (`api::scope`, ADR 0034).
//! With no tokens configured the instance is open: every call is allowed and acts as `anonymous`.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use crate::problem::ApiError;
use crate::server::AppState;

/// The actor recorded for calls on an open instance.
pub const ANONYMOUS: &str = "anonymous";

/// What a token may do, in increasing power.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    /// Read packages, blobs and events.
    Read,
    /// Upload blobs and publish package versions.
    Write,
    /// Delete package versions and change their retention.
    Admin,
}

impl Scope {
    /// Parses `read`, `write` or `admin`.
    pub fn parse(text: &str) -> anyhow::Result<Scope> {
        match text {
            "read" => Ok(Scope::Read),
            "write" => Ok(Scope::Write),
            "admin" => Ok(Scope::Admin),
            other => anyhow::bail!("unknown scope `{other}`; use read, write or admin"),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Admin => "admin",
        }
    }
}

/// One configured token. Only the BLAKE3 digest of the secret is kept, and compared in constant time.
#[derive(Clone)]
pub struct TokenConfig {
    digest: blake3::Hash,
    subject: String,
    scope: Scope,
    prefixes: Vec<String>,
}

impl std::fmt::Debug for TokenConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenConfig")
            .field("subject", &self.subject)
            .field("scope", &self.scope)
            .field("prefixes", &self.prefixes)
            .finish_non_exhaustive()
    }
}

impl TokenConfig {
    /// A token with the strongest of `scopes` over `prefixes`.
    pub fn new(token: &str, subject: &str, scopes: Vec<Scope>, prefixes: Vec<String>) -> TokenConfig {
        TokenConfig {
            digest: blake3::hash(token.as_bytes()),
            subject: subject.to_owned(),
            scope: scopes.into_iter().max().unwrap_or(Scope::Read),
            prefixes,
        }
    }

    /// The subject the token names, written as the `actor` of what it does.
    pub fn subject(&self) -> &str {
        &self.subject
    }
}

/// The authenticated caller of one request.
#[derive(Debug, Clone)]
pub struct Caller {
    subject: String,
    /// `None` on an open instance: everything is allowed.
    grant: Option<(Scope, Vec<String>)>,
}

impl Caller {
    /// The caller's subject, written as the `actor` of the events it causes.
    pub fn actor(&self) -> &str {
        &self.subject
    }

    /// Allows the call if the caller holds `scope` over `package`.
    pub fn require(&self, scope: Scope, package: &str) -> Result<(), ApiError> {
        match &self.grant {
            None => Ok(()),
            Some((held, prefixes)) if *held >= scope && prefixes.iter().any(|p| crate::names::covers(p, package)) => {
                Ok(())
            }
            Some(_) => Err(ApiError::forbidden(format!(
                "{} may not {} package `{package}`: that needs the `{}` scope over a prefix of its name",
                self.subject,
                verb(scope),
                scope.name()
            ))),
        }
    }

    /// Whether the caller may read the package (or OCI repository) `name`.
    pub fn may_read(&self, name: &str) -> bool {
        self.require(Scope::Read, name).is_ok()
    }

    /// Whether the caller reads every package: an open instance, or a token with the prefix `""`.
    pub fn reads_everything(&self) -> bool {
        match &self.grant {
            None => true,
            Some((_, prefixes)) => prefixes.iter().any(|p| p.is_empty()),
        }
    }

    /// The caller's package-name prefixes; `None` when it reads every package.
    pub fn read_prefixes(&self) -> Option<&[String]> {
        match &self.grant {
            Some((_, prefixes)) if !self.reads_everything() => Some(prefixes),
            _ => None,
        }
    }

    /// Allows a call that names no package if the caller holds `scope` over any prefix.
    pub fn require_any(&self, scope: Scope) -> Result<(), ApiError> {
        match &self.grant {
            None => Ok(()),
            Some((held, _)) if *held >= scope => Ok(()),
            Some(_) => Err(ApiError::forbidden(format!("{} lacks the `{}` scope", self.subject, scope.name()))),
        }
    }
}

/// A scope a handler needs over at least one prefix, as a type: `Granted<Reads>`, `Granted<Writes>`.
pub(crate) trait Needs: Send + Sync {
    /// The scope.
    const SCOPE: Scope;
}

/// `Scope::Read` over some prefix.
#[derive(Debug)]
pub(crate) struct Reads;

/// `Scope::Write` over some prefix.
#[derive(Debug)]
pub(crate) struct Writes;

impl Needs for Reads {
    const SCOPE: Scope = Scope::Read;
}

impl Needs for Writes {
    const SCOPE: Scope = Scope::Write;
}

/// The caller of a call that names no package, once `require_any(N::SCOPE)` let it through.
#[derive(Debug)]
pub(crate) struct Granted<N>(pub(crate) Caller, pub(crate) std::marker::PhantomData<N>);

impl<N: Needs> FromRequestParts<AppState> for Granted<N> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let caller = Caller::from_request_parts(parts, state).await?;
        caller.require_any(N::SCOPE)?;
        Ok(Granted(caller, std::marker::PhantomData))
    }
}

fn verb(scope: Scope) -> &'static str {
    match scope {
        Scope::Read => "read",
        Scope::Write => "publish to",
        Scope::Admin => "administer",
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let tokens = &state.instance.config.tokens;
        if tokens.is_empty() {
            return Ok(Caller { subject: ANONYMOUS.to_owned(), grant: None });
        }
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .ok_or_else(|| ApiError::unauthorized("this instance needs `Authorization: Bearer <token>`"))?;
        let token = header
            .to_str()
            .ok()
            .and_then(|h| credentials(h, "Bearer"))
            .filter(|t| !t.is_empty())
            .ok_or_else(|| ApiError::unauthorized("the Authorization header must be `Bearer <token>`"))?;
        let digest = blake3::hash(token.as_bytes());
        // `blake3::Hash` compares in constant time; look at every token so timing says nothing of which matched.
        let mut found = None;
        for config in tokens {
            if config.digest == digest {
                found = Some(config);
            }
        }
        let config = found.ok_or_else(|| ApiError::unauthorized("this token is not known here"))?;
        Ok(Caller { subject: config.subject.clone(), grant: Some((config.scope, config.prefixes.clone())) })
    }
}

/// The credentials of an `Authorization` value in `scheme`, whose name is compared without regard to case
/// (RFC 9110, section 11.1).
pub(crate) fn credentials<'a>(value: &'a str, scheme: &str) -> Option<&'a str> {
    let (name, rest) = value.trim_start().split_once([' ', '\t'])?;
    name.eq_ignore_ascii_case(scheme).then(|| rest.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes_are_matched_without_regard_to_case() {
        for value in ["Bearer abc", "bearer abc", "BEARER abc", "BeArEr   abc ", "Bearer\tabc"] {
            assert_eq!(credentials(value, "Bearer"), Some("abc"), "{value:?}");
        }
        assert_eq!(credentials("Basic abc", "Bearer"), None);
        assert_eq!(credentials("Bearerabc", "Bearer"), None);
        assert_eq!(credentials("Bearer", "Bearer"), None);
    }

    fn caller(scope: Scope, prefixes: &[&str]) -> Caller {
        Caller { subject: "ci".into(), grant: Some((scope, prefixes.iter().map(|p| (*p).to_owned()).collect())) }
    }

    #[test]
    fn scopes_nest_and_prefixes_bound_them() {
        let writer = caller(Scope::Write, &["team/"]);
        assert!(writer.require(Scope::Read, "team/app").is_ok());
        assert!(writer.require(Scope::Write, "team/app").is_ok());
        assert_eq!(writer.require(Scope::Admin, "team/app").unwrap_err().status(), 403);
        assert_eq!(writer.require(Scope::Read, "other/app").unwrap_err().status(), 403);
        assert!(writer.require_any(Scope::Write).is_ok());
        assert!(writer.require_any(Scope::Admin).is_err());
        let open = Caller { subject: ANONYMOUS.into(), grant: None };
        assert!(open.require(Scope::Admin, "anything").is_ok());
        assert!(caller(Scope::Admin, &[""]).require(Scope::Admin, "x").is_ok());
        // Prefixes are whole name segments.
        let team = caller(Scope::Admin, &["team"]);
        assert!(team.require(Scope::Admin, "team").is_ok());
        assert!(team.require(Scope::Admin, "team/app").is_ok());
        assert_eq!(team.require(Scope::Read, "teamevil/x").unwrap_err().status(), 403);
        assert_eq!(writer.require(Scope::Read, "team").unwrap_err().status(), 403, "`team/` covers only `team/...`");
    }
}
