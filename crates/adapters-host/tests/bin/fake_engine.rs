//! A stand-in engine for the supervisor tests (a `[[bin]]` of this crate, not a test): serves
//! `GET /health` (200), `GET /props` (`{"build_info": "<--build-info>"}`) and `GET /env/<NAME>`
//! (the value of an environment variable, 404 when unset) on 127.0.0.1 and the port given by
//! `--port` (`0`: any free port, as `llama-server --port 0` does). With keys, from
//! `--api-key-file` (one a line) or `LLAMA_API_KEY` (comma-separated), every path but `/health`
//! answers 401 unless the request carries `Authorization: Bearer <one of them>`, as
//! llama-server does. `--version` prints a line
//! that names no llama.cpp build and exits, so that it can also stand in for a prebuilt
//! `llama-server` installed by binary mode.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|arg| arg == "--version") {
        let _ = writeln!(
            std::io::stdout(),
            "fake-engine (a stand-in server for tests)"
        );
        return;
    }
    let value = |name: &str| {
        args.windows(2)
            .find(|pair| pair[0] == name)
            .map(|pair| pair[1].clone())
    };
    let port: u16 = value("--port")
        .and_then(|p| p.parse().ok())
        .expect("--port PORT");
    let build_info = value("--build-info").unwrap_or_default();
    let mut keys: Vec<String> = value("--api-key-file")
        .map(|file| std::fs::read_to_string(file).expect("read the key file"))
        .unwrap_or_default()
        .lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(String::from)
        .collect();
    if let Ok(listed) = std::env::var("LLAMA_API_KEY") {
        keys.extend(
            listed
                .split(',')
                .filter(|k| !k.is_empty())
                .map(String::from),
        );
    }
    let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind");
    let bound = listener.local_addr().expect("address").port();
    let _ = writeln!(std::io::stdout(), "listening on http://127.0.0.1:{bound}");
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let Ok(clone) = stream.try_clone() else {
            continue;
        };
        let mut reader = BufReader::new(clone);
        let mut request = String::new();
        if reader.read_line(&mut request).is_err() {
            continue;
        }
        let mut bearer = None;
        loop {
            let mut header = String::new();
            match reader.read_line(&mut header) {
                Ok(0) | Err(_) => break,
                Ok(_) if header == "\r\n" => break,
                Ok(_) => {
                    if let Some((name, value)) = header.split_once(':')
                        && name.eq_ignore_ascii_case("authorization")
                    {
                        bearer = value.trim().strip_prefix("Bearer ").map(String::from);
                    }
                }
            }
        }
        let path = request.split_whitespace().nth(1).unwrap_or("/").to_string();
        let allowed = keys.is_empty() || bearer.as_ref().is_some_and(|key| keys.contains(key));
        let (status, body) = match path.as_str() {
            "/health" => ("200 OK", r#"{"status":"ok"}"#.to_string()),
            _ if !allowed => (
                "401 Unauthorized",
                r#"{"error":"Invalid API Key"}"#.to_string(),
            ),
            "/props" => ("200 OK", format!(r#"{{"build_info":"{build_info}"}}"#)),
            other => match other
                .strip_prefix("/env/")
                .and_then(|name| std::env::var(name).ok())
            {
                Some(value) => ("200 OK", value),
                None => ("404 Not Found", "{}".to_string()),
            },
        };
        let _ = write!(
            stream,
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
    }
}
