//! Test support: a loopback HTTP/1.1 server whose routes misbehave on purpose, recording ports,
//! and archive builders (including hostile archives written with raw headers).
//!
//! The server is a few dozen lines over tokio's TcpListener rather than a framework: the tests
//! need byte-level control (a Content-Length that the body does not honour, a stall mid-body).

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[allow(unused_imports)] // not every test binary records progress
pub use provisioner_core::RecordingProgress as Recorder;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What a path answers.
#[derive(Clone)]
pub enum Route {
    /// The file; with `ranges`, `Range: bytes=N-` gets 206 (or 416 past the end).
    File { body: Arc<Vec<u8>>, ranges: bool },
    /// A bare status with a short text body.
    Status(u16),
    /// Announces the whole body, sends `send` bytes, closes.
    Truncate { body: Arc<Vec<u8>>, send: usize },
    /// Announces the whole body, sends `after` bytes, then keeps the connection open silently.
    Stall { body: Arc<Vec<u8>>, after: usize },
    /// The file in `chunk`-byte pieces, `delay` apart (ranges honoured when `ranges`).
    Slow {
        body: Arc<Vec<u8>>,
        chunk: usize,
        delay: Duration,
        ranges: bool,
    },
    /// A redirect.
    Redirect { status: u16, location: String },
    /// Reads the request, then says nothing at all.
    Hang,
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Hit {
    pub path: String,
    pub range: Option<String>,
    pub authorization: Option<String>,
}

#[derive(Default)]
struct State {
    routes: Mutex<HashMap<String, Route>>,
    hits: Mutex<Vec<Hit>>,
}

/// The loopback server; stops when dropped.
pub struct TestServer {
    pub addr: SocketAddr,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestServer {
    pub async fn start() -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State::default());
        let shared = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let state = shared.clone();
                tokio::spawn(async move {
                    let _ = serve(stream, state).await;
                });
            }
        });
        TestServer { addr, state, task }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn route(&self, path: &str, route: Route) {
        self.state
            .routes
            .lock()
            .unwrap()
            .insert(path.to_string(), route);
    }

    pub fn file(&self, path: &str, body: &[u8], ranges: bool) {
        self.route(
            path,
            Route::File {
                body: Arc::new(body.to_vec()),
                ranges,
            },
        );
    }

    pub fn hits(&self) -> Vec<Hit> {
        self.state.hits.lock().unwrap().clone()
    }

    pub fn hits_for(&self, path: &str) -> Vec<Hit> {
        self.hits().into_iter().filter(|h| h.path == path).collect()
    }

    pub fn requests(&self) -> usize {
        self.state.hits.lock().unwrap().len()
    }
}

async fn serve(mut stream: TcpStream, state: Arc<State>) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut buffer = [0u8; 2048];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let read = stream.read(&mut buffer).await?;
        if read == 0 || head.len() > 64 * 1024 {
            return Ok(());
        }
        head.extend_from_slice(&buffer[..read]);
    }
    let text = String::from_utf8_lossy(&head).to_string();
    let mut lines = text.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let target = request_line.split(' ').nth(1).unwrap_or("/").to_string();
    let path = target.split('?').next().unwrap_or("/").to_string();
    let mut headers = HashMap::new();
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
        }
    }
    state.hits.lock().unwrap().push(Hit {
        path: path.clone(),
        range: headers.get("range").cloned(),
        authorization: headers.get("authorization").cloned(),
    });
    let route = state.routes.lock().unwrap().get(&path).cloned();
    let range_start = headers
        .get("range")
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse::<usize>().ok());
    match route {
        None => status(&mut stream, 404).await?,
        Some(Route::Status(code)) => status(&mut stream, code).await?,
        Some(Route::Redirect { status, location }) => {
            let head = format!(
                "HTTP/1.1 {status} Redirect\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            stream.write_all(head.as_bytes()).await?;
        }
        Some(Route::File { body, ranges }) => {
            if let Some(from) =
                send_head(&mut stream, &body, ranges.then_some(range_start).flatten()).await?
            {
                stream.write_all(&body[from..]).await?;
            }
        }
        Some(Route::Slow {
            body,
            chunk,
            delay,
            ranges,
        }) => {
            if let Some(from) =
                send_head(&mut stream, &body, ranges.then_some(range_start).flatten()).await?
            {
                for piece in body[from..].chunks(chunk) {
                    stream.write_all(piece).await?;
                    stream.flush().await?;
                    tokio::time::sleep(delay).await;
                }
            }
        }
        Some(Route::Truncate { body, send }) => {
            send_head(&mut stream, &body, None).await?;
            stream.write_all(&body[..send]).await?;
            stream.flush().await?;
        }
        Some(Route::Hang) => {
            tokio::time::sleep(Duration::from_secs(60)).await;
        }
        Some(Route::Stall { body, after }) => {
            send_head(&mut stream, &body, None).await?;
            stream.write_all(&body[..after]).await?;
            stream.flush().await?;
            tokio::time::sleep(Duration::from_secs(60)).await;
        }
    }
    stream.flush().await?;
    stream.shutdown().await
}

/// Writes the head for `body` (from `range` when given); returns where the body starts, or
/// `None` when no body follows (416).
async fn send_head(
    stream: &mut TcpStream,
    body: &[u8],
    range: Option<usize>,
) -> std::io::Result<Option<usize>> {
    let len = body.len();
    let head = match range {
        Some(from) if from >= len => {
            let head = format!(
                "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{len}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            stream.write_all(head.as_bytes()).await?;
            return Ok(None);
        }
        Some(from) => format!(
            "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {from}-{}/{len}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            len - 1,
            len - from
        ),
        None => format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nAccept-Ranges: bytes\r\nConnection: close\r\n\r\n"
        ),
    };
    stream.write_all(head.as_bytes()).await?;
    Ok(Some(range.unwrap_or(0)))
}

async fn status(stream: &mut TcpStream, code: u16) -> std::io::Result<()> {
    let body = format!("status {code}\n");
    let head = format!(
        "HTTP/1.1 {code} Test\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(head.as_bytes()).await
}

// ---------------------------------------------------------------------------------------------
// Ports

/// The real shell, recording every command that reaches it.
#[allow(dead_code)] // not every test binary runs commands
pub fn counting_shell() -> Arc<provisioner_core::RecordingShell> {
    Arc::new(provisioner_core::RecordingShell::new(Arc::new(
        adapters_host::HostShell::new(Arc::new(provisioner_core::NoProgress)),
    )))
}

// ---------------------------------------------------------------------------------------------
// Data and archives

/// Deterministic incompressible bytes.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

pub fn sha256(bytes: &[u8]) -> provisioner_core::Checksum {
    provisioner_core::Checksum::parse(&format!("sha256:{}", sha256_hex(bytes))).unwrap()
}

/// An entry for [`tar`]: path, data and mode, or a symlink.
pub enum Item<'a> {
    File(&'a str, &'a [u8], u32),
    Dir(&'a str),
    Symlink(&'a str, &'a str),
}

/// A plain, well-formed tar stream.
pub fn tar(items: &[Item<'_>]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for item in items {
        let mut header = tar::Header::new_gnu();
        match item {
            Item::File(path, data, mode) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_size(data.len() as u64);
                header.set_mode(*mode);
                builder.append_data(&mut header, path, *data).unwrap();
            }
            Item::Dir(path) => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_size(0);
                header.set_mode(0o755);
                builder.append_data(&mut header, path, &[][..]).unwrap();
            }
            Item::Symlink(path, target) => {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_size(0);
                header.set_mode(0o777);
                builder.append_link(&mut header, path, target).unwrap();
            }
        }
    }
    builder.into_inner().unwrap()
}

/// A raw tar header: the name bytes go in unchecked (the builder would refuse hostile ones).
pub fn raw_header(
    name: &[u8],
    entry_type: tar::EntryType,
    size: u64,
    mode: u32,
    link: Option<&[u8]>,
) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    {
        let old = header.as_old_mut();
        old.name = [0; 100];
        old.name[..name.len()].copy_from_slice(name);
    }
    header.set_entry_type(entry_type);
    header.set_size(size);
    header.set_mode(mode);
    if let Some(link) = link {
        header.set_link_name_literal(link).unwrap();
    }
    header.set_cksum();
    header
}

/// A tar stream of raw entries (header, data).
pub fn raw_tar(entries: &[(tar::Header, Vec<u8>)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (header, data) in entries {
        builder.append(header, data.as_slice()).unwrap();
    }
    builder.into_inner().unwrap()
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

pub fn zstd(bytes: &[u8]) -> Vec<u8> {
    ruzstd::encoding::compress_to_vec(bytes, ruzstd::encoding::CompressionLevel::Fastest)
}

pub fn xz(bytes: &[u8]) -> Vec<u8> {
    let mut writer =
        lzma_rust2::XzWriter::new(Vec::new(), lzma_rust2::XzOptions::with_preset(1)).unwrap();
    writer.write_all(bytes).unwrap();
    writer.finish().unwrap()
}

/// A zip file: (name, data, unix mode) with deflate.
pub fn zip(items: &[(&str, &[u8], u32)]) -> Vec<u8> {
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, data, mode) in items {
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .unix_permissions(*mode);
        writer.start_file(*name, options).unwrap();
        writer.write_all(data).unwrap();
    }
    writer.finish().unwrap().into_inner()
}

/// The fake engine's archive: `bin/fake-engine` printing `version`, `bin/libfoo.so.1`, the
/// `bin/libfoo.so` link, and `filler` bytes of noise (to make downloads take a while).
pub fn engine_archive(version: &str, filler: usize) -> Vec<u8> {
    let script = format!("#!/bin/sh\necho \"version: {version}\"\n");
    let noise = noise(filler, 7);
    let mut items = vec![
        Item::Dir("bin"),
        Item::File("bin/fake-engine", script.as_bytes(), 0o755),
        Item::File("bin/libfoo.so.1", b"not really a library", 0o644),
        Item::Symlink("bin/libfoo.so", "libfoo.so.1"),
    ];
    if filler > 0 {
        items.push(Item::File("share/filler.bin", &noise, 0o644));
    }
    gzip(&tar(&items))
}
