//! A loopback Hugging Face Hub on 127.0.0.1 serving directories as model and dataset repos in the
//! Hub's layout, as hf-hub calls it:
//! - `GET /api/{models|datasets}/{repo}/revision/{rev}[?blobs=true]`: the commit and the files
//!   (`siblings`: rfilename, size, and `lfs.sha256` for parquet and safetensors files, as LFS files);
//! - `GET /[datasets/]{repo}/resolve/{rev}/{path}` with `Range`: the bytes, `ETag` (the sha256),
//!   `x-repo-commit`, `Content-Range`.
//!
//! A revision is `main`, `v1.0` or the repo's commit; anything else is 404 `RevisionNotFound`, an
//! unknown repo 404 `RepoNotFound`. Faults can cut one file's downloads short.
use sha2::{Digest, Sha256};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// One repo: `kind` is `models` or `datasets`; its files are those under `root`.
pub struct MirrorRepo {
    pub kind: &'static str,
    pub id: String,
    pub root: PathBuf,
    pub commit: String,
}

/// How to answer the downloads of files whose path ends in `file`.
#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    None,
    /// Send this many bytes of the body, then hang (the client has to be killed).
    StallAfter(String, usize),
    /// Claim this many bytes as Content-Length (and send them) while Content-Range says the full size.
    ShortBody(String, usize),
}

pub struct Mirror {
    pub endpoint: String,
    log: Arc<Mutex<Vec<String>>>,
    fault: Arc<Mutex<Fault>>,
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

fn files_below(root: &Path, dir: &Path, out: &mut Vec<String>) {
    let mut entries: Vec<PathBuf> =
        std::fs::read_dir(dir).into_iter().flatten().flatten().map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            files_below(root, &p, out);
        } else if let Ok(rel) = p.strip_prefix(root) {
            out.push(rel.to_string_lossy().replace('\\', "/"));
        }
    }
}

impl Mirror {
    pub fn start(repos: Vec<MirrorRepo>) -> Mirror {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let log = Arc::new(Mutex::new(Vec::new()));
        let fault = Arc::new(Mutex::new(Fault::None));
        let repos = Arc::new(repos);
        let (l, f) = (log.clone(), fault.clone());
        std::thread::spawn(move || {
            for s in listener.incoming().flatten() {
                let (l, f, repos) = (l.clone(), f.clone(), repos.clone());
                std::thread::spawn(move || {
                    let _ = respond(s, &repos, &l, &f);
                });
            }
        });
        Mirror { endpoint, log, fault }
    }

    pub fn set_fault(&self, fault: Fault) {
        *self.fault.lock().unwrap() = fault;
    }

    /// Every request so far: `GET <path> [range]`.
    pub fn requests(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

fn respond(
    mut s: TcpStream,
    repos: &[MirrorRepo],
    log: &Mutex<Vec<String>>,
    fault: &Mutex<Fault>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(s.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let target = line.split_whitespace().nth(1).unwrap_or("").to_string();
    let mut range = None;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("range") {
                range = v.trim().strip_prefix("bytes=").map(str::to_string);
            }
        }
    }
    log.lock().unwrap().push(format!("GET {target} {}", range.clone().unwrap_or_default()));
    let path = target.split('?').next().unwrap_or("");
    if let Some(rest) = path.strip_prefix("/api/") {
        return api(&mut s, repos, rest);
    }
    for r in repos {
        let prefix = if r.kind == "models" {
            format!("/{}/resolve/", r.id)
        } else {
            format!("/datasets/{}/resolve/", r.id)
        };
        if let Some(rest) = path.strip_prefix(&prefix) {
            let (rev, file) = rest.split_once('/').unwrap_or((rest, ""));
            if !revision_ok(r, rev) {
                return not_found(&mut s, "RevisionNotFound", &format!("Invalid rev id: {rev}"));
            }
            let Some(bytes) =
                Some(r.root.join(file)).filter(|p| p.is_file()).and_then(|p| std::fs::read(p).ok())
            else {
                return not_found(&mut s, "EntryNotFound", "Entry not found");
            };
            let f = fault.lock().unwrap().clone();
            return serve_file(&mut s, r, file, &bytes, range.as_deref(), &f);
        }
    }
    not_found(&mut s, "RepoNotFound", "Repository not found")
}

fn revision_ok(r: &MirrorRepo, rev: &str) -> bool {
    rev == "main" || rev == "v1.0" || rev == r.commit
}

fn api(s: &mut TcpStream, repos: &[MirrorRepo], rest: &str) -> std::io::Result<()> {
    let Some((kind, rest)) = rest.split_once('/') else {
        return not_found(s, "RepoNotFound", "Repository not found");
    };
    let Some((id, rev)) = rest.split_once("/revision/") else {
        return not_found(s, "RepoNotFound", "Repository not found");
    };
    let Some(r) = repos.iter().find(|r| r.kind == kind && r.id == id) else {
        return not_found(s, "RepoNotFound", "Repository not found");
    };
    if !revision_ok(r, rev) {
        return not_found(s, "RevisionNotFound", &format!("Invalid rev id: {rev}"));
    }
    let mut files = Vec::new();
    files_below(&r.root, &r.root, &mut files);
    let siblings: Vec<serde_json::Value> = files
        .iter()
        .map(|f| {
            let bytes = std::fs::read(r.root.join(f)).unwrap();
            let mut v = serde_json::json!({"rfilename": f, "size": bytes.len()});
            if f.ends_with(".parquet") || f.ends_with(".safetensors") {
                v["lfs"] = serde_json::json!({"sha256": sha256_hex(&bytes), "size": bytes.len(), "pointerSize": 134});
            }
            v
        })
        .collect();
    let body = serde_json::json!({"id": r.id, "sha": r.commit, "siblings": siblings}).to_string();
    write!(
        s,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

fn not_found(s: &mut TcpStream, code: &str, msg: &str) -> std::io::Result<()> {
    let body = serde_json::json!({ "error": msg }).to_string();
    write!(
        s,
        "HTTP/1.1 404 Not Found\r\nx-error-code: {code}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

fn serve_file(
    s: &mut TcpStream,
    r: &MirrorRepo,
    file: &str,
    bytes: &[u8],
    range: Option<&str>,
    fault: &Fault,
) -> std::io::Result<()> {
    let n = bytes.len();
    let (start, end) = match range.and_then(|r| r.split_once('-')) {
        Some((a, b)) => (a.parse().unwrap_or(0), b.parse().map(|e: usize| e.min(n - 1)).unwrap_or(n - 1)),
        None => (0, n - 1),
    };
    let status = if range.is_some() { "206 Partial Content" } else { "200 OK" };
    let body = &bytes[start.min(n)..=end];
    let probe = body.len() == 1; // hf-hub's metadata request (bytes=0-0)
    let (send, claim) = match fault {
        Fault::StallAfter(f, k) if file.ends_with(f.as_str()) && !probe => (body.len().min(*k), body.len()),
        Fault::ShortBody(f, k) if file.ends_with(f.as_str()) && !probe => {
            (body.len().min(*k), body.len().min(*k))
        }
        _ => (body.len(), body.len()),
    };
    write!(
        s,
        "HTTP/1.1 {status}\r\nContent-Length: {claim}\r\nContent-Range: bytes {start}-{end}/{n}\r\n\
         ETag: \"{}\"\r\nx-repo-commit: {}\r\nConnection: close\r\n\r\n",
        sha256_hex(bytes),
        r.commit
    )?;
    s.write_all(&body[..send])?;
    s.flush()?;
    if send < claim {
        std::thread::sleep(std::time::Duration::from_secs(600));
    }
    Ok(())
}
