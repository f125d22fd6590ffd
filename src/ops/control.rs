//! The control socket (data_dir/control.sock, mode 0600): one line per request, one line per answer.
//!
//! Requests: `FLUSH`, `FLUSH <queue-id>`, `HOLD <queue-id>`, `RELEASE <queue-id>`, `DELETE <queue-id>`,
//! `BOUNCE <queue-id>`, `RELOAD`, and
//! `SIEVE <user>` (the user's scripts changed on disk: `tern sieve` tells the daemon so).
//! Answers: `OK <text>` or `ERR <text>`.

use crate::queue::{Queue, QueueId};
use crate::shutdown::Shutdown;
use std::path::{Path, PathBuf};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join("control.sock")
}

/// Binds the control socket (replacing a stale one), readable and writable by the daemon's user only.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    if let Ok(meta) = std::fs::symlink_metadata(path)
        && meta.file_type().is_socket()
    {
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// A reload request for the main loop, answered with what happened.
pub type ReloadRequest = tokio::sync::oneshot::Sender<Result<String, String>>;

pub async fn serve(
    listener: UnixListener,
    intake: std::sync::Arc<crate::intake::Intake>,
    reloads: tokio::sync::mpsc::Sender<ReloadRequest>,
    scripts: crate::sieve::store::ScriptStore,
    mut shutdown: Shutdown,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.fired() => return,
        };
        if let Ok((stream, _)) = accepted {
            tokio::spawn(handle(
                stream,
                intake.clone(),
                reloads.clone(),
                scripts.clone(),
            ));
        }
    }
}

async fn handle(
    stream: UnixStream,
    intake: std::sync::Arc<crate::intake::Intake>,
    reloads: tokio::sync::mpsc::Sender<ReloadRequest>,
    scripts: crate::sieve::store::ScriptStore,
) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let answer = if line.trim().eq_ignore_ascii_case("RELOAD") {
            reload(&reloads).await
        } else if let Some(user) = line
            .trim()
            .strip_prefix("SIEVE ")
            .or_else(|| line.trim().strip_prefix("sieve "))
        {
            scripts.changed(user.trim());
            "OK scripts read again".to_string()
        } else {
            answer(&intake, line.trim()).await
        };
        if write
            .write_all(format!("{answer}\n").as_bytes())
            .await
            .is_err()
        {
            return;
        }
    }
}

async fn answer(intake: &crate::intake::Intake, line: &str) -> String {
    let queue: &Queue = &intake.queue;
    let mut words = line.split_whitespace();
    let verb = words.next().unwrap_or("").to_ascii_uppercase();
    let id = words
        .next()
        .map(|w| QueueId::parse(&w.to_ascii_uppercase()).ok_or(w));
    let result = match (verb.as_str(), id) {
        (_, Some(Err(bad))) => Err(format!("{bad:?} is not a queue ID")),
        ("FLUSH", None) => queue
            .flush(None)
            .await
            .map(|n| format!("{n} messages due now"))
            .map_err(|e| e.to_string()),
        ("FLUSH", Some(Ok(id))) => queue
            .flush(Some(id))
            .await
            .map(|_| format!("{id} due now"))
            .map_err(|e| e.to_string()),
        ("HOLD", Some(Ok(id))) => queue
            .hold(id)
            .await
            .map(|_| format!("{id} held"))
            .map_err(|e| e.to_string()),
        ("RELEASE", Some(Ok(id))) => queue
            .release(id)
            .await
            .map(|_| format!("{id} released, due now"))
            .map_err(|e| e.to_string()),
        ("DELETE", Some(Ok(id))) => queue
            .delete(id)
            .await
            .map(|_| format!("{id} deleted"))
            .map_err(|e| e.to_string()),
        ("BOUNCE", Some(Ok(id))) => intake
            .bounce(id)
            .await
            .map(|n| format!("{id}: {n} recipients returned to sender"))
            .map_err(|e| e.to_string()),
        _ => Err(format!("unknown request {line:?}")),
    };
    match result {
        Ok(text) => {
            tracing::info!(request = line, "control: {text}");
            format!("OK {text}")
        }
        Err(text) => format!("ERR {text}"),
    }
}

async fn reload(reloads: &tokio::sync::mpsc::Sender<ReloadRequest>) -> String {
    let (tx, rx) = tokio::sync::oneshot::channel();
    if reloads.send(tx).await.is_err() {
        return "ERR the daemon is shutting down".into();
    }
    match rx.await {
        Ok(Ok(text)) => format!("OK {text}"),
        Ok(Err(reason)) => {
            format!("ERR reload refused, running configuration kept: {reason}").replace('\n', " ")
        }
        Err(_) => "ERR the reload was not answered".into(),
    }
}

/// The client side, for `tern queue flush|delete|bounce` and `tern reload`.
pub async fn request(data_dir: &Path, line: &str) -> Result<String, String> {
    requests(data_dir, &[line.to_string()])
        .await?
        .pop()
        .unwrap_or_else(|| Err("no answer".into()))
}

/// Several requests over one connection, one answer each, in order (`tern queue delete --domain`).
pub async fn requests(
    data_dir: &Path,
    lines: &[String],
) -> Result<Vec<Result<String, String>>, String> {
    let path = socket_path(data_dir);
    let stream = UnixStream::connect(&path).await.map_err(|e| {
        format!(
            "cannot reach the tern daemon at {}: {e} (is it running?)",
            path.display()
        )
    })?;
    let (read, mut write) = stream.into_split();
    let mut answers = BufReader::new(read).lines();
    let mut out = Vec::with_capacity(lines.len());
    for line in lines {
        write
            .write_all(format!("{}\n", line.replace(['\r', '\n'], " ")).as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        out.push(match answers.next_line().await {
            Ok(Some(answer)) => match answer.strip_prefix("OK ") {
                Some(ok) => Ok(ok.to_string()),
                None => Err(answer.strip_prefix("ERR ").unwrap_or(&answer).to_string()),
            },
            Ok(None) => return Err("the daemon closed the control connection".into()),
            Err(e) => return Err(e.to_string()),
        });
    }
    Ok(out)
}
