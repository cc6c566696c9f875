//! Requests over real HTTP: a client for one server (its base URL and bearer token) and whole replies.

use artifactstore_digest::DualDigest;
use reqwest::header::HeaderMap;
use reqwest::{Body, Method, RequestBuilder, Response};
use serde_json::Value;

/// Requests against one server. A [`TestApp`](crate::TestApp) is one (through `Deref`); a server this process did
/// not start (the binary) gets one of its own with [`Client::new`].
#[derive(Debug, Clone)]
pub struct Client {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The HTTP client every request goes through.
    pub http: reqwest::Client,
    /// Sent as `Authorization: Bearer ...` on every request when set.
    pub token: Option<String>,
}

/// A whole response: status, headers and body, read.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// The headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: Vec<u8>,
}

impl Client {
    /// A client for the server at `base` (`http://HOST:PORT`), with no token.
    pub fn new(base: impl Into<String>) -> Client {
        Client { base: base.into(), http: reqwest::Client::new(), token: None }
    }

    /// `path` on this server; a whole URL is left as it is.
    pub fn url(&self, path: &str) -> String {
        if path.starts_with("http") {
            path.to_owned()
        } else {
            format!("{}{path}", self.base)
        }
    }

    /// A request to finish and send, with the token when there is one.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let builder = self.http.request(method, self.url(path));
        match &self.token {
            Some(token) => builder.bearer_auth(token),
            None => builder,
        }
    }

    /// Sends `request` and reads the whole response.
    pub async fn send(&self, request: RequestBuilder) -> Reply {
        Reply::read(request.send().await.expect("send the request")).await
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Reply {
        self.send(self.request(Method::GET, path)).await
    }

    /// `GET path`'s body as JSON, whatever the status.
    pub async fn get_json(&self, path: &str) -> Value {
        self.get(path).await.json()
    }

    /// `HEAD path`.
    pub async fn head(&self, path: &str) -> Reply {
        self.send(self.request(Method::HEAD, path)).await
    }

    /// `DELETE path`.
    pub async fn delete(&self, path: &str) -> Reply {
        self.send(self.request(Method::DELETE, path)).await
    }

    /// `POST path` with `body`.
    pub async fn post(&self, path: &str, body: impl Into<Body>) -> Reply {
        self.send(self.request(Method::POST, path).body(body)).await
    }

    /// `PUT path` with `body`.
    pub async fn put(&self, path: &str, body: impl Into<Body>) -> Reply {
        self.send(self.request(Method::PUT, path).body(body)).await
    }

    /// `PUT path` with `value` as JSON.
    pub async fn put_json(&self, path: &str, value: &Value) -> Reply {
        self.send(self.request(Method::PUT, path).json(value)).await
    }

    /// `PATCH path` with `body`.
    pub async fn patch(&self, path: &str, body: impl Into<Body>) -> Reply {
        self.send(self.request(Method::PATCH, path).body(body)).await
    }

    /// Uploads `bytes` as one blob in one request (`POST /v1/uploads?digest=blake3:...`).
    pub async fn upload_blob(&self, bytes: &[u8]) -> Reply {
        let digest = DualDigest::of(bytes).blake3;
        self.post(&format!("/v1/uploads?digest={digest}"), bytes.to_vec()).await
    }

    /// Publishes `name@version` with `manifest` (`PUT /v1/packages/NAME/versions/VERSION`).
    pub async fn publish(&self, name: &str, version: &str, manifest: &Value) -> Reply {
        self.put_json(&format!("/v1/packages/{name}/versions/{version}"), manifest).await
    }
}

impl Reply {
    /// Reads the whole of `response`.
    pub async fn read(response: Response) -> Reply {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.bytes().await.expect("read the response body").to_vec();
        Reply { status, headers, body }
    }

    /// The body as JSON; panics when it is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|err| panic!("a {} whose body is not JSON ({err}): {}", self.status, self.text()))
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Header `name`, empty when absent.
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map(|v| v.to_str().expect("a header of text")).unwrap_or_default()
    }

    /// Header `name` as a number.
    pub fn header_u64(&self, name: &str) -> u64 {
        self.header(name).parse().unwrap_or_else(|_| panic!("header {name} is not a number: {:?}", self.header(name)))
    }

    /// Checks this is a problem document with `status` and `code`, and returns it.
    pub fn problem(&self, status: u16, code: &str) -> Value {
        assert_eq!(self.status, status, "expected {status} {code}: {}", self.text());
        assert_eq!(self.header("content-type"), "application/problem+json");
        let body = self.json();
        assert_eq!(body["code"], code, "{body}");
        assert_eq!(body["status"], status);
        assert!(body["type"].as_str().unwrap().ends_with(code));
        body
    }
}

/// Checks `response` is a problem document with `status` and `code`, and returns it.
pub async fn problem(response: Response, status: u16, code: &str) -> Value {
    Reply::read(response).await.problem(status, code)
}

/// Header `name` of `response` as a number.
pub fn header_u64(response: &Response, name: &str) -> u64 {
    response.headers()[name].to_str().unwrap().parse().unwrap()
}
