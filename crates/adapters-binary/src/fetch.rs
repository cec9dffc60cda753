//! [`HttpFetcher`]: the [`Fetcher`] port over `https://`, `http://` (ureq) and `file://`.
//!
//! A download streams through a fixed-size buffer into `<destination>.partial` while it is
//! hashed; only a body that passed the size cap and the checksum is renamed to `destination`.
//! A checksum mismatch or an oversized body deletes the partial file, so corrupt bytes are never
//! resumed; any other failure (stall, truncation, HTTP error) keeps it, and the next fetch re-hashes
//! it and asks for the rest with `Range: bytes=N-`.
//!
//! [`Fetcher::query`] sends a GET whose answer (status, headers, a capped body) is returned in
//! memory, for JSON APIs such as the Hugging Face Hub's; its redirects are followed and vetted
//! exactly as a download's. A request's [`FetchRequest::authorization`] (a hub token) goes to the
//! URL's own origin only, never to a redirect target elsewhere (a CDN host).
//!
//! Errors: problems with the remote side (HTTP status, redirects, connection, stall, truncation,
//! checksum or size mismatch) are [`Error::Download`] with `url` = the URL without credentials;
//! problems with the local disk are [`Error::Io`].

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use provisioner_core::{
    Action, Algorithm, Checksum, Error, FetchRequest, Fetched, Fetcher, Policy, Progress,
    ProgressEvent, QueryAnswer, QueryRequest, Result, SafeUrl,
};

use crate::hash::{BUFFER_SIZE, StreamHasher};
use crate::url::{Parts, basic_auth, file_path, redact, resolve_redirect, split};

/// How often byte progress is reported at most.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(100);
/// Buffers in flight between the reading and the writing/hashing thread of a download.
const PIPELINE_DEPTH: usize = 4;
/// Size of one of those buffers: larger than the hashing buffer, so that each hop between the
/// threads carries more (at most `PIPELINE_DEPTH + 2` of them exist: about 1.5 MiB).
const CHUNK_SIZE: usize = 256 * 1024;
/// How often a download waiting for another one's lock on the same partial file looks again.
const LOCK_POLL: Duration = Duration::from_millis(50);

/// Network settings of [`HttpFetcher`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchSettings {
    /// Limit for resolving the host and establishing the connection (TLS included).
    pub connect_timeout: Duration,
    /// A download fails when no byte arrives for this long (headers or body).
    pub stall_timeout: Duration,
    /// Redirects followed at most; one more fails the download.
    pub max_redirects: u32,
    /// `User-Agent` header.
    pub user_agent: String,
}

impl Default for FetchSettings {
    fn default() -> Self {
        FetchSettings {
            connect_timeout: Duration::from_secs(30),
            stall_timeout: Duration::from_secs(30),
            max_redirects: 10,
            user_agent: format!("engine-provisioner/{}", env!("CARGO_PKG_VERSION")),
        }
    }
}

/// Downloads over https, http and file URLs, hashing while streaming, resumable.
///
/// Proxies come from the environment (`ALL_PROXY`, `HTTPS_PROXY`, `HTTP_PROXY`, `NO_PROXY`,
/// read when the fetcher is created). TLS is rustls with the bundled Mozilla roots. Whether plain
/// http may be used at all is the Policy port's decision, made before the fetcher is called; the
/// fetcher itself never follows a redirect from https down to http, nor to any other scheme.
pub struct HttpFetcher {
    progress: Arc<dyn Progress>,
    settings: FetchSettings,
    agent: ureq::Agent,
    /// Asked about every redirect target before it is contacted (the first URL was asked by
    /// the caller).
    policy: Option<Arc<dyn Policy>>,
}

impl std::fmt::Debug for HttpFetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpFetcher")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl HttpFetcher {
    /// A fetcher reporting to `progress`.
    pub fn new(progress: Arc<dyn Progress>, settings: FetchSettings) -> Self {
        let config = ureq::Agent::config_builder()
            // Statuses and redirects are handled here: every hop is vetted.
            .http_status_as_error(false)
            .max_redirects(0)
            .max_redirects_will_error(false)
            .timeout_resolve(Some(settings.connect_timeout))
            .timeout_connect(Some(settings.connect_timeout))
            .timeout_per_read(Some(settings.stall_timeout))
            .timeout_per_write(Some(settings.stall_timeout))
            .user_agent(settings.user_agent.as_str())
            .build();
        HttpFetcher {
            progress,
            settings,
            agent: ureq::Agent::new_with_config(config),
            policy: None,
        }
    }

    /// Checks every redirect target against `policy` (`--offline`, the allowed hosts, plain
    /// http) before contacting it: a redirect to a host the policy refuses fails with
    /// [`Error::PolicyDenied`] naming the target and where it came from.
    pub fn with_policy(mut self, policy: Arc<dyn Policy>) -> Self {
        self.policy = Some(policy);
        self
    }

    /// The settings in use.
    pub fn settings(&self) -> &FetchSettings {
        &self.settings
    }
}

/// `<destination>.partial`: where the body is streamed before it is verified.
pub fn partial_path(destination: &Path) -> Result<PathBuf> {
    let Some(name) = destination.file_name() else {
        return Err(Error::data(
            "download to",
            destination,
            "the destination has no file name",
        ));
    };
    let mut name = name.to_os_string();
    name.push(".partial");
    Ok(destination.with_file_name(name))
}

/// Sets a flag when dropped, so that the blocking download stops when its future is dropped.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

#[async_trait]
impl Fetcher for HttpFetcher {
    async fn fetch(&self, request: &FetchRequest) -> Result<Fetched> {
        let shown = request.url.redacted();
        let step = format!("download {shown}");
        self.progress.report(ProgressEvent::Started {
            step: step.clone(),
            detail: Some(request.destination.display().to_string()),
        });
        let cancel = Arc::new(AtomicBool::new(false));
        let _cancel_on_drop = CancelOnDrop(cancel.clone());
        let job = Job {
            policy: self.policy.clone(),
            agent: self.agent.clone(),
            max_redirects: self.settings.max_redirects,
            stall_timeout: self.settings.stall_timeout,
            progress: self.progress.clone(),
            request: request.clone(),
            cancel,
            step: step.clone(),
            shown,
        };
        let destination = request.destination.clone();
        let fetched = tokio::task::spawn_blocking(move || job.run())
            .await
            .map_err(|error| Error::data("download to", destination, error))??;
        self.progress.report(ProgressEvent::Finished { step });
        Ok(fetched)
    }

    /// A GET whose body is read into memory, redirects followed and vetted as for downloads;
    /// reports no progress (a query is small).
    async fn query(&self, request: &QueryRequest) -> Result<QueryAnswer> {
        let shown = request.url.redacted();
        let cancel = Arc::new(AtomicBool::new(false));
        let _cancel_on_drop = CancelOnDrop(cancel.clone());
        let job = Job {
            policy: self.policy.clone(),
            agent: self.agent.clone(),
            max_redirects: self.settings.max_redirects,
            stall_timeout: self.settings.stall_timeout,
            progress: self.progress.clone(),
            request: FetchRequest {
                url: request.url.clone(),
                destination: PathBuf::new(),
                expected: None,
                max_bytes: Some(request.max_bytes),
                authorization: request.authorization.clone(),
            },
            cancel,
            step: format!("query {shown}"),
            shown: shown.clone(),
        };
        tokio::task::spawn_blocking(move || job.query())
            .await
            .map_err(|error| Error::Download {
                url: shown,
                message: format!("the query did not finish: {error}"),
                hint: None,
            })?
    }
}

/// One download, run on a blocking thread.
struct Job {
    policy: Option<Arc<dyn Policy>>,
    agent: ureq::Agent,
    max_redirects: u32,
    stall_timeout: Duration,
    progress: Arc<dyn Progress>,
    request: FetchRequest,
    cancel: Arc<AtomicBool>,
    step: String,
    /// The URL without credentials, for every message.
    shown: String,
}

/// The partial file being written and the digest of what it holds.
struct Transfer {
    file: File,
    path: PathBuf,
    hasher: StreamHasher,
    /// Bytes in the partial file (all hashed).
    done: u64,
    /// Expected final size, when the server said.
    total: Option<u64>,
    buffer: Vec<u8>,
    last_report: Option<Instant>,
}

impl Transfer {
    /// Empties the partial file and the digest.
    fn restart(&mut self) -> std::io::Result<()> {
        self.file.set_len(0)?;
        self.file.seek(SeekFrom::Start(0))?;
        self.hasher = StreamHasher::new(self.hasher.algorithm());
        self.done = 0;
        self.total = None;
        Ok(())
    }

    /// Hashes what the partial file already holds; leaves the position at its end.
    fn rehash(&mut self) -> std::io::Result<()> {
        self.file.seek(SeekFrom::Start(0))?;
        self.hasher = StreamHasher::new(self.hasher.algorithm());
        self.done = 0;
        loop {
            let read = match self.file.read(&mut self.buffer) {
                Ok(0) => break,
                Ok(read) => read,
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(error),
            };
            self.hasher.update(&self.buffer[..read]);
            self.done += read as u64;
        }
        Ok(())
    }
}

/// How a body read ended badly.
enum PumpError {
    Read(std::io::Error),
    Fatal(Error),
}

impl Job {
    /// Sends the GET of a query and reads the body into memory, up to the cap.
    fn query(self) -> Result<QueryAnswer> {
        let Some(parts) = split(self.request.url.expose()) else {
            return Err(self.error("cannot parse the URL".to_string(), None));
        };
        if !matches!(parts.scheme.as_str(), "https" | "http") {
            return Err(self.error(
                format!("unsupported URL scheme `{}` for a query", parts.scheme),
                Some("use an https:// or http:// URL".to_string()),
            ));
        }
        let credentials = self.credentials(&parts);
        let url = parts.without_credentials();
        let (mut response, answered) = self.open(&url, &credentials, 0)?;
        let status = response.status().as_u16();
        let mut headers = std::collections::BTreeMap::new();
        for (name, value) in response.headers() {
            if let Ok(value) = value.to_str() {
                headers
                    .entry(name.as_str().to_ascii_lowercase())
                    .or_insert_with(|| value.to_string());
            }
        }
        let max = self.request.max_bytes.unwrap_or(u64::MAX);
        let mut body = Vec::new();
        let mut reader = response.body_mut().as_reader().take(max.saturating_add(1));
        if let Err(error) = reader.read_to_end(&mut body) {
            let timed_out = error.kind() == std::io::ErrorKind::TimedOut
                || error
                    .get_ref()
                    .and_then(|inner| inner.downcast_ref::<ureq::Error>())
                    .is_some_and(|inner| matches!(inner, ureq::Error::Timeout(_)));
            let message = if timed_out {
                format!(
                    "the server stalled: no data for {} s after {} bytes",
                    self.stall_timeout.as_secs_f64(),
                    body.len()
                )
            } else {
                format!(
                    "reading the answer failed after {} bytes: {error}",
                    body.len()
                )
            };
            return Err(self.error(message, None));
        }
        if body.len() as u64 > max {
            return Err(self.error(
                format!("the answer is larger than the allowed {max} bytes"),
                None,
            ));
        }
        let url = SafeUrl::parse(&answered)
            .map_err(|message| self.error(format!("the answering URL {message}"), None))?;
        Ok(QueryAnswer {
            status,
            url,
            headers,
            body,
        })
    }

    /// The `Authorization` to send to the URL's own origin: the request's own, else the
    /// user-info written in the URL.
    fn credentials(&self, parts: &Parts<'_>) -> Credentials {
        Credentials {
            origin: parts.origin(),
            authorization: self
                .request
                .authorization
                .as_ref()
                .map(|secret| secret.expose().to_string())
                .or_else(|| parts.userinfo.map(basic_auth)),
        }
    }

    fn run(self) -> Result<Fetched> {
        let Some(parts) = split(self.request.url.expose()) else {
            return Err(self.error(
                "cannot parse the URL".to_string(),
                Some("write a full URL: https://host/path/file.tar.gz".to_string()),
            ));
        };
        if !matches!(parts.scheme.as_str(), "https" | "http" | "file") {
            return Err(self.error(
                format!("unsupported URL scheme `{}`", parts.scheme),
                Some("use an https://, http:// or file:// URL".to_string()),
            ));
        }
        let destination = self.request.destination.clone();
        let partial = partial_path(&destination)?;
        if let Some(parent) = destination.parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent).map_err(|e| Error::io("create", parent, e))?;
        }
        let file = self.open_locked(&partial)?;
        let algorithm = self
            .request
            .expected
            .as_ref()
            .map_or(Algorithm::Sha256, |expected| expected.algorithm);
        let mut transfer = Transfer {
            file,
            path: partial,
            hasher: StreamHasher::new(algorithm),
            done: 0,
            total: None,
            buffer: vec![0u8; BUFFER_SIZE],
            last_report: None,
        };
        if parts.scheme == "file" {
            self.copy_local(&mut transfer)?;
        } else {
            self.download(&parts, &mut transfer)?;
        }
        self.finish(transfer, &destination)
    }

    fn error(&self, message: String, hint: Option<String>) -> Error {
        Error::Download {
            url: self.shown.clone(),
            message,
            hint,
        }
    }

    fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    /// Opens the partial file and takes its lock, so that two downloads never write the same
    /// file. A lock won on a file that was meanwhile renamed or deleted by its previous holder is
    /// dropped and the path opened again.
    fn open_locked(&self, path: &Path) -> Result<File> {
        let mut noted = false;
        loop {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)
                .map_err(|e| Error::io("open", path, e))?;
            match file.try_lock() {
                Ok(()) => {
                    let held = file.metadata().map_err(|e| Error::io("inspect", path, e))?;
                    let current = std::fs::symlink_metadata(path).ok();
                    if current.is_some_and(|current| {
                        current.dev() == held.dev() && current.ino() == held.ino()
                    }) {
                        return Ok(file);
                    }
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    if !noted {
                        noted = true;
                        self.progress.report(ProgressEvent::Note {
                            message: format!(
                                "waiting for another download of {} to finish",
                                self.shown
                            ),
                        });
                    }
                    if self.cancelled() {
                        return Err(Error::Cancelled);
                    }
                    std::thread::sleep(LOCK_POLL);
                }
                Err(std::fs::TryLockError::Error(error)) => {
                    return Err(Error::io("lock", path, error));
                }
            }
        }
    }

    fn report(&self, transfer: &mut Transfer, force: bool) {
        self.report_bytes(
            &mut transfer.last_report,
            transfer.done,
            transfer.total,
            force,
        );
    }

    fn report_bytes(
        &self,
        last_report: &mut Option<Instant>,
        done: u64,
        total: Option<u64>,
        force: bool,
    ) {
        let due = last_report.is_none_or(|last| last.elapsed() >= PROGRESS_INTERVAL);
        if force || due {
            *last_report = Some(Instant::now());
            self.progress.report(ProgressEvent::Bytes {
                step: self.step.clone(),
                done,
                total,
            });
        }
    }

    fn too_large(&self, transfer: &Transfer, announced: Option<u64>) -> Error {
        let _ = std::fs::remove_file(&transfer.path);
        let max = self.request.max_bytes.unwrap_or(u64::MAX);
        let message = match announced {
            Some(size) => format!("the file is {size} bytes, more than the allowed {max}"),
            None => format!("the body exceeds the allowed {max} bytes"),
        };
        self.error(
            message,
            Some("check provisioning.binary.url and provisioning.binary.size".to_string()),
        )
    }

    /// Streams `reader` into the partial file through the hasher. Reading runs on this thread,
    /// writing and hashing on a second one, with a few buffers in flight between them: the
    /// download goes as fast as the slower of the two, not the sum of both (hashing costs about
    /// as much as a loopback transfer).
    fn pump(
        &self,
        transfer: &mut Transfer,
        reader: &mut dyn Read,
    ) -> std::result::Result<(), PumpError> {
        enum Stop {
            Done,
            Cancelled,
            TooLarge,
            Read(std::io::Error),
        }
        let Transfer {
            file,
            hasher,
            done,
            total,
            last_report,
            ..
        } = transfer;
        let (full_tx, full_rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(PIPELINE_DEPTH);
        let (empty_tx, empty_rx) = std::sync::mpsc::channel::<Vec<u8>>();
        let (stop, written) = std::thread::scope(|scope| {
            let writer = scope.spawn(move || -> std::io::Result<()> {
                for chunk in full_rx {
                    file.write_all(&chunk)?;
                    hasher.update(&chunk);
                    // The reader may be gone already; the buffer is then simply dropped.
                    let _ = empty_tx.send(chunk);
                }
                Ok(())
            });
            let stop = loop {
                if self.cancelled() {
                    break Stop::Cancelled;
                }
                let mut chunk = empty_rx
                    .try_recv()
                    .unwrap_or_else(|_| vec![0u8; CHUNK_SIZE]);
                chunk.resize(CHUNK_SIZE, 0);
                let read = match reader.read(&mut chunk) {
                    Ok(0) => break Stop::Done,
                    Ok(read) => read,
                    Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(error) => break Stop::Read(error),
                };
                if self.cancelled() {
                    break Stop::Cancelled;
                }
                if let Some(max) = self.request.max_bytes
                    && *done + read as u64 > max
                {
                    break Stop::TooLarge;
                }
                chunk.truncate(read);
                if full_tx.send(chunk).is_err() {
                    // The writer failed; its error is reported below.
                    break Stop::Done;
                }
                *done += read as u64;
                self.report_bytes(last_report, *done, *total, false);
            };
            drop(full_tx);
            let written = writer
                .join()
                .unwrap_or_else(|_| Err(std::io::Error::other("the writer thread panicked")));
            (stop, written)
        });
        if let Err(error) = written {
            return Err(PumpError::Fatal(Error::io("write", &transfer.path, error)));
        }
        match stop {
            Stop::Done => Ok(()),
            Stop::Cancelled => Err(PumpError::Fatal(Error::Cancelled)),
            Stop::TooLarge => Err(PumpError::Fatal(self.too_large(transfer, None))),
            Stop::Read(error) => Err(PumpError::Read(error)),
        }
    }

    fn copy_local(&self, transfer: &mut Transfer) -> Result<()> {
        let source =
            file_path(self.request.url.expose()).map_err(|message| self.error(message, None))?;
        transfer
            .restart()
            .map_err(|e| Error::io("truncate", &transfer.path, e))?;
        let mut file = File::open(&source).map_err(|error| {
            self.error(
                format!("cannot open {}: {error}", source.display()),
                Some("check that the local mirror holds the file".to_string()),
            )
        })?;
        let metadata = file
            .metadata()
            .map_err(|e| Error::io("inspect", &source, e))?;
        let size = metadata.len();
        // The copy is never more readable than its source (a mirror file of mode 0600 stays
        // 0600).
        {
            use std::os::unix::fs::PermissionsExt;
            let current = transfer
                .file
                .metadata()
                .map_err(|e| Error::io("inspect", &transfer.path, e))?
                .permissions()
                .mode();
            let narrowed = current & metadata.permissions().mode() & 0o777;
            if narrowed != current & 0o777 {
                transfer
                    .file
                    .set_permissions(std::fs::Permissions::from_mode(narrowed))
                    .map_err(|e| Error::io("chmod", &transfer.path, e))?;
            }
        }
        transfer.total = Some(size);
        if self.request.max_bytes.is_some_and(|max| size > max) {
            return Err(self.too_large(transfer, Some(size)));
        }
        self.report(transfer, true);
        match self.pump(transfer, &mut file) {
            Ok(()) => Ok(()),
            Err(PumpError::Fatal(error)) => Err(error),
            Err(PumpError::Read(error)) => Err(Error::io("read", &source, error)),
        }
    }

    fn download(&self, parts: &Parts<'_>, transfer: &mut Transfer) -> Result<()> {
        let existing = transfer
            .file
            .metadata()
            .map_err(|e| Error::io("inspect", &transfer.path, e))?
            .len();
        if existing > 0 {
            let within_cap = self.request.max_bytes.is_none_or(|max| existing <= max);
            let kept = within_cap && transfer.rehash().is_ok();
            if kept {
                self.progress.report(ProgressEvent::Note {
                    message: format!(
                        "resuming the download of {} after {} bytes",
                        self.shown, transfer.done
                    ),
                });
            } else {
                transfer
                    .restart()
                    .map_err(|e| Error::io("truncate", &transfer.path, e))?;
            }
        }
        let credentials = self.credentials(parts);
        let url = parts.without_credentials();
        let mut restarted = false;
        loop {
            let offset = transfer.done;
            let (mut response, _) = self.open(&url, &credentials, offset)?;
            let status = response.status().as_u16();
            let length = response.body().content_length();
            match status {
                206 => match content_range(response.headers()) {
                    Some((start, total)) if start == offset => {
                        transfer.total = total.or(length.map(|length| offset + length));
                    }
                    _ if !restarted => {
                        restarted = true;
                        self.note_restart("answered the range request with another range");
                        transfer
                            .restart()
                            .map_err(|e| Error::io("truncate", &transfer.path, e))?;
                        continue;
                    }
                    _ => {
                        return Err(self.error(
                            "the server answered 206 with a Content-Range that does not match the request".to_string(),
                            None,
                        ));
                    }
                },
                200 => {
                    if offset > 0 {
                        self.note_restart("ignored the range request");
                        transfer
                            .restart()
                            .map_err(|e| Error::io("truncate", &transfer.path, e))?;
                    }
                    transfer.total = length;
                }
                416 if offset > 0 && !restarted => {
                    restarted = true;
                    self.note_restart("cannot serve the rest of the partial download");
                    transfer
                        .restart()
                        .map_err(|e| Error::io("truncate", &transfer.path, e))?;
                    continue;
                }
                _ => return Err(self.status_error(status)),
            }
            if let (Some(max), Some(total)) = (self.request.max_bytes, transfer.total)
                && total > max
            {
                return Err(self.too_large(transfer, Some(total)));
            }
            self.report(transfer, true);
            let mut reader = response.body_mut().as_reader();
            match self.pump(transfer, &mut reader) {
                Ok(()) => {}
                Err(PumpError::Fatal(error)) => return Err(error),
                Err(PumpError::Read(error)) => return Err(self.read_error(&error, transfer)),
            }
            if let Some(total) = transfer.total
                && transfer.done < total
            {
                return Err(self.truncated(transfer.done, total));
            }
            return Ok(());
        }
    }

    fn note_restart(&self, what: &str) {
        self.progress.report(ProgressEvent::Note {
            message: format!(
                "the server {what}; downloading {} from the start",
                self.shown
            ),
        });
    }

    /// Sends the GET, following redirects one vetted hop at a time; returns the answer and the
    /// URL that gave it.
    fn open(
        &self,
        url: &str,
        credentials: &Credentials,
        offset: u64,
    ) -> Result<(ureq::http::Response<ureq::Body>, String)> {
        let mut current = url.to_string();
        let mut hops = 0u32;
        loop {
            let Some(parts) = split(&current) else {
                return Err(self.error(format!("cannot parse URL `{}`", redact(&current)), None));
            };
            let mut request = self
                .agent
                .get(parts.without_credentials().as_str())
                .header("Accept-Encoding", "identity");
            if offset > 0 {
                request = request.header("Range", format!("bytes={offset}-"));
            }
            if let Some(authorization) = credentials.for_hop(&parts) {
                request = request.header("Authorization", authorization);
            }
            let response = request
                .call()
                .map_err(|error| self.transport_error(error))?;
            let status = response.status();
            if !status.is_redirection() || status.as_u16() == 304 {
                return Ok((response, current));
            }
            let Some(location) = response
                .headers()
                .get("location")
                .and_then(|value| value.to_str().ok())
            else {
                return Err(self.error(
                    format!("HTTP {status} redirect without a Location header"),
                    None,
                ));
            };
            if hops >= self.max_redirects {
                return Err(self.error(
                    format!(
                        "too many redirects (more than {}); the last one pointed to {}",
                        self.max_redirects,
                        redact(location)
                    ),
                    Some("the server redirects in a loop; check the URL".to_string()),
                ));
            }
            current = resolve_redirect(&current, location).map_err(|message| {
                self.error(
                    message,
                    Some("use the final URL in the configuration if it is trustworthy".to_string()),
                )
            })?;
            if let Some(policy) = &self.policy {
                let target: SafeUrl = current.parse().map_err(|message: String| {
                    self.error(format!("a redirect to an unusable URL: {message}"), None)
                })?;
                policy
                    .check(&Action::Download {
                        url: target,
                        allowed_by_config: None,
                    })
                    .map_err(|error| match error {
                        Error::PolicyDenied { action, hint } => Error::PolicyDenied {
                            action: format!("{action} (a redirect from {})", redact(url)),
                            hint,
                        },
                        other => other,
                    })?;
            }
            tracing::debug!(from = %redact(url), to = %redact(&current), "following redirect");
            hops += 1;
        }
    }

    fn status_error(&self, status: u16) -> Error {
        let reason = ureq::http::StatusCode::from_u16(status)
            .ok()
            .and_then(|code| code.canonical_reason())
            .unwrap_or("");
        let hint = match status {
            401 | 403 => "the server refused access; check the URL and any credentials it needs",
            404 | 410 => {
                "the file is not there; check provisioning.binary.url (the release may have been renamed or removed)"
            }
            429 | 500..=599 => {
                "the server failed or is overloaded; try again later or use a mirror"
            }
            _ => "check provisioning.binary.url",
        };
        let message = if (400..600).contains(&status) {
            format!("HTTP {status} {reason}").trim_end().to_string()
        } else {
            format!("unexpected HTTP status {status} {reason}")
                .trim_end()
                .to_string()
        };
        self.error(message, Some(hint.to_string()))
    }

    fn transport_error(&self, error: ureq::Error) -> Error {
        match error {
            ureq::Error::Timeout(which) => self.error(
                format!(
                    "timed out ({which}); no answer within {} s",
                    self.stall_timeout.as_secs_f64()
                ),
                Some("check the network, the proxy settings (HTTPS_PROXY, NO_PROXY) and that the host is up".to_string()),
            ),
            other => self.error(
                format!("request failed: {other}"),
                Some("check the network, the proxy settings (HTTPS_PROXY, NO_PROXY) and the URL".to_string()),
            ),
        }
    }

    fn read_error(&self, error: &std::io::Error, transfer: &Transfer) -> Error {
        let timed_out = error.kind() == std::io::ErrorKind::TimedOut
            || error
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<ureq::Error>())
                .is_some_and(|inner| matches!(inner, ureq::Error::Timeout(_)));
        if timed_out {
            return self.error(
                format!(
                    "the download stalled: no data for {} s after {} bytes",
                    self.stall_timeout.as_secs_f64(),
                    transfer.done
                ),
                Some("the partial download is kept; run again to resume it".to_string()),
            );
        }
        if error.kind() == std::io::ErrorKind::UnexpectedEof
            && let Some(total) = transfer.total
        {
            return self.truncated(transfer.done, total);
        }
        self.error(
            format!(
                "reading the body failed after {} bytes: {error}",
                transfer.done
            ),
            Some("the partial download is kept; run again to resume it".to_string()),
        )
    }

    fn truncated(&self, done: u64, total: u64) -> Error {
        self.error(
            format!("the connection closed after {done} of {total} bytes"),
            Some("the partial download is kept; run again to resume it".to_string()),
        )
    }

    /// Verifies and commits the partial file.
    fn finish(&self, mut transfer: Transfer, destination: &Path) -> Result<Fetched> {
        // No fsync: nothing trusts a download without hashing it again (a resumed partial is
        // re-hashed and a kept download is re-verified before use), and syncing hundreds of
        // megabytes would only slow every install down.
        transfer
            .file
            .flush()
            .map_err(|e| Error::io("write", &transfer.path, e))?;
        self.report(&mut transfer, true);
        let Transfer {
            file,
            path,
            hasher,
            done,
            ..
        } = transfer;
        let actual = hasher.finish();
        if let Some(expected) = &self.request.expected
            && !same_checksum(expected, &actual)
        {
            let _ = std::fs::remove_file(&path);
            drop(file);
            return Err(self.error(
                format!("checksum mismatch: expected {expected}, got {actual} ({done} bytes)"),
                Some("the file is not the pinned one: it changed upstream or was altered on the way. The download was deleted; if the new file is legitimate, update the pinned checksum (provisioning.binary.checksum, or provisioning.model.checksum for a model)".to_string()),
            ));
        }
        std::fs::rename(&path, destination).map_err(|e| Error::io("rename", &path, e))?;
        drop(file);
        Ok(Fetched {
            path: destination.to_path_buf(),
            bytes: done,
            checksum: actual,
        })
    }
}

fn same_checksum(a: &Checksum, b: &Checksum) -> bool {
    a.algorithm == b.algorithm && a.hex.eq_ignore_ascii_case(&b.hex)
}

/// Credentials from the URL, sent only to the URL's own origin.
struct Credentials {
    origin: String,
    authorization: Option<String>,
}

impl Credentials {
    fn for_hop(&self, hop: &Parts<'_>) -> Option<String> {
        match hop.userinfo {
            Some(userinfo) => Some(basic_auth(userinfo)),
            None if hop.origin() == self.origin => self.authorization.clone(),
            None => None,
        }
    }
}

/// `Content-Range: bytes START-END/TOTAL` (TOTAL may be `*`).
fn content_range(headers: &ureq::http::HeaderMap) -> Option<(u64, Option<u64>)> {
    let value = headers.get("content-range")?.to_str().ok()?.trim();
    let rest = value.strip_prefix("bytes")?.trim_start();
    let (range, total) = rest.split_once('/')?;
    let (start, _end) = range.trim().split_once('-')?;
    let start = start.trim().parse().ok()?;
    let total = match total.trim() {
        "*" => None,
        digits => Some(digits.parse().ok()?),
    };
    Some((start, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_content_range() {
        let mut headers = ureq::http::HeaderMap::new();
        assert_eq!(content_range(&headers), None);
        headers.insert("content-range", "bytes 100-199/200".parse().unwrap());
        assert_eq!(content_range(&headers), Some((100, Some(200))));
        headers.insert("content-range", "bytes 5-9/*".parse().unwrap());
        assert_eq!(content_range(&headers), Some((5, None)));
        headers.insert("content-range", "bytes */200".parse().unwrap());
        assert_eq!(content_range(&headers), None);
    }

    #[test]
    fn partial_is_a_sibling() {
        assert_eq!(
            partial_path(Path::new("/a/b.tar.gz")).unwrap(),
            PathBuf::from("/a/b.tar.gz.partial")
        );
        assert!(partial_path(Path::new("/")).is_err());
    }

    #[test]
    fn credentials_stay_with_their_origin() {
        let credentials = Credentials {
            origin: "https://example.com".to_string(),
            authorization: Some("Basic x".to_string()),
        };
        let same = split("https://EXAMPLE.com/other").unwrap();
        let other = split("https://cdn.example.net/file").unwrap();
        let own = split("https://u:p@cdn.example.net/file").unwrap();
        assert_eq!(credentials.for_hop(&same).as_deref(), Some("Basic x"));
        assert_eq!(credentials.for_hop(&other), None);
        assert_eq!(credentials.for_hop(&own).as_deref(), Some("Basic dTpw"));
    }
}
