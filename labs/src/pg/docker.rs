//! Just enough of the Docker Engine API to decide whether the container backend can work:
//! is an engine answering, and does it already have the image? testcontainers does the rest.

use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// A Docker-compatible engine (Docker or Podman) reachable on a Unix socket.
pub struct DockerEngine {
    socket: PathBuf,
}

impl DockerEngine {
    /// Finds the engine testcontainers will use: `DOCKER_HOST` (unix://…) or /var/run/docker.sock.
    /// Answers within a second either way, so `auto` stays cheap.
    pub async fn detect() -> Result<DockerEngine, String> {
        let socket = match std::env::var("DOCKER_HOST") {
            Ok(host) if !host.is_empty() => match host.strip_prefix("unix://") {
                Some(path) => PathBuf::from(path),
                None => {
                    return Err(format!("DOCKER_HOST={host} is not a unix:// socket; the labs only probe Unix sockets"))
                }
            },
            _ => PathBuf::from("/var/run/docker.sock"),
        };
        if !socket.exists() {
            return Err(format!("no Docker socket at {}", socket.display()));
        }
        let engine = DockerEngine { socket };
        match engine.get("/_ping").await {
            Ok((200, _)) => Ok(engine),
            Ok((status, body)) => {
                Err(format!("Docker at {} answered {status}: {}", engine.socket.display(), body.trim()))
            }
            Err(e) => Err(format!("Docker at {} did not answer: {e}", engine.socket.display())),
        }
    }

    pub fn socket(&self) -> &std::path::Path {
        &self.socket
    }

    /// Whether the image is already present, so no registry is needed to start it.
    pub async fn has_image(&self, image: &str) -> bool {
        let image =
            if image.contains(':') || image.contains('@') { image.to_string() } else { format!("{image}:latest") };
        matches!(self.get(&format!("/images/{image}/json")).await, Ok((200, _)))
    }

    /// The engine's version string, for `labs doctor`.
    pub async fn version(&self) -> Option<String> {
        let (status, body) = self.get("/version").await.ok()?;
        if status != 200 {
            return None;
        }
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        Some(format!(
            "{} {}",
            v.pointer("/Components/0/Name").and_then(|n| n.as_str()).unwrap_or("engine"),
            v.get("Version").and_then(|n| n.as_str()).unwrap_or("?")
        ))
    }

    async fn get(&self, path: &str) -> Result<(u16, String), String> {
        let request = async {
            let mut stream = UnixStream::connect(&self.socket).await.map_err(|e| e.to_string())?;
            let req = format!("GET {path} HTTP/1.0\r\nHost: docker\r\n\r\n");
            stream.write_all(req.as_bytes()).await.map_err(|e| e.to_string())?;
            let mut response = Vec::new();
            stream.read_to_end(&mut response).await.map_err(|e| e.to_string())?;
            let text = String::from_utf8_lossy(&response).into_owned();
            let status = text
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse::<u16>().ok())
                .ok_or_else(|| "not an HTTP answer".to_string())?;
            let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
            Ok((status, body))
        };
        tokio::time::timeout(Duration::from_secs(2), request).await.map_err(|_| "timed out after 2 s".to_string())?
    }
}
