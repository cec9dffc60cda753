//! The registry's HTTP API, every answer read under a size cap: `GET /v2/<name>/manifests/<ref>`,
//! `GET /v2/<name>/blobs/<digest>` and `GET /v2/<name>/tags/list` (OCI distribution
//! specification 1.1, "Pull" and "Content discovery"), with the registry's own authentication.
//!
//! These requests are ours rather than oci-client's because its client reads every body whole
//! (manifests, token answers, tag lists) before anything can look at its size: a registry that
//! answers with an endless body would take all memory. Here a body is refused once it passes
//! its cap (a `Content-Length` over it is refused before reading), and the refusal says so.
//!
//! Authentication follows the challenge of a `401` (RFC 7235 `WWW-Authenticate`):
//! `Bearer realm="…",service="…"` is answered by the token protocol of the Docker registry
//! (`GET <realm>?service=…&scope=repository:<name>:pull`, with Basic credentials when there are
//! any, giving `{"token": …}` or `{"access_token": …}`); `Basic realm="…"` by the credentials on
//! every request. Without credentials, or when the registry refuses them, the answer is
//! [`Problem::Unauthorized`], and the caller looks for credentials and tries again.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use provisioner_core::{Action, Error, Policy, SafeUrl};

use reqwest::StatusCode;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_LENGTH, HeaderMap, WWW_AUTHENTICATE};

use crate::auth::Credentials;

/// The most a token answer may hold: 1 MiB (a JSON web token is a few KiB).
const MAX_TOKEN_ANSWER: u64 = 1024 * 1024;

/// Installs ring as rustls' crypto provider once (without one, building a TLS client panics).
fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Err means another provider is already installed, which is as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// The HTTP client for the registry requests of one resolution: its sessions share its
/// connections (the retry with credentials after an anonymous attempt reuses the connection)
/// and its TLS setup is built once. Every host beyond the registry itself (a redirect, a token
/// realm) is asked of the policy first, as a download of that URL would be.
#[derive(Clone)]
pub(crate) struct Http {
    client: reqwest::Client,
    policy: Arc<dyn Policy>,
    /// The policy's refusal of a redirect, which reqwest reports only as a failed request.
    refused: Arc<Mutex<Option<Error>>>,
}

impl Http {
    pub fn new(policy: Arc<dyn Policy>) -> Http {
        install_crypto_provider();
        let refused: Arc<Mutex<Option<Error>>> = Arc::default();
        let (hop_policy, hop_refused) = (policy.clone(), refused.clone());
        let redirects = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() >= 10 {
                return attempt.error("more than 10 redirects");
            }
            match check_hop(hop_policy.as_ref(), attempt.url().as_str()) {
                Ok(()) => attempt.follow(),
                Err(error) => {
                    let text = error.to_string();
                    if let Ok(mut slot) = hop_refused.lock() {
                        *slot = Some(error);
                    }
                    attempt.error(text)
                }
            }
        });
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(30))
            .read_timeout(Duration::from_secs(60))
            .redirect(redirects)
            .user_agent(concat!("engine-provisioner/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        Http {
            client,
            policy,
            refused,
        }
    }

    /// What a failed request becomes: the policy's refusal of a redirect, else the transport
    /// error.
    fn failed(&self, error: reqwest::Error) -> Problem {
        match self.refused.lock().ok().and_then(|mut slot| slot.take()) {
            Some(refusal) => Problem::Refused(refusal),
            None => transport(error),
        }
    }
}

/// Asks `policy` whether `url` (a redirect target or a token realm) may be fetched.
fn check_hop(policy: &dyn Policy, url: &str) -> provisioner_core::Result<()> {
    let url = SafeUrl::parse(url).map_err(|message| Error::Download {
        url: url.to_string(),
        message,
        hint: None,
    })?;
    policy.check(&Action::Download {
        url,
        allowed_by_config: None,
    })
}

/// Why a request did not give a document.
#[derive(Debug)]
pub(crate) enum Problem {
    /// `401`/`403`, after the registry's challenge was answered with what there was.
    Unauthorized,
    /// The policy refused a host beyond the registry (a redirect or a token realm).
    Refused(Error),
    /// The body passed the cap it was read under (or said it would).
    TooLarge,
    /// Any other status, with the registry's error codes (`NAME_UNKNOWN`, `MANIFEST_UNKNOWN`, …)
    /// and messages from its error body when it sent one.
    Status {
        /// The HTTP status.
        status: u16,
        /// `(code, message)` pairs of the error body.
        errors: Vec<(String, String)>,
    },
    /// No answer: connection, TLS, timeout; the text is the whole error chain.
    Transport(String),
}

/// A document the registry answered with `200`.
#[derive(Debug)]
pub(crate) struct Document {
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

/// Requests to one repository of one registry, keeping the authorization the first challenge
/// gave for the ones after it.
pub(crate) struct Session {
    http: Http,
    /// `https://host[:port]` (`http://` for a registry marked insecure).
    base: String,
    repository: String,
    credentials: Option<Credentials>,
    authorization: Option<String>,
}

impl Session {
    /// A session with `registry` (host and port as in the image reference; Docker Hub's
    /// `docker.io` is served by `index.docker.io`) for `repository`.
    pub fn new(
        http: Http,
        registry: &str,
        repository: &str,
        insecure: bool,
        credentials: Option<Credentials>,
    ) -> Session {
        let host = if registry == "docker.io" {
            "index.docker.io"
        } else {
            registry
        };
        Session {
            http,
            base: format!("{}://{host}", if insecure { "http" } else { "https" }),
            repository: repository.to_string(),
            credentials,
            authorization: None,
        }
    }

    /// `GET /v2/<repository>/<path>` accepting `accept`, its body at most `limit` bytes.
    pub async fn get(&mut self, path: &str, accept: &str, limit: u64) -> Result<Document, Problem> {
        let url = format!("{}/v2/{}/{path}", self.base, self.repository);
        let mut answered_challenge = false;
        loop {
            let mut request = self.http.client.get(&url).header(ACCEPT, accept);
            if let Some(authorization) = &self.authorization {
                request = request.header(AUTHORIZATION, authorization);
            }
            let sent = std::time::Instant::now();
            let response = request
                .send()
                .await
                .map_err(|error| self.http.failed(error))?;
            let status = response.status();
            tracing::debug!(
                path,
                status = status.as_u16(),
                elapsed_ms = sent.elapsed().as_secs_f64() * 1e3,
                "registry answered"
            );
            if status == StatusCode::UNAUTHORIZED && !answered_challenge {
                answered_challenge = true;
                let challenge = response
                    .headers()
                    .get(WWW_AUTHENTICATE)
                    .and_then(|value| value.to_str().ok())
                    .map(str::to_string);
                self.authorization = Some(self.answer(challenge.as_deref()).await?);
                continue;
            }
            if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                return Err(Problem::Unauthorized);
            }
            let headers = response.headers().clone();
            if !status.is_success() {
                let body = read_capped(response, 64 * 1024).await.unwrap_or_default();
                return Err(Problem::Status {
                    status: status.as_u16(),
                    errors: error_codes(&body),
                });
            }
            let body = read_capped(response, limit).await?;
            return Ok(Document { headers, body });
        }
    }

    /// The `Authorization` value that answers `challenge`.
    async fn answer(&self, challenge: Option<&str>) -> Result<String, Problem> {
        let Some(challenge) = challenge else {
            return Err(Problem::Unauthorized);
        };
        let (scheme, parameters) = challenge
            .trim()
            .split_once(' ')
            .unwrap_or((challenge.trim(), ""));
        if scheme.eq_ignore_ascii_case("basic") {
            return self
                .credentials
                .as_ref()
                .map(|credentials| format!("Basic {}", credentials.encoded()))
                .ok_or(Problem::Unauthorized);
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(Problem::Unauthorized);
        }
        let parameters = challenge_parameters(parameters);
        let find = |name: &str| {
            parameters
                .iter()
                .find(|(key, _)| key.eq_ignore_ascii_case(name))
                .map(|(_, value)| value.as_str())
        };
        let Some(realm) = find("realm") else {
            return Err(Problem::Unauthorized);
        };
        let scope = format!("repository:{}:pull", self.repository);
        let mut query = vec![("scope", scope.as_str())];
        if let Some(service) = find("service") {
            query.push(("service", service));
        }
        check_hop(self.http.policy.as_ref(), realm).map_err(Problem::Refused)?;
        let mut request = self.http.client.get(realm).query(&query);
        if let Some(credentials) = &self.credentials {
            request = request.header(AUTHORIZATION, format!("Basic {}", credentials.encoded()));
        }
        let response = request
            .send()
            .await
            .map_err(|error| self.http.failed(error))?;
        if !response.status().is_success() {
            return Err(Problem::Unauthorized);
        }
        let body = read_capped(response, MAX_TOKEN_ANSWER).await?;
        let answer: serde_json::Value =
            serde_json::from_slice(&body).map_err(|_| Problem::Unauthorized)?;
        ["token", "access_token"]
            .iter()
            .find_map(|field| answer[field].as_str().filter(|token| !token.is_empty()))
            .map(|token| format!("Bearer {token}"))
            .ok_or(Problem::Unauthorized)
    }
}

/// The `name=value` (or `name="value"`) pairs of a challenge, commas inside quotes kept.
fn challenge_parameters(text: &str) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let Some((name, after)) = rest.split_once('=') else {
            break;
        };
        let name = name.trim().trim_start_matches(',').trim().to_string();
        let after = after.trim_start();
        let (value, remainder) = if let Some(quoted) = after.strip_prefix('"') {
            match quoted.find('"') {
                Some(end) => (quoted[..end].to_string(), &quoted[end + 1..]),
                None => (quoted.to_string(), ""),
            }
        } else {
            match after.find(',') {
                Some(end) => (after[..end].trim().to_string(), &after[end..]),
                None => (after.trim().to_string(), ""),
            }
        };
        pairs.push((name, value));
        rest = remainder.trim_start().trim_start_matches(',').trim_start();
    }
    pairs
}

/// The body of `response`, refused once it passes `limit` bytes.
async fn read_capped(mut response: reqwest::Response, limit: u64) -> Result<Vec<u8>, Problem> {
    let declared = response
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit) {
        return Err(Problem::TooLarge);
    }
    let mut body = Vec::with_capacity(declared.unwrap_or(0).min(limit) as usize);
    while let Some(chunk) = response.chunk().await.map_err(transport)? {
        if (body.len() + chunk.len()) as u64 > limit {
            return Err(Problem::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The `(code, message)` pairs of a registry's error body
/// (`{"errors": [{"code": …, "message": …}]}`); empty for any other body.
fn error_codes(body: &[u8]) -> Vec<(String, String)> {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else {
        return Vec::new();
    };
    value["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .map(|error| {
                    (
                        error["code"].as_str().unwrap_or_default().to_string(),
                        error["message"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn transport(error: reqwest::Error) -> Problem {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    Problem::Transport(text)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use axum::http::{HeaderMap as Headers, StatusCode as Status, Uri};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    fn open() -> Http {
        Http::new(Arc::new(policy::HostPolicy::default()))
    }

    /// A registry on loopback whose `x/y` repository needs a bearer token from its own `/token`
    /// endpoint, which wants `user:pass`.
    async fn token_registry() -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let realm = format!("http://{address}/token");
        let handler = move |uri: Uri, headers: Headers| {
            let realm = realm.clone();
            async move {
                let authorization = headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                let challenge = format!(r#"Bearer realm="{realm}",service="fake registry""#);
                match uri.path() {
                    "/token" => {
                        let query = uri.query().unwrap_or_default();
                        let basic = format!("Basic {}", Credentials::new("user", "pass").encoded());
                        if authorization == basic
                            && query.contains("scope=repository%3Ax%2Fy%3Apull")
                            && query.contains("service=fake+registry")
                        {
                            (Status::OK, Vec::new(), r#"{"token":"t0k"}"#.to_string())
                        } else {
                            (Status::UNAUTHORIZED, Vec::new(), String::new())
                        }
                    }
                    "/v2/x/y/manifests/v1" if authorization == "Bearer t0k" => {
                        (Status::OK, Vec::new(), "{}".to_string())
                    }
                    _ => (
                        Status::UNAUTHORIZED,
                        vec![("www-authenticate", challenge)],
                        String::new(),
                    ),
                }
            }
        };
        let app = axum::Router::new().fallback(move |uri: Uri, headers: Headers| {
            let handler = handler.clone();
            async move {
                let (status, extra, body) = handler(uri, headers).await;
                let mut response = axum::http::Response::builder().status(status);
                for (name, value) in extra {
                    response = response.header(name, value);
                }
                response.body(axum::body::Body::from(body)).unwrap()
            }
        });
        tokio::spawn(async move { axum::serve(listener, app).await });
        address
    }

    #[tokio::test]
    async fn a_bearer_challenge_is_answered_with_a_token_for_the_credentials() {
        let registry = token_registry().await;
        let credentials = Some(Credentials::new("user", "pass"));
        let mut session = Session::new(open(), &registry, "x/y", true, credentials);
        let document = session
            .get("manifests/v1", "application/json", 1024)
            .await
            .unwrap();
        assert_eq!(document.body, b"{}");
        assert_eq!(session.authorization.as_deref(), Some("Bearer t0k"));

        for credentials in [None, Some(Credentials::new("user", "wrong"))] {
            let mut session = Session::new(open(), &registry, "x/y", true, credentials);
            let refused = session.get("manifests/v1", "application/json", 1024).await;
            assert!(matches!(refused, Err(Problem::Unauthorized)), "{refused:?}");
        }
    }

    /// A server on loopback that answers every request with `status` and one header; returns
    /// its address.
    async fn answering(status: Status, header: &'static str, value: &'static str) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let app = axum::Router::new().fallback(move || async move {
            axum::http::Response::builder()
                .status(status)
                .header(header, value)
                .body(axum::body::Body::empty())
                .unwrap()
        });
        tokio::spawn(async move { axum::serve(listener, app).await });
        address
    }

    /// A registry whose token realm is on another host: the policy is asked before anything
    /// is sent there, and its refusal is the answer.
    #[tokio::test]
    async fn a_token_realm_on_another_host_is_asked_of_the_policy() {
        let registry = answering(
            Status::UNAUTHORIZED,
            "www-authenticate",
            r#"Bearer realm="https://auth.example.invalid/token",service="x""#,
        )
        .await;
        let offline = Http::new(Arc::new(policy::HostPolicy {
            offline: true,
            ..policy::HostPolicy::default()
        }));
        let credentials = Some(Credentials::new("user", "pass"));
        let mut session = Session::new(offline, &registry, "x/y", true, credentials);
        let refused = session
            .get("manifests/v1", "application/json", 1024)
            .await
            .unwrap_err();
        let Problem::Refused(error) = refused else {
            panic!("{refused:?}");
        };
        assert!(
            error.to_string().contains("auth.example.invalid"),
            "{error}"
        );
    }

    /// A redirect to another host (registries send blobs to their storage that way) is asked
    /// of the policy before it is followed.
    #[tokio::test]
    async fn a_redirect_to_another_host_is_asked_of_the_policy() {
        let registry = answering(
            Status::TEMPORARY_REDIRECT,
            "location",
            "https://storage.example.invalid/blob",
        )
        .await;
        let allowlist = Http::new(Arc::new(policy::HostPolicy {
            allowed_hosts: Some(vec!["127.0.0.1".to_string()]),
            ..policy::HostPolicy::default()
        }));
        let mut session = Session::new(allowlist, &registry, "x/y", true, None);
        let refused = session
            .get("blobs/sha256:0", "application/json", 1024)
            .await
            .unwrap_err();
        let Problem::Refused(error) = refused else {
            panic!("{refused:?}");
        };
        assert!(
            error.to_string().contains("storage.example.invalid"),
            "{error}"
        );
    }

    /// A server that answers every request with `head` and then 1 MiB chunks of a chunked body
    /// until the client hangs up; returns its address and the body bytes it managed to send.
    async fn endless(head: &'static str) -> (String, Arc<AtomicU64>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let sent = Arc::new(AtomicU64::new(0));
        let counter = sent.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let counter = counter.clone();
                tokio::spawn(async move {
                    let mut request = [0u8; 4096];
                    let _ = socket.read(&mut request).await;
                    if socket.write_all(head.as_bytes()).await.is_err() {
                        return;
                    }
                    let chunk = vec![b' '; 1 << 20];
                    loop {
                        let frame = format!("{:x}\r\n", chunk.len());
                        if socket.write_all(frame.as_bytes()).await.is_err()
                            || socket.write_all(&chunk).await.is_err()
                            || socket.write_all(b"\r\n").await.is_err()
                        {
                            return;
                        }
                        counter.fetch_add(chunk.len() as u64, Ordering::SeqCst);
                    }
                });
            }
        });
        (address, sent)
    }

    #[tokio::test]
    async fn an_endless_body_is_refused_at_the_cap_without_reading_on() {
        let (registry, sent) = endless(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
        )
        .await;
        let mut session = Session::new(open(), &registry, "x/y", true, None);
        let limit = 4 * 1024 * 1024;
        let refused = session.get("manifests/v1", "application/json", limit).await;
        assert!(
            matches!(refused, Err(Problem::TooLarge)),
            "{:?}",
            refused.err()
        );
        // What was sent before the hang-up is the cap plus what sat in socket buffers.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let sent = sent.load(Ordering::SeqCst);
        assert!(sent < 4 * limit, "the server sent {sent} bytes");
    }

    #[tokio::test]
    async fn a_declared_length_over_the_cap_is_refused_before_reading() {
        let (registry, _) = endless(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1099511627776\r\n\r\n",
        )
        .await;
        let mut session = Session::new(open(), &registry, "x/y", true, None);
        let refused = session.get("manifests/v1", "application/json", 1024).await;
        assert!(
            matches!(refused, Err(Problem::TooLarge)),
            "{:?}",
            refused.err()
        );
    }

    #[test]
    fn challenge_parameters_keep_quoted_commas() {
        let pairs = challenge_parameters(
            r#"realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(
            pairs,
            vec![
                ("realm".into(), "https://auth.example/token".into()),
                ("service".into(), "registry.example".into()),
                ("scope".into(), "repository:a/b:pull,push".into()),
            ]
        );
        assert_eq!(
            challenge_parameters("realm=x, service = y"),
            vec![("realm".into(), "x".into()), ("service".into(), "y".into())]
        );
        assert!(challenge_parameters("").is_empty());
    }

    #[test]
    fn error_bodies_give_their_codes() {
        let body =
            br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{}}]}"#;
        assert_eq!(
            error_codes(body),
            vec![("MANIFEST_UNKNOWN".into(), "manifest unknown".into())]
        );
        assert!(error_codes(b"<html>").is_empty());
    }
}
