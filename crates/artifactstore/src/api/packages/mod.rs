//! The control plane: package versions (publish, read, list, delete), their files, and retention.
//!
//! `dispatch` parses a `/v1/packages/...` path and hands the request to the file that answers it: `read` (a
//! version, a package's versions, the package list, a version's file), `publish`, or `retention` (deleting a version
//! and changing its retention). Every read of the views goes through `artifactstore_views::queries`.

mod metadata;
pub(crate) mod publish;
mod read;
mod retention;

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde::de::DeserializeOwned;

use super::blobs::{serve_blob, Blob};
use super::body::{BodyFormat, MAX_CONTROL_BODY};
use super::extract::ApiPath;
use crate::auth::{Caller, Scope};
use crate::names::{check_name, check_path, check_version};
use crate::problem::ApiError;
use crate::server::AppState;
use publish::publish;
pub(crate) use read::list;
use read::{manifest, package_file, render, versions};
use retention::{delete, retention};

/// What a `/v1/packages/...` path names.
#[derive(Debug, PartialEq, Eq)]
enum Target {
    Package(String),
    Version(String, String),
    Retention(String, String),
    File(String, String, String),
}

/// Splits `{name}[/versions/{version}[/retention | /files/{path}]]`; names may not hold a `versions` segment, so
/// the first `/versions/` is the split.
fn parse_target(rest: &str) -> Result<Target, ApiError> {
    let not_found = || ApiError::not_found(format!("no such package path `{}`", rest.escape_debug()));
    let Some((name, after)) = rest.split_once("/versions/") else {
        let name = rest.trim_end_matches('/');
        check_name(name).map_err(ApiError::bad_request)?;
        return Ok(Target::Package(name.to_owned()));
    };
    check_name(name).map_err(ApiError::bad_request)?;
    let (version, tail) = after.split_once('/').unwrap_or((after, ""));
    check_version(version).map_err(ApiError::bad_request)?;
    let (name, version) = (name.to_owned(), version.to_owned());
    match tail {
        "" => Ok(Target::Version(name, version)),
        "retention" => Ok(Target::Retention(name, version)),
        _ => match tail.strip_prefix("files/") {
            Some(path) => {
                check_path(path).map_err(ApiError::bad_request)?;
                Ok(Target::File(name, version, path.to_owned()))
            }
            None if rest.split('/').filter(|s| *s == crate::names::RESERVED_SEGMENT).count() > 1 => {
                Err(ApiError::bad_request(format!(
                    "`{}`: a package name may not hold a `{}` segment",
                    rest.escape_debug(),
                    crate::names::RESERVED_SEGMENT
                )))
            }
            None => Err(not_found()),
        },
    }
}

/// Every method on `/v1/packages/{*rest}`.
pub(crate) async fn dispatch(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(rest): ApiPath<String>,
    request: Request,
) -> Result<Response, ApiError> {
    let target = parse_target(&rest)?;
    let method = request.method().clone();
    match (method.clone(), target) {
        (Method::GET, Target::Package(name)) => versions(&state, &caller, &name).await,
        (Method::GET, Target::Version(name, version)) => {
            caller.require(Scope::Read, &name)?;
            let doc = manifest(&state, &name, &version).await?;
            Ok(render(request.headers(), StatusCode::OK, doc))
        }
        (Method::PUT, Target::Version(name, version)) => {
            publish(VersionCall { state: &state, caller: &caller, name, version }, request).await
        }
        (Method::DELETE, Target::Version(name, version)) => {
            delete(VersionCall { state: &state, caller: &caller, name, version }, request).await
        }
        (Method::PUT, Target::Retention(name, version)) => {
            retention(VersionCall { state: &state, caller: &caller, name, version }, request).await
        }
        (Method::GET | Method::HEAD, Target::File(name, version, path)) => {
            caller.require(Scope::Read, &name)?;
            let file = package_file(&state, &name, &version, &path).await?;
            serve_blob(&state, Blob::from(&file), &method, request.headers()).await
        }
        _ => Err(ApiError::method_not_allowed()),
    }
}

/// A call that changes one package version: the service, who calls, and the version it names.
struct VersionCall<'a> {
    state: &'a AppState,
    caller: &'a Caller,
    name: String,
    version: String,
}

impl VersionCall<'_> {
    /// Checks that the caller holds `scope` on the package; gives its actor, and the version's name and version for
    /// the write transaction to own.
    fn grant(&self, scope: Scope) -> Result<(String, String, String), ApiError> {
        self.caller.require(scope, &self.name)?;
        Ok((self.caller.actor().to_owned(), self.name.clone(), self.version.clone()))
    }
}

/// The request's body, decoded from JSON or CBOR as its `Content-Type` says; an empty body is refused.
async fn decode_body<T: DeserializeOwned>(request: Request) -> Result<(BodyFormat, T), ApiError> {
    super::body::decode_body(request, MAX_CONTROL_BODY).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(parse_target("team/app").unwrap(), Target::Package("team/app".into()));
        assert_eq!(parse_target("a/versions/1.0").unwrap(), Target::Version("a".into(), "1.0".into()));
        assert_eq!(parse_target("a/versions/1/retention").unwrap(), Target::Retention("a".into(), "1".into()));
        assert_eq!(
            parse_target("a/b/versions/1/files/bin/versions/x").unwrap(),
            Target::File("a/b".into(), "1".into(), "bin/versions/x".into())
        );
        assert_eq!(parse_target("a/versions/1/other").unwrap_err().status(), 404);
        assert_eq!(parse_target("a/versions/1/files/../x").unwrap_err().status(), 400);
        assert_eq!(parse_target("A/versions/1").unwrap_err().status(), 400);
        assert_eq!(parse_target("a/versions/.1").unwrap_err().status(), 400);
    }
}
