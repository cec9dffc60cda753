//! A stand-in for the Hugging Face Hub on loopback, for tests (feature `test-support`; the
//! crate's own tests include this file directly).
//!
//! It serves, from files the test gives it, what the real hub serves to its clients:
//! - `GET /api/models/{org}/{repo}/revision/{revision}` (revision percent-encoded, `?blobs=true`
//!   ignored: sizes and hashes are always given): `{"id", "sha", "siblings": [{"rfilename",
//!   "size", "blobId", "lfs": {"sha256", "size", "pointerSize"}}]}`;
//! - `GET`/`HEAD /{org}/{repo}/resolve/{revision}/{path}`: an LFS file answers `302` to the
//!   "CDN" (a second listener, reached as `localhost:<port>`, so another origin) with
//!   `X-Repo-Commit`, `X-Linked-Etag`, `X-Linked-Size`, `ETag` and `Location`; a regular file
//!   answers `200` with its body, `ETag` (its git object id) and `X-Repo-Commit`;
//! - `GET /cdn/<sha256>` on the CDN: the body, with `Range: bytes=N-` answered `206`;
//! - `401` with `X-Error-Code: GatedRepo` for a gated repository without its token, `404` with
//!   `X-Error-Code: RepoNotFound`, `RevisionNotFound` or `EntryNotFound`.
//!
//! Every request is recorded (server, method, path, `Range`, `Authorization`), and a file can
//! be made to misbehave (truncate or stall mid-body) or be served with other bytes than its
//! listed sha256. A git object id here is the first 40 hex digits of a sha256 (nothing checks
//! it against git's).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::Digest as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A file of a fake repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeFile {
    /// Repository path (`rfilename`), taken as given (a test may give a hostile one).
    pub path: String,
    /// Content.
    pub content: Arc<Vec<u8>>,
    /// Stored with Git LFS: listed with `lfs.sha256` and served from the CDN.
    pub lfs: bool,
}

impl FakeFile {
    /// An LFS file (weights).
    pub fn lfs(path: &str, content: impl Into<Vec<u8>>) -> FakeFile {
        FakeFile {
            path: path.to_string(),
            content: Arc::new(content.into()),
            lfs: true,
        }
    }

    /// A regular git file (a config).
    pub fn regular(path: &str, content: impl Into<Vec<u8>>) -> FakeFile {
        FakeFile {
            path: path.to_string(),
            content: Arc::new(content.into()),
            lfs: false,
        }
    }

    /// The content's sha256, lower-case hex.
    pub fn sha256(&self) -> String {
        sha256_hex(&self.content)
    }

    /// The (fake) git object id.
    pub fn oid(&self) -> String {
        sha256_hex(&[b"blob ".as_slice(), &self.content].concat())[..40].to_string()
    }
}

/// How a file's body goes wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Misbehaviour {
    /// Announce the whole body, send this many bytes, close the connection.
    Truncate {
        /// Bytes sent.
        after: usize,
    },
    /// Announce the whole body, send this many bytes, then stay silent for a minute.
    Stall {
        /// Bytes sent.
        after: usize,
    },
}

/// One request as the fake hub saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubRequest {
    /// `hub` or `cdn`.
    pub server: &'static str,
    /// `GET` or `HEAD`.
    pub method: String,
    /// Path and query as sent.
    pub target: String,
    /// The `Range` header.
    pub range: Option<String>,
    /// The `Authorization` header.
    pub authorization: Option<String>,
}

#[derive(Default)]
struct Repo {
    token: Option<String>,
    refs: BTreeMap<String, String>,
    commits: BTreeMap<String, Vec<FakeFile>>,
}

#[derive(Default)]
struct State {
    repos: Mutex<BTreeMap<String, Repo>>,
    requests: Mutex<Vec<HubRequest>>,
    /// Content sha256 → (misbehaviour, times left).
    misbehave: Mutex<BTreeMap<String, (Misbehaviour, usize)>>,
    /// Content sha256 → bytes served instead.
    tampered: Mutex<BTreeMap<String, Arc<Vec<u8>>>>,
    cdn: Mutex<String>,
    commits: AtomicU64,
}

/// The fake hub; both listeners stop when it is dropped.
pub struct FakeHub {
    hub: SocketAddr,
    cdn: SocketAddr,
    state: Arc<State>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for FakeHub {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl FakeHub {
    /// Starts the hub (`127.0.0.1`) and its CDN (`localhost`) on free ports.
    pub async fn start() -> FakeHub {
        let state = Arc::new(State::default());
        let hub_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let cdn_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let hub = hub_listener.local_addr().unwrap();
        let cdn = cdn_listener.local_addr().unwrap();
        *state.cdn.lock().unwrap() = format!("http://localhost:{}", cdn.port());
        let tasks = vec![
            tokio::spawn(accept(hub_listener, state.clone(), "hub")),
            tokio::spawn(accept(cdn_listener, state.clone(), "cdn")),
        ];
        FakeHub {
            hub,
            cdn,
            state,
            tasks,
        }
    }

    /// The endpoint to give as `HF_ENDPOINT`: `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.hub)
    }

    /// The CDN's origin: `http://localhost:<port>`.
    pub fn cdn_origin(&self) -> String {
        format!("http://localhost:{}", self.cdn.port())
    }

    /// Publishes a new commit of `repo` holding `files` on `main`; returns the commit.
    pub fn publish(&self, repo: &str, files: Vec<FakeFile>) -> String {
        self.publish_on(repo, "main", files)
    }

    /// Publishes a new commit of `repo` holding `files` and points `branch` at it.
    pub fn publish_on(&self, repo: &str, branch: &str, files: Vec<FakeFile>) -> String {
        let count = self.state.commits.fetch_add(1, Ordering::Relaxed);
        let mut hasher = sha2::Sha256::new();
        hasher.update(format!("{repo}\n{count}\n"));
        for file in &files {
            hasher.update(format!("{} {}\n", file.path, file.sha256()));
        }
        let commit = hex::encode(hasher.finalize())[..40].to_string();
        let mut repos = self.state.repos.lock().unwrap();
        let entry = repos.entry(repo.to_string()).or_default();
        entry.commits.insert(commit.clone(), files);
        entry.refs.insert(branch.to_string(), commit.clone());
        commit
    }

    /// Gates `repo`: without `Authorization: Bearer <token>` it answers 401.
    pub fn gate(&self, repo: &str, token: &str) {
        let mut repos = self.state.repos.lock().unwrap();
        repos.entry(repo.to_string()).or_default().token = Some(token.to_string());
    }

    /// Serves `bytes` wherever the file `path` (of any repository) is downloaded, while still
    /// listing the original's size and sha256.
    pub fn tamper(&self, path: &str, bytes: impl Into<Vec<u8>>) {
        let sha256 = self.sha256_of(path);
        self.state
            .tampered
            .lock()
            .unwrap()
            .insert(sha256, Arc::new(bytes.into()));
    }

    /// Makes the next `times` downloads of the file `path` (of any repository) misbehave.
    pub fn misbehave(&self, path: &str, how: Misbehaviour, times: usize) {
        let sha256 = self.sha256_of(path);
        self.state
            .misbehave
            .lock()
            .unwrap()
            .insert(sha256, (how, times));
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<HubRequest> {
        self.state.requests.lock().unwrap().clone()
    }

    /// Forgets the requests so far.
    pub fn clear_requests(&self) {
        self.state.requests.lock().unwrap().clear();
    }

    fn sha256_of(&self, path: &str) -> String {
        let repos = self.state.repos.lock().unwrap();
        repos
            .values()
            .flat_map(|repo| repo.commits.values().flatten())
            .find(|file| file.path == path)
            .map(FakeFile::sha256)
            .unwrap_or_else(|| panic!("no published file {path}"))
    }
}

/// The smallest valid GGUF file: magic, version 3, no tensors, no metadata.
pub fn tiny_gguf() -> Vec<u8> {
    let mut bytes = b"GGUF".to_vec();
    bytes.extend(3u32.to_le_bytes());
    bytes.extend(0u64.to_le_bytes());
    bytes.extend(0u64.to_le_bytes());
    bytes
}

/// A valid safetensors file holding `payload` as one `U8` tensor named `weight`.
pub fn tiny_safetensors(payload: &[u8]) -> Vec<u8> {
    let header = format!(
        r#"{{"__metadata__":{{"format":"pt"}},"weight":{{"dtype":"U8","shape":[{}],"data_offsets":[0,{}]}}}}"#,
        payload.len(),
        payload.len()
    );
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend(header.as_bytes());
    bytes.extend(payload);
    bytes
}

/// Lower-case hex sha256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

async fn accept(listener: TcpListener, state: Arc<State>, server: &'static str) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let _ = serve(stream, state, server).await;
        });
    }
}

struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Arc<Vec<u8>>,
    /// Range support and misbehaviour apply (file bodies).
    file: Option<String>,
}

impl Answer {
    fn text(status: u16, code: Option<&str>, text: &str) -> Answer {
        let mut headers = vec![("Content-Type".to_string(), "application/json".to_string())];
        if let Some(code) = code {
            headers.push(("X-Error-Code".to_string(), code.to_string()));
        }
        Answer {
            status,
            headers,
            body: Arc::new(format!("{{\"error\":\"{text}\"}}").into_bytes()),
            file: None,
        }
    }
}

async fn serve(
    mut stream: TcpStream,
    state: Arc<State>,
    server: &'static str,
) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut buffer = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let read = stream.read(&mut buffer).await?;
        if read == 0 || head.len() > 64 * 1024 {
            return Ok(());
        }
        head.extend_from_slice(&buffer[..read]);
    }
    let text = String::from_utf8_lossy(&head).to_string();
    let mut lines = text.split("\r\n");
    let mut request_line = lines.next().unwrap_or_default().split(' ');
    let method = request_line.next().unwrap_or("GET").to_string();
    let target = request_line.next().unwrap_or("/").to_string();
    let mut headers = BTreeMap::new();
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
        }
    }
    state.requests.lock().unwrap().push(HubRequest {
        server,
        method: method.clone(),
        target: target.clone(),
        range: headers.get("range").cloned(),
        authorization: headers.get("authorization").cloned(),
    });
    let path = target.split('?').next().unwrap_or("/");
    let answer = if server == "cdn" {
        cdn(&state, path)
    } else {
        hub(
            &state,
            path,
            headers.get("authorization").map(String::as_str),
        )
    };
    respond(&mut stream, &state, &method, &headers, answer).await?;
    stream.flush().await?;
    stream.shutdown().await
}

fn cdn(state: &State, path: &str) -> Answer {
    let Some(sha256) = path.strip_prefix("/cdn/") else {
        return Answer::text(404, None, "not found");
    };
    let repos = state.repos.lock().unwrap();
    let file = repos
        .values()
        .flat_map(|repo| repo.commits.values().flatten())
        .find(|file| file.lfs && file.sha256() == sha256)
        .cloned();
    match file {
        Some(file) => Answer {
            status: 200,
            headers: vec![("ETag".to_string(), format!("\"{sha256}\""))],
            body: file.content.clone(),
            file: Some(sha256.to_string()),
        },
        None => Answer::text(404, None, "no such object"),
    }
}

fn hub(state: &State, path: &str, authorization: Option<&str>) -> Answer {
    let parts: Vec<String> = path
        .trim_start_matches('/')
        .split('/')
        .map(percent_decode)
        .collect();
    let (repo_id, revision, file_path, api) = match parts.as_slice() {
        [api, models, org, name, revision_word, rest @ ..]
            if api == "api"
                && models == "models"
                && revision_word == "revision"
                && !rest.is_empty() =>
        {
            (format!("{org}/{name}"), rest.join("/"), None, true)
        }
        [org, name, resolve, revision, rest @ ..] if resolve == "resolve" && !rest.is_empty() => (
            format!("{org}/{name}"),
            revision.clone(),
            Some(rest.join("/")),
            false,
        ),
        _ => return Answer::text(404, None, "no such route"),
    };
    let repos = state.repos.lock().unwrap();
    let Some(repo) = repos.get(&repo_id) else {
        return Answer::text(404, Some("RepoNotFound"), "Repository not found");
    };
    if let Some(token) = &repo.token
        && authorization != Some(format!("Bearer {token}").as_str())
    {
        return Answer::text(
            401,
            Some("GatedRepo"),
            "Access to this repository is restricted",
        );
    }
    let commit = if repo.commits.contains_key(&revision) {
        revision.clone()
    } else if let Some(commit) = repo.refs.get(&revision) {
        commit.clone()
    } else {
        return Answer::text(404, Some("RevisionNotFound"), "Invalid rev id");
    };
    let files = &repo.commits[&commit];
    if api {
        let siblings: Vec<serde_json::Value> = files
            .iter()
            .map(|file| {
                let mut sibling = serde_json::json!({
                    "rfilename": file.path,
                    "size": file.content.len(),
                    "blobId": file.oid(),
                });
                if file.lfs {
                    sibling["lfs"] = serde_json::json!({
                        "sha256": file.sha256(),
                        "size": file.content.len(),
                        "pointerSize": 134,
                    });
                }
                sibling
            })
            .collect();
        let body = serde_json::json!({ "id": repo_id, "sha": commit, "siblings": siblings });
        return Answer {
            status: 200,
            headers: vec![("Content-Type".to_string(), "application/json".to_string())],
            body: Arc::new(body.to_string().into_bytes()),
            file: None,
        };
    }
    let wanted = file_path.unwrap_or_default();
    let Some(file) = files.iter().find(|file| file.path == wanted) else {
        return Answer::text(404, Some("EntryNotFound"), "Entry not found");
    };
    let mut headers = vec![("X-Repo-Commit".to_string(), commit.clone())];
    if file.lfs {
        let sha256 = file.sha256();
        let cdn = state.cdn.lock().unwrap().clone();
        headers.extend([
            ("X-Linked-Etag".to_string(), format!("\"{sha256}\"")),
            ("X-Linked-Size".to_string(), file.content.len().to_string()),
            ("ETag".to_string(), format!("\"{sha256}\"")),
            (
                "Location".to_string(),
                format!("{cdn}/cdn/{sha256}?X-Amz-Signature=fake"),
            ),
        ]);
        Answer {
            status: 302,
            headers,
            body: Arc::new(Vec::new()),
            file: None,
        }
    } else {
        headers.push(("ETag".to_string(), format!("\"{}\"", file.oid())));
        Answer {
            status: 200,
            headers,
            body: file.content.clone(),
            file: Some(file.sha256()),
        }
    }
}

async fn respond(
    stream: &mut TcpStream,
    state: &State,
    method: &str,
    request_headers: &BTreeMap<String, String>,
    answer: Answer,
) -> std::io::Result<()> {
    let mut body = answer.body.clone();
    let mut misbehaviour = None;
    if let Some(sha256) = &answer.file {
        if let Some(bytes) = state.tampered.lock().unwrap().get(sha256) {
            body = bytes.clone();
        }
        let mut table = state.misbehave.lock().unwrap();
        if let Some((how, left)) = table.get_mut(sha256)
            && *left > 0
        {
            *left -= 1;
            misbehaviour = Some(*how);
        }
    }
    let len = body.len();
    let range_start = request_headers
        .get("range")
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse::<usize>().ok())
        .filter(|_| answer.file.is_some() && answer.status == 200);
    let (status, from) = match range_start {
        Some(from) if from >= len => {
            let head = format!(
                "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{len}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            return stream.write_all(head.as_bytes()).await;
        }
        Some(from) => (206, from),
        None => (answer.status, 0),
    };
    let reason = match status {
        200 => "OK",
        206 => "Partial Content",
        302 => "Found",
        401 => "Unauthorized",
        404 => "Not Found",
        _ => "Status",
    };
    let mut head = format!("HTTP/1.1 {status} {reason}\r\n");
    for (name, value) in &answer.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if status == 206 {
        head.push_str(&format!(
            "Content-Range: bytes {from}-{}/{len}\r\n",
            len - 1
        ));
    }
    if answer.file.is_some() {
        head.push_str("Accept-Ranges: bytes\r\n");
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        len - from
    ));
    stream.write_all(head.as_bytes()).await?;
    if method == "HEAD" {
        return Ok(());
    }
    match misbehaviour {
        None => stream.write_all(&body[from..]).await,
        Some(Misbehaviour::Truncate { after }) => {
            let end = (from + after).min(len);
            stream.write_all(&body[from..end]).await?;
            stream.flush().await
        }
        Some(Misbehaviour::Stall { after }) => {
            let end = (from + after).min(len);
            stream.write_all(&body[from..end]).await?;
            stream.flush().await?;
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok(())
        }
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%'
            && let Some(hex) = bytes.get(index + 1..index + 3)
            && let Ok(text) = std::str::from_utf8(hex)
            && let Ok(value) = u8::from_str_radix(text, 16)
        {
            out.push(value);
            index += 3;
        } else {
            out.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
