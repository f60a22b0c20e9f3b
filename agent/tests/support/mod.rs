//! Test support for the download tests: a small HTTP/1.1 file server whose misbehaviour each
//! test controls, and helpers for slots and images.
//!
//! The server is a `TcpListener` on 127.0.0.1:0 with one thread per connection, plain or in
//! TLS (rustls). It serves one file at any path but `/missing`, honours `Range: bytes=N-` with
//! `206` and `Content-Range`, closes every connection after one response, and records every
//! request.
//!
//! `tls/` holds a test CA certificate (`ca.pem`, its key discarded) and the server's
//! certificate and key for IP 127.0.0.1, valid until 2126. They were made with:
//!
//! ```text
//! openssl ecparam -name prime256v1 -genkey -noout -out ca.key
//! openssl req -x509 -new -key ca.key -sha256 -days 36500 -subj "/CN=Swell test CA" \
//!   -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign" -out ca.pem
//! openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out server.key
//! openssl req -new -key server.key -subj "/CN=127.0.0.1" -out server.csr
//! openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -days 36500 -sha256 -out server.pem \
//!   -extfile <(printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n%s\n%s\n' \
//!     extendedKeyUsage=serverAuth subjectAltName=IP:127.0.0.1,DNS:localhost)
//! ```
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead as _, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};

/// How the server misbehaves. Offsets are positions in the file, whatever range is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Serve the file correctly.
    Normal,
    /// Close the connection once the file's first `n` bytes have been sent.
    TruncateAfter(u64),
    /// Flip the bits of the byte at this offset.
    CorruptByte(u64),
    /// Announce and send this many bytes beyond the file's end.
    ExtraBytes(u64),
    /// Stop sending at this offset, holding the connection open until the server is dropped.
    StallAfter(u64),
    /// Ignore `Range` and always answer `200` with the whole file.
    IgnoreRange,
    /// Answer `404 Not Found` to everything.
    NotFound,
}

/// One request the server received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logged {
    /// The request target.
    pub path: String,
    /// The `Range` header, if any.
    pub range: Option<String>,
    /// The status answered.
    pub status: u16,
    /// Body bytes written to the socket.
    pub body_bytes: u64,
}

struct Shared {
    file: Arc<Vec<u8>>,
    behaviour: Mutex<Behaviour>,
    log: Mutex<Vec<Logged>>,
    /// Set when the server is dropped; wakes stalled connections.
    stopping: Mutex<bool>,
    wake: Condvar,
}

/// A running test server; dropping it stops it and releases stalled connections.
pub struct TestServer {
    addr: SocketAddr,
    tls: bool,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl TestServer {
    /// Serves `file` with `behaviour` over HTTP on 127.0.0.1 and an ephemeral port.
    pub fn start(file: Vec<u8>, behaviour: Behaviour) -> Self {
        Self::spawn(file, behaviour, None)
    }

    /// Serves `file` with `behaviour` over HTTPS, with the certificate in `support/tls/`
    /// (for 127.0.0.1, issued by the CA in [`TestServer::ca_file`]).
    pub fn start_tls(file: Vec<u8>, behaviour: Behaviour) -> Self {
        use rustls::pki_types::pem::PemObject as _;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let dir = tls_dir();
        let certs = CertificateDer::pem_file_iter(dir.join("server.pem"))
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(dir.join("server.key")).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        Self::spawn(file, behaviour, Some(Arc::new(config)))
    }

    /// The CA that issued the HTTPS server's certificate.
    pub fn ca_file() -> PathBuf {
        tls_dir().join("ca.pem")
    }

    fn spawn(file: Vec<u8>, behaviour: Behaviour, tls: Option<Arc<rustls::ServerConfig>>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            file: Arc::new(file),
            behaviour: Mutex::new(behaviour),
            log: Mutex::new(Vec::new()),
            stopping: Mutex::new(false),
            wake: Condvar::new(),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let is_tls = tls.is_some();
        let accept = {
            let (shared, stop) = (shared.clone(), stop.clone());
            thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let (shared, tls) = (shared.clone(), tls.clone());
                    thread::spawn(move || serve(stream, &shared, tls));
                }
            })
        };
        Self {
            addr,
            tls: is_tls,
            shared,
            stop,
            accept: Some(accept),
        }
    }

    /// The URL of the served file.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}/image.bin", self.addr)
    }

    /// A URL the server answers with 404 whatever its behaviour.
    pub fn missing_url(&self) -> String {
        format!("http://{}/missing", self.addr)
    }

    /// Changes the behaviour for later requests.
    pub fn set_behaviour(&self, behaviour: Behaviour) {
        *self.shared.behaviour.lock().unwrap() = behaviour;
    }

    /// Every request received so far, oldest first.
    pub fn requests(&self) -> Vec<Logged> {
        self.shared.log.lock().unwrap().clone()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        *self.shared.stopping.lock().unwrap() = true;
        self.shared.wake.notify_all();
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

/// Answers one request on `stream` (in TLS if `tls` is set), then closes it.
fn serve(stream: TcpStream, shared: &Shared, tls: Option<Arc<rustls::ServerConfig>>) {
    let _ = stream.set_nodelay(true);
    match tls {
        None => {
            let mut stream = stream;
            handle(&mut stream, shared);
            let _ = stream.shutdown(Shutdown::Both);
        }
        Some(config) => {
            let Ok(conn) = rustls::ServerConnection::new(config) else {
                return;
            };
            let mut tls = rustls::StreamOwned::new(conn, stream);
            if handle(&mut tls, shared) {
                // A clean end; a truncation or stall ends without close_notify, as a cut
                // connection would.
                tls.conn.send_close_notify();
                let _ = tls.flush();
            }
            let _ = tls.sock.shutdown(Shutdown::Both);
        }
    }
}

/// Reads one request and answers it; returns whether the response was sent as intended (not
/// cut short by the behaviour).
fn handle<S: Read + Write>(stream: &mut S, shared: &Shared) -> bool {
    let mut reader = BufReader::new(&mut *stream);
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
        return false;
    }
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .to_string();
    let mut range = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return false;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("range")
        {
            range = Some(value.trim().to_string());
        }
    }
    drop(reader);
    let behaviour = *shared.behaviour.lock().unwrap();
    let (status, body_bytes) = respond(stream, shared, behaviour, &path, range.as_deref());
    shared.log.lock().unwrap().push(Logged {
        path,
        range,
        status,
        body_bytes,
    });
    let _ = stream.flush();
    !matches!(
        behaviour,
        Behaviour::TruncateAfter(_) | Behaviour::StallAfter(_)
    )
}

/// Writes the response; returns the status and the body bytes written.
fn respond(
    out: &mut dyn Write,
    shared: &Shared,
    behaviour: Behaviour,
    path: &str,
    range: Option<&str>,
) -> (u16, u64) {
    let file = &shared.file;
    let len = file.len() as u64;
    if behaviour == Behaviour::NotFound || path == "/missing" {
        let _ = out.write_all(
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\nConnection: close\r\n\r\nnot found",
        );
        return (404, 0);
    }
    let start = range
        .filter(|_| behaviour != Behaviour::IgnoreRange)
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse::<u64>().ok())
        .filter(|&n| n < len);
    let extra = match behaviour {
        Behaviour::ExtraBytes(n) => n,
        _ => 0,
    };
    let (status, from) = match start {
        Some(n) => (206, n),
        None => (200, 0),
    };
    let mut head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Length: {}\r\nConnection: close\r\n",
        if status == 206 {
            "Partial Content"
        } else {
            "OK"
        },
        len - from + extra
    );
    if status == 206 {
        head.push_str(&format!(
            "Content-Range: bytes {from}-{}/{len}\r\n",
            len - 1
        ));
    }
    head.push_str("\r\n");
    if out.write_all(head.as_bytes()).is_err() {
        return (status, 0);
    }
    // Where sending stops early, as an offset in the file.
    let stop_at = match behaviour {
        Behaviour::TruncateAfter(n) | Behaviour::StallAfter(n) => n.clamp(from, len),
        _ => len,
    };
    let mut sent = 0u64;
    let mut pos = from;
    while pos < stop_at {
        let end = (pos + 64 * 1024).min(stop_at);
        let mut chunk = file[to_usize(pos)..to_usize(end)].to_vec();
        if let Behaviour::CorruptByte(at) = behaviour
            && (pos..end).contains(&at)
        {
            chunk[to_usize(at - pos)] ^= 0xff;
        }
        if out.write_all(&chunk).is_err() {
            return (status, sent);
        }
        sent += end - pos;
        pos = end;
    }
    if let Behaviour::StallAfter(_) = behaviour {
        let _ = out.flush();
        let mut stopping = shared.stopping.lock().unwrap();
        while !*stopping {
            stopping = shared.wake.wait(stopping).unwrap();
        }
        return (status, sent);
    }
    if stop_at == len && extra > 0 {
        let junk = vec![0x5a; to_usize(extra)];
        if out.write_all(&junk).is_ok() {
            sent += extra;
        }
    }
    (status, sent)
}

fn tls_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/tls")
}

fn to_usize(n: u64) -> usize {
    usize::try_from(n).unwrap()
}

/// `len` pseudo-random bytes from `seed` (xorshift), so images differ between tests without
/// a random-number dependency.
pub fn image(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A device's two slots in a temporary directory: `a.img` runs and holds known content,
/// `b.img` is the one to write, and `data/` is the agent's data directory.
pub struct Slots {
    pub dir: tempfile::TempDir,
    pub active: PathBuf,
    pub target: PathBuf,
    pub data: PathBuf,
    active_content: Vec<u8>,
}

impl Slots {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let active = dir.path().join("a.img");
        let active_content = image(64 * 1024, 0xa11ce);
        std::fs::write(&active, &active_content).unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        Self {
            target: dir.path().join("b.img"),
            active,
            data,
            dir,
            active_content,
        }
    }

    /// Asserts that the active slot is byte-for-byte what it was.
    pub fn assert_active_unchanged(&self) {
        assert!(
            std::fs::read(&self.active).unwrap() == self.active_content,
            "the active slot {} was modified",
            self.active.display()
        );
    }

    pub fn checkpoint(&self) -> PathBuf {
        self.data.join(swell_agent::download::CHECKPOINT_FILE)
    }
}

/// Reads the whole of `path`.
pub fn read(path: &Path) -> Vec<u8> {
    let mut v = Vec::new();
    std::fs::File::open(path)
        .unwrap()
        .read_to_end(&mut v)
        .unwrap();
    v
}

/// A request to fetch `file` from `source` into `slots`' target slot (B), with small timeouts
/// and a checkpoint every MiB so that tests exercise checkpoints on small images.
pub fn request(
    slots: &Slots,
    source: swell_agent::update::Source,
    file: &[u8],
) -> swell_agent::download::FetchRequest {
    use swell_agent::download::{FetchOptions, FetchRequest};
    use swell_agent::slots::SlotPath;
    FetchRequest {
        source,
        size: file.len() as u64,
        sha256: swell_proto::Sha256Digest::of(file),
        slot: SlotPath::new(swell_proto::messages::Slot::B, &slots.target),
        active: slots.active.clone(),
        checkpoint: slots.checkpoint(),
        options: FetchOptions {
            connect_timeout: std::time::Duration::from_secs(5),
            stall_timeout: std::time::Duration::from_millis(300),
            checkpoint_every: 1 << 20,
            ca_file: None,
        },
    }
}

/// Runs a fetch with no cancellation, discarding progress.
pub fn fetch(
    req: &swell_agent::download::FetchRequest,
) -> Result<(), swell_agent::download::DownloadError> {
    let cancel = AtomicBool::new(false);
    swell_agent::download::fetch_into_slot(req, &cancel, &mut |_, _| {})
}
