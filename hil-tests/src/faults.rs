//! Network fault injection: proxies that a test puts between a client and a server and tells
//! what to break while the link is in use, as tough's toxic proxy does for HTTP.
//!
//! - [`FaultProxy`] is a TCP proxy for one link (an agent and its broker) that a test can
//!   partition, heal and slow down.
//! - [`ArtifactProxy`] is an HTTP-aware proxy in front of the controller's API that truncates
//!   or corrupts the bodies of artifact downloads (`/v1/artifacts/...`) and records every
//!   artifact request it saw.
//!
//! Both listen on `127.0.0.1:0`; the client is configured with the proxy's address instead of
//! the server's. Each accepted connection gets a fresh connection to the upstream address and
//! two pump threads, one per direction.
//!
//! | Fault | What the client sees |
//! |---|---|
//! | [`FaultProxy::partition`] | every open connection is shut down; new ones are accepted and closed at once (a connection refused by a middlebox) until [`FaultProxy::heal`] |
//! | [`FaultProxy::set_latency`] | each chunk of bytes, in either direction, is held that long before it is forwarded |
//! | [`ArtifactFault::Truncate`] | an artifact response's head and the first `after` bytes of its body, then the connection closes (a body shorter than its `Content-Length`) |
//! | [`ArtifactFault::Corrupt`] | an artifact response whose body byte at offset `at` is inverted (xor `0xff`), everything else intact |
//!
//! Threads only (`std::net`), no runtime: the proxies work beside any test. Dropping one stops
//! accepting, shuts every connection down and joins every thread.

use std::io::{Read as _, Write as _};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

/// Bytes read per chunk: one MQTT packet of the agent's usually fits.
const CHUNK: usize = 16 * 1024;

/// Locks `m`, ignoring poisoning: every value behind these locks is consistent between
/// statements, so a pump that panicked leaves nothing half-done.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

// ---------------------------------------------------------------------------------------------
// The plumbing both proxies share.

/// The connections of one proxy: what its accept thread and pumps share with its handle.
#[derive(Debug, Default)]
struct Conns {
    /// Set once the proxy is dropped.
    stopping: AtomicBool,
    /// One handle of each open socket (both ends of every connection), to shut them down.
    open: Mutex<Vec<TcpStream>>,
    /// The pump threads, joined on drop.
    pumps: Mutex<Vec<JoinHandle<()>>>,
}

impl Conns {
    /// Shuts down every open socket: the pumps see end-of-stream or an error and stop.
    fn cut_all(&self) {
        for s in std::mem::take(&mut *lock(&self.open)) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    /// Adds a connection's two sockets to the open ones, unless `refuse()` or the proxy is
    /// stopping; then both are shut down and `false` is returned. `refuse` is asked under the
    /// lock of the open sockets, so a [`Conns::cut_all`] that began after the accept has
    /// already taken the list and the connection must not join it.
    fn admit(
        &self,
        client: &TcpStream,
        server: &TcpStream,
        refuse: impl FnOnce() -> bool,
    ) -> std::io::Result<bool> {
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let mut open = lock(&self.open);
        if refuse() || self.stopping.load(Ordering::SeqCst) {
            let _ = client.shutdown(Shutdown::Both);
            let _ = server.shutdown(Shutdown::Both);
            return Ok(false);
        }
        open.push(client.try_clone()?);
        open.push(server.try_clone()?);
        Ok(true)
    }

    /// Starts a connection's two pump threads and keeps their handles.
    fn spawn_pumps(
        &self,
        name: &str,
        up: impl FnOnce() + Send + 'static,
        down: impl FnOnce() + Send + 'static,
    ) -> std::io::Result<()> {
        let up = std::thread::Builder::new()
            .name(format!("{name} up"))
            .spawn(up)?;
        let down = std::thread::Builder::new()
            .name(format!("{name} down"))
            .spawn(down)?;
        let mut pumps = lock(&self.pumps);
        // Finished pumps are joined here, so a long test's list stays short.
        let (done, running): (Vec<_>, Vec<_>) = std::mem::take(&mut *pumps)
            .into_iter()
            .partition(JoinHandle::is_finished);
        for d in done {
            let _ = d.join();
        }
        *pumps = running;
        pumps.push(up);
        pumps.push(down);
        Ok(())
    }
}

/// A listener on `127.0.0.1:0` whose accept thread hands every connection to the proxy's
/// `on_client`. Dropping it stops accepting, shuts every open connection down and joins every
/// thread.
#[derive(Debug)]
struct Relay {
    addr: SocketAddr,
    conns: Arc<Conns>,
    accept: Option<JoinHandle<()>>,
}

impl Relay {
    fn start(
        name: &str,
        mut on_client: impl FnMut(TcpStream, &Conns) + Send + 'static,
    ) -> std::io::Result<Relay> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let conns = Arc::new(Conns::default());
        let accept = {
            let conns = Arc::clone(&conns);
            std::thread::Builder::new()
                .name(format!("{name} {addr}"))
                .spawn(move || {
                    for client in listener.incoming() {
                        if conns.stopping.load(Ordering::SeqCst) {
                            return;
                        }
                        if let Ok(client) = client {
                            on_client(client, &conns);
                        }
                    }
                })?
        };
        Ok(Relay {
            addr,
            conns,
            accept: Some(accept),
        })
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.conns.stopping.store(true, Ordering::SeqCst);
        // Wakes the blocking accept so it sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        self.conns.cut_all();
        for p in std::mem::take(&mut *lock(&self.conns.pumps)) {
            let _ = p.join();
        }
    }
}

/// Copies `from` to `to` until either side closes or `each` says to stop, then shuts both
/// down, so the other direction stops too. `each` gets every chunk read, may change it in
/// place, and returns how many of its first bytes to forward and whether to go on after them.
fn pump(mut from: TcpStream, mut to: TcpStream, mut each: impl FnMut(&mut [u8]) -> (usize, bool)) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let (forward, go_on) = each(&mut buf[..n]);
        if to.write_all(&buf[..forward]).is_err() || !go_on {
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

// ---------------------------------------------------------------------------------------------
// FaultProxy: partitions and latency on a TCP link.

/// What a [`FaultProxy`]'s accept thread and pumps share with the handle.
#[derive(Debug, Default)]
struct Shared {
    /// While set, connections are dropped and refused.
    partitioned: AtomicBool,
    /// Added delay per forwarded chunk, milliseconds.
    latency_ms: AtomicU64,
    /// Connections accepted and forwarded.
    forwarded: AtomicU64,
    /// Connections refused while partitioned.
    refused: AtomicU64,
}

/// A TCP proxy from an ephemeral local port to `upstream`, with run-time faults.
#[derive(Debug)]
pub struct FaultProxy {
    upstream: SocketAddr,
    shared: Arc<Shared>,
    relay: Relay,
}

impl FaultProxy {
    /// Starts a proxy to `upstream` on `127.0.0.1:0`.
    pub fn start(upstream: SocketAddr) -> std::io::Result<FaultProxy> {
        let shared = Arc::new(Shared::default());
        let relay = {
            let shared = Arc::clone(&shared);
            Relay::start("fault-proxy", move |client, conns| {
                if let Err(e) = fault_connection(client, upstream, conns, &shared) {
                    // Out of threads or descriptors: this connection is lost, the proxy goes on.
                    eprintln!("fault proxy to {upstream}: {e}");
                }
            })?
        };
        Ok(FaultProxy {
            upstream,
            shared,
            relay,
        })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.relay.addr
    }

    /// The address it forwards to.
    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// Cuts the link: open connections are shut down, new ones refused until [`heal`].
    ///
    /// [`heal`]: FaultProxy::heal
    pub fn partition(&self) {
        // The flag first, so a connection accepted while cutting is refused, not kept.
        self.shared.partitioned.store(true, Ordering::SeqCst);
        self.relay.conns.cut_all();
    }

    /// Ends a partition: new connections are forwarded again.
    pub fn heal(&self) {
        self.shared.partitioned.store(false, Ordering::SeqCst);
    }

    /// Whether the link is cut.
    pub fn is_partitioned(&self) -> bool {
        self.shared.partitioned.load(Ordering::SeqCst)
    }

    /// Holds every forwarded chunk `latency` before writing it (zero: none).
    pub fn set_latency(&self, latency: Duration) {
        let ms = u64::try_from(latency.as_millis()).unwrap_or(u64::MAX);
        self.shared.latency_ms.store(ms, Ordering::SeqCst);
    }

    /// Connections forwarded so far.
    pub fn forwarded(&self) -> u64 {
        self.shared.forwarded.load(Ordering::SeqCst)
    }

    /// Connections refused (closed on accept) during partitions so far.
    pub fn refused(&self) -> u64 {
        self.shared.refused.load(Ordering::SeqCst)
    }
}

fn fault_connection(
    client: TcpStream,
    upstream: SocketAddr,
    conns: &Conns,
    shared: &Arc<Shared>,
) -> std::io::Result<()> {
    if shared.partitioned.load(Ordering::SeqCst) {
        shared.refused.fetch_add(1, Ordering::SeqCst);
        let _ = client.shutdown(Shutdown::Both);
        return Ok(());
    }
    // The upstream refusing is passed on the same way: the client's connection closes.
    let Ok(server) = TcpStream::connect(upstream) else {
        let _ = client.shutdown(Shutdown::Both);
        return Ok(());
    };
    if !conns.admit(&client, &server, || {
        shared.partitioned.load(Ordering::SeqCst)
    })? {
        shared.refused.fetch_add(1, Ordering::SeqCst);
        return Ok(());
    }
    shared.forwarded.fetch_add(1, Ordering::SeqCst);
    // Each chunk is held for the latency, and a partition that began meanwhile drops it.
    let slow = |shared: Arc<Shared>| {
        move |chunk: &mut [u8]| {
            let ms = shared.latency_ms.load(Ordering::SeqCst);
            if ms > 0 {
                // The injected delay itself.
                std::thread::sleep(Duration::from_millis(ms));
            }
            if shared.partitioned.load(Ordering::SeqCst) {
                (0, false)
            } else {
                (chunk.len(), true)
            }
        }
    };
    let (c, s) = (client.try_clone()?, server.try_clone()?);
    let (up, down) = (slow(Arc::clone(shared)), slow(Arc::clone(shared)));
    conns.spawn_pumps(
        "fault-proxy",
        move || pump(c, s, up),
        move || pump(server, client, down),
    )
}

// ---------------------------------------------------------------------------------------------
// ArtifactProxy: truncated and corrupted artifact downloads.

/// Requests whose path starts with this are artifact downloads: the fault applies to their
/// responses, and they are recorded.
pub const ARTIFACTS_PATH: &str = "/v1/artifacts/";

/// An HTTP head longer than this is not followed: the rest of its connection passes through
/// unchanged (real heads here are a few hundred bytes).
const MAX_HEAD: usize = 64 * 1024;

/// What an [`ArtifactProxy`] does to the body of each artifact response. Offsets count from
/// the start of each response's body, so a resumed request (`Range: bytes=N-`) meets the same
/// fault at image offset `N + after` or `N + at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ArtifactFault {
    /// Forward unchanged.
    #[default]
    Pass,
    /// Forward the head and the first `after` bytes of the body, then close the connection.
    /// A body no longer than `after` is forwarded whole.
    Truncate {
        /// Body bytes forwarded before the cut.
        after: u64,
    },
    /// Invert (xor `0xff`) the body byte at offset `at`, if the body reaches it.
    Corrupt {
        /// The body offset of the byte.
        at: u64,
    },
}

/// One artifact request as an [`ArtifactProxy`] saw it, and what became of its response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactRequest {
    /// `GET` or `HEAD`.
    pub method: String,
    /// The request target, e.g. `/v1/artifacts/<sha256>`.
    pub path: String,
    /// The request's `Range` header, if any (`bytes=N-` for a resumed download).
    pub range: Option<String>,
    /// The response's status; `None` while no response head has been seen.
    pub status: Option<u16>,
    /// Body bytes forwarded to the client.
    pub body_bytes: u64,
    /// The fault in force when the response began (it applies to the whole response).
    pub fault: ArtifactFault,
    /// Whether the proxy cut the body short and closed the connection.
    pub truncated: bool,
    /// Whether the proxy inverted a byte of the body.
    pub corrupted: bool,
}

impl ArtifactRequest {
    /// The offset of a `Range: bytes=N-` request: where a resumed download continues.
    pub fn resume_offset(&self) -> Option<u64> {
        let spec = self.range.as_deref()?.trim().strip_prefix("bytes=")?;
        spec.strip_suffix('-')?.trim().parse().ok()
    }
}

/// What an [`ArtifactProxy`]'s accept thread and pumps share with the handle.
#[derive(Debug, Default)]
struct ArtifactShared {
    /// Where to forward; until it is set, connections are closed on accept.
    upstream: Mutex<Option<SocketAddr>>,
    /// The fault applied to artifact responses that begin from now on.
    fault: Mutex<ArtifactFault>,
    /// Every artifact request, in the order their heads were complete.
    log: Mutex<Vec<ArtifactRequest>>,
}

impl ArtifactShared {
    /// Changes the record at `index`, if there is one.
    fn update(&self, index: Option<usize>, change: impl FnOnce(&mut ArtifactRequest)) {
        let Some(i) = index else { return };
        if let Some(r) = lock(&self.log).get_mut(i) {
            change(r);
        }
    }
}

/// An HTTP proxy from an ephemeral local port to the controller's API that applies an
/// [`ArtifactFault`] to the responses of artifact requests ([`ARTIFACTS_PATH`]) and records
/// those requests. Requests are forwarded unchanged; so are other responses.
///
/// It follows HTTP/1.1 on each connection (a keep-alive connection's responses end where
/// their `Content-Length` says; `HEAD`, 1xx, 204 and 304 responses have no body; a response
/// without a length ends with the connection). A chunked response, or a request with a chunked
/// body, ends the following: the rest of that connection passes through unchanged, without
/// faults. The controller sends artifacts with a `Content-Length`, and the agent sends one
/// `GET` per connection.
///
/// The listener can be bound before the upstream is known ([`ArtifactProxy::bind`], then
/// [`ArtifactProxy::set_upstream`]): the controller reads its `public_url` (the proxy's URL)
/// once, at start, and only then tells its own address.
#[derive(Debug)]
pub struct ArtifactProxy {
    shared: Arc<ArtifactShared>,
    relay: Relay,
}

impl ArtifactProxy {
    /// Listens on `127.0.0.1:0` without an upstream: connections are closed at once (the
    /// client sees a connection closed before any answer) until
    /// [`ArtifactProxy::set_upstream`].
    pub fn bind() -> std::io::Result<ArtifactProxy> {
        let shared = Arc::new(ArtifactShared::default());
        let relay = {
            let shared = Arc::clone(&shared);
            Relay::start("artifact-proxy", move |client, conns| {
                let Some(upstream) = *lock(&shared.upstream) else {
                    let _ = client.shutdown(Shutdown::Both);
                    return;
                };
                if let Err(e) = artifact_connection(client, upstream, conns, &shared) {
                    // Out of threads or descriptors: this connection is lost, the proxy goes on.
                    eprintln!("artifact proxy to {upstream}: {e}");
                }
            })?
        };
        Ok(ArtifactProxy { shared, relay })
    }

    /// Starts a proxy to `upstream` on `127.0.0.1:0`.
    pub fn start(upstream: SocketAddr) -> std::io::Result<ArtifactProxy> {
        let proxy = ArtifactProxy::bind()?;
        proxy.set_upstream(upstream);
        Ok(proxy)
    }

    /// Forwards connections accepted from now on to `upstream`.
    pub fn set_upstream(&self, upstream: SocketAddr) {
        *lock(&self.shared.upstream) = Some(upstream);
    }

    /// The address it forwards to, once set.
    pub fn upstream(&self) -> Option<SocketAddr> {
        *lock(&self.shared.upstream)
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.relay.addr
    }

    /// `http://` and [`ArtifactProxy::addr`]: the controller's `[http] public_url`.
    pub fn url(&self) -> String {
        format!("http://{}", self.relay.addr)
    }

    /// Applies `fault` to artifact responses that begin from now on (one already under way
    /// keeps the fault it began with).
    pub fn set_fault(&self, fault: ArtifactFault) {
        *lock(&self.shared.fault) = fault;
    }

    /// The fault in force.
    pub fn fault(&self) -> ArtifactFault {
        *lock(&self.shared.fault)
    }

    /// Every artifact request so far, oldest first.
    pub fn requests(&self) -> Vec<ArtifactRequest> {
        lock(&self.shared.log).clone()
    }
}

fn artifact_connection(
    client: TcpStream,
    upstream: SocketAddr,
    conns: &Conns,
    shared: &Arc<ArtifactShared>,
) -> std::io::Result<()> {
    // The upstream refusing is passed on as a closed connection.
    let Ok(server) = TcpStream::connect(upstream) else {
        let _ = client.shutdown(Shutdown::Both);
        return Ok(());
    };
    if !conns.admit(&client, &server, || false)? {
        return Ok(());
    }
    let (sent, expected) = channel();
    let mut requests = Requests {
        head: Head::default(),
        body_left: 0,
        sent: Some(sent),
        shared: Arc::clone(shared),
    };
    let mut responses = Responses {
        state: Down::Head,
        head: Head::default(),
        expected,
        current: None,
        shared: Arc::clone(shared),
    };
    let (c, s) = (client.try_clone()?, server.try_clone()?);
    conns.spawn_pumps(
        "artifact-proxy",
        move || {
            pump(c, s, move |chunk| {
                requests.observe(chunk);
                (chunk.len(), true)
            });
        },
        move || pump(server, client, move |chunk| responses.process(chunk)),
    )
}

/// An HTTP head (request or status line and header fields) that may arrive in pieces.
#[derive(Debug, Default)]
struct Head {
    buf: Vec<u8>,
}

impl Head {
    /// Takes bytes of `data` up to the end of the head (the blank line); returns how many it
    /// took and, once the head is complete, the head.
    fn feed(&mut self, data: &[u8]) -> (usize, Option<Vec<u8>>) {
        let old = self.buf.len();
        self.buf.extend_from_slice(data);
        // The blank line may have begun in an earlier piece.
        let from = old.saturating_sub(3);
        match self.buf[from..].windows(4).position(|w| w == b"\r\n\r\n") {
            Some(p) => {
                let end = from + p + 4;
                self.buf.truncate(end);
                (end - old, Some(std::mem::take(&mut self.buf)))
            }
            None => (data.len(), None),
        }
    }

    /// Whether the head so far is too long to follow.
    fn too_long(&self) -> bool {
        self.buf.len() > MAX_HEAD
    }
}

/// The first line and the fields (names in lowercase) of a complete head.
fn parse_head(head: &[u8]) -> (String, Vec<(String, String)>) {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split("\r\n");
    let first = lines.next().unwrap_or_default().to_owned();
    let fields = lines
        .filter_map(|l| {
            let (name, value) = l.split_once(':')?;
            Some((name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        })
        .collect();
    (first, fields)
}

/// The value of field `name` (lowercase).
fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// What the request side tells the response side about each request, in order. A request is
/// announced before its bytes are forwarded, so its response always finds it.
#[derive(Debug)]
struct Sent {
    /// A `HEAD` request: its response has no body, whatever its length says.
    head_only: bool,
    /// Its index in the log, if it is an artifact request.
    record: Option<usize>,
}

/// Follows the requests going up one connection.
#[derive(Debug)]
struct Requests {
    head: Head,
    /// Bytes of the current request's body still to pass.
    body_left: u64,
    /// `None` once the requests can no longer be followed.
    sent: Option<Sender<Sent>>,
    shared: Arc<ArtifactShared>,
}

impl Requests {
    fn observe(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let Some(sent) = &self.sent else { return };
            if self.body_left > 0 {
                let n = usize::try_from(self.body_left).map_or(data.len(), |l| l.min(data.len()));
                self.body_left -= n as u64;
                data = &data[n..];
                continue;
            }
            let (took, head) = self.head.feed(data);
            data = &data[took..];
            let Some(head) = head else {
                if self.head.too_long() {
                    self.sent = None;
                }
                continue;
            };
            let (line, fields) = parse_head(&head);
            let mut words = line.split_whitespace();
            let method = words.next().unwrap_or_default().to_owned();
            let path = words.next().unwrap_or_default().to_owned();
            let record = path.starts_with(ARTIFACTS_PATH).then(|| {
                let mut log = lock(&self.shared.log);
                log.push(ArtifactRequest {
                    method: method.clone(),
                    path,
                    range: field(&fields, "range").map(str::to_owned),
                    status: None,
                    body_bytes: 0,
                    fault: ArtifactFault::Pass,
                    truncated: false,
                    corrupted: false,
                });
                log.len() - 1
            });
            let head_only = method.eq_ignore_ascii_case("HEAD");
            // The response side has gone only when the connection is closing.
            let _ = sent.send(Sent { head_only, record });
            if field(&fields, "transfer-encoding").is_some() {
                // A chunked body: where the next request begins is not followed.
                self.sent = None;
            } else {
                self.body_left = field(&fields, "content-length")
                    .and_then(|l| l.parse().ok())
                    .unwrap_or(0);
            }
        }
    }
}

/// Where the response side is in the stream of responses.
#[derive(Debug)]
enum Down {
    /// Reading a response head.
    Head,
    /// Forwarding a body.
    Body(Body),
    /// No longer following: everything passes unchanged.
    Opaque,
}

/// A response body being forwarded.
#[derive(Debug)]
struct Body {
    /// Bytes still to come; `None`: until the connection closes.
    left: Option<u64>,
    /// Bytes forwarded so far.
    pos: u64,
    /// The fault applied to it.
    fault: ArtifactFault,
    /// Its request's index in the log, if it is an artifact request.
    record: Option<usize>,
}

/// Follows the responses coming down one connection and applies the fault to artifact
/// responses.
#[derive(Debug)]
struct Responses {
    state: Down,
    head: Head,
    expected: Receiver<Sent>,
    /// The request being answered (kept across interim 1xx responses).
    current: Option<Sent>,
    shared: Arc<ArtifactShared>,
}

impl Responses {
    /// Follows and changes one chunk from the server in place: how many of its first bytes to
    /// forward, and whether the connection goes on after them.
    fn process(&mut self, data: &mut [u8]) -> (usize, bool) {
        let mut i = 0;
        loop {
            match &mut self.state {
                Down::Opaque => return (data.len(), true),
                Down::Head => {
                    if i == data.len() {
                        return (i, true);
                    }
                    let (took, head) = self.head.feed(&data[i..]);
                    i += took;
                    match head {
                        Some(head) => self.state = self.begin(&head),
                        None if self.head.too_long() => self.state = Down::Opaque,
                        None => {}
                    }
                }
                Down::Body(b) => {
                    if b.left == Some(0) {
                        self.state = Down::Head;
                        continue;
                    }
                    if let ArtifactFault::Truncate { after } = b.fault
                        && b.pos >= after
                    {
                        self.shared.update(b.record, |r| r.truncated = true);
                        return (i, false);
                    }
                    if i == data.len() {
                        return (i, true);
                    }
                    let mut n = data.len() - i;
                    let limit = match b.fault {
                        ArtifactFault::Truncate { after } => Some(after - b.pos),
                        _ => None,
                    };
                    for l in [b.left, limit].into_iter().flatten() {
                        n = usize::try_from(l).map_or(n, |l| l.min(n));
                    }
                    let body = &mut data[i..i + n];
                    let mut corrupted = false;
                    if let ArtifactFault::Corrupt { at } = b.fault
                        && let Some(k) = at
                            .checked_sub(b.pos)
                            .and_then(|k| usize::try_from(k).ok())
                            .filter(|k| *k < n)
                    {
                        body[k] ^= 0xff;
                        corrupted = true;
                    }
                    b.pos += n as u64;
                    if let Some(left) = &mut b.left {
                        *left -= n as u64;
                    }
                    i += n;
                    self.shared.update(b.record, |r| {
                        r.body_bytes += n as u64;
                        r.corrupted |= corrupted;
                    });
                }
            }
        }
    }

    /// Reads a complete response head: what follows it.
    fn begin(&mut self, head: &[u8]) -> Down {
        let (line, fields) = parse_head(head);
        let Some(status) = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse::<u16>().ok())
        else {
            return Down::Opaque;
        };
        if self.current.is_none() {
            // Empty only for a response nobody asked for (the server's own 408, say), which
            // is then followed without a request.
            self.current = self.expected.try_recv().ok();
        }
        if status == 101 {
            return Down::Opaque;
        }
        if (100..200).contains(&status) {
            // Interim: no body, and the final response to the same request follows.
            return Down::Head;
        }
        let (head_only, record) = self
            .current
            .take()
            .map_or((false, None), |s| (s.head_only, s.record));
        let fault = if record.is_some() {
            *lock(&self.shared.fault)
        } else {
            ArtifactFault::Pass
        };
        self.shared.update(record, |r| {
            r.status = Some(status);
            r.fault = fault;
        });
        let left = if head_only || status == 204 || status == 304 {
            Some(0)
        } else if field(&fields, "transfer-encoding").is_some() {
            return Down::Opaque;
        } else {
            field(&fields, "content-length").and_then(|l| l.parse().ok())
        };
        Down::Body(Body {
            left,
            pos: 0,
            fault,
            record,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use std::io::{BufRead as _, BufReader};
    use std::time::Instant;

    /// A line echo server on an ephemeral port, one thread per connection; it ends with the
    /// test process (its threads block in accept and read only).
    fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for s in listener.incoming() {
                let Ok(s) = s else { continue };
                std::thread::spawn(move || {
                    let mut w = s.try_clone().unwrap();
                    for line in BufReader::new(s).lines() {
                        let Ok(line) = line else { break };
                        if writeln!(w, "{line}").is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    fn connect(addr: SocketAddr) -> (TcpStream, BufReader<TcpStream>) {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let r = BufReader::new(s.try_clone().unwrap());
        (s, r)
    }

    /// Sends `line` and reads the echo; `None` if the connection is closed or fails.
    fn echo(s: &mut TcpStream, r: &mut BufReader<TcpStream>, line: &str) -> Option<String> {
        writeln!(s, "{line}").ok()?;
        let mut got = String::new();
        match r.read_line(&mut got) {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(got.trim_end().to_owned()),
        }
    }

    #[test]
    fn forwards_both_ways() {
        let proxy = FaultProxy::start(echo_server()).unwrap();
        let (mut s, mut r) = connect(proxy.addr());
        for i in 0..20 {
            let line = format!("hello {i}");
            assert_eq!(echo(&mut s, &mut r, &line).as_deref(), Some(line.as_str()));
        }
        assert_eq!(proxy.forwarded(), 1);
    }

    #[test]
    fn partition_drops_and_refuses_until_healed() {
        let proxy = FaultProxy::start(echo_server()).unwrap();
        let (mut s, mut r) = connect(proxy.addr());
        assert_eq!(echo(&mut s, &mut r, "before").as_deref(), Some("before"));

        proxy.partition();
        assert!(proxy.is_partitioned());
        assert_eq!(echo(&mut s, &mut r, "during"), None, "the open link is cut");
        let (mut s2, mut r2) = connect(proxy.addr());
        assert_eq!(echo(&mut s2, &mut r2, "new"), None, "new links are refused");
        assert!(proxy.refused() >= 1);

        proxy.heal();
        let (mut s3, mut r3) = connect(proxy.addr());
        assert_eq!(echo(&mut s3, &mut r3, "after").as_deref(), Some("after"));
    }

    #[test]
    fn latency_delays_each_round_trip() {
        let proxy = FaultProxy::start(echo_server()).unwrap();
        let (mut s, mut r) = connect(proxy.addr());
        proxy.set_latency(Duration::from_millis(150));
        let t = Instant::now();
        assert_eq!(echo(&mut s, &mut r, "slow").as_deref(), Some("slow"));
        // One chunk each way.
        assert!(
            t.elapsed() >= Duration::from_millis(300),
            "{:?}",
            t.elapsed()
        );
        proxy.set_latency(Duration::ZERO);
        assert_eq!(echo(&mut s, &mut r, "fast").as_deref(), Some("fast"));
    }

    #[test]
    fn drop_closes_open_connections() {
        let proxy = FaultProxy::start(echo_server()).unwrap();
        let addr = proxy.addr();
        let (mut s, mut r) = connect(addr);
        assert_eq!(echo(&mut s, &mut r, "x").as_deref(), Some("x"));
        drop(proxy);
        assert_eq!(echo(&mut s, &mut r, "y"), None);
        assert!(
            TcpStream::connect(addr).is_err(),
            "nothing listens any more"
        );
    }

    #[test]
    fn upstream_down_closes_the_client() {
        // A port with nothing behind it: bind, note, close.
        let dead = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let proxy = FaultProxy::start(dead).unwrap();
        let (mut s, mut r) = connect(proxy.addr());
        assert_eq!(echo(&mut s, &mut r, "x"), None);
        assert_eq!(proxy.upstream(), dead);
    }

    // ArtifactProxy.

    /// The body a test server sends: 100 000 bytes, several of the proxy's chunks, no two alike
    /// within 251 bytes.
    fn artifact() -> Vec<u8> {
        (0..100_000u32)
            .map(|i| u8::try_from(i % 251).unwrap())
            .collect()
    }

    /// A small HTTP/1.1 server on an ephemeral port: every GET or HEAD, whatever its path, is
    /// answered with [`artifact`] (206 and the bytes from N on for `Range: bytes=N-`) with a
    /// `Content-Length`, and the connection stays open for the next request.
    fn http_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for s in listener.incoming() {
                let Ok(s) = s else { continue };
                std::thread::spawn(move || serve(s));
            }
        });
        addr
    }

    fn serve(s: TcpStream) {
        let body = artifact();
        let mut w = s.try_clone().unwrap();
        let mut r = BufReader::new(s);
        loop {
            let mut line = String::new();
            if r.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let method = line
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned();
            let mut from = 0;
            loop {
                let mut h = String::new();
                if r.read_line(&mut h).unwrap_or(0) == 0 {
                    return;
                }
                let h = h.trim_end().to_ascii_lowercase();
                if h.is_empty() {
                    break;
                }
                if let Some(v) = h.strip_prefix("range: bytes=") {
                    from = v.trim_end_matches('-').parse().unwrap();
                }
            }
            let rest = &body[from..];
            let head = if from == 0 {
                format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", rest.len())
            } else {
                format!(
                    "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {from}-{}/{}\r\n\
                     Content-Length: {}\r\n\r\n",
                    body.len() - 1,
                    body.len(),
                    rest.len()
                )
            };
            if w.write_all(head.as_bytes()).is_err()
                || (method != "HEAD" && w.write_all(rest).is_err())
            {
                return;
            }
        }
    }

    /// A response as a client got it.
    #[derive(Debug)]
    struct Got {
        status: u16,
        /// What `Content-Length` announced.
        length: usize,
        /// The body bytes that arrived before its end or the connection's close.
        body: Vec<u8>,
    }

    /// One keep-alive HTTP client connection.
    struct Client {
        w: TcpStream,
        r: BufReader<TcpStream>,
    }

    impl Client {
        fn connect(addr: SocketAddr) -> Client {
            let (w, r) = connect(addr);
            Client { w, r }
        }

        /// Sends `method path` (from `range` on, if set) and reads the response; `None` if the
        /// connection closed before a response head.
        fn send(&mut self, method: &str, path: &str, range: Option<u64>) -> Option<Got> {
            let range = range.map_or_else(String::new, |n| format!("Range: bytes={n}-\r\n"));
            write!(self.w, "{method} {path} HTTP/1.1\r\nHost: t\r\n{range}\r\n").ok()?;
            let mut line = String::new();
            if self.r.read_line(&mut line).ok()? == 0 {
                return None;
            }
            let status = line.split_whitespace().nth(1)?.parse().ok()?;
            let mut length = 0;
            loop {
                let mut h = String::new();
                self.r.read_line(&mut h).ok()?;
                let h = h.trim_end().to_ascii_lowercase();
                if h.is_empty() {
                    break;
                }
                if let Some(v) = h.strip_prefix("content-length:") {
                    length = v.trim().parse().ok()?;
                }
            }
            let want = if method == "HEAD" { 0 } else { length as u64 };
            let mut body = Vec::new();
            // A cut connection ends the body early; what arrived is kept either way.
            let _ = (&mut self.r).take(want).read_to_end(&mut body);
            Some(Got {
                status,
                length,
                body,
            })
        }

        /// Whether the other side has closed the connection.
        fn closed(&mut self) -> bool {
            matches!(self.r.read(&mut [0u8; 1]), Ok(0) | Err(_))
        }
    }

    /// The offsets at which `got` differs from `want`, and whether the lengths differ.
    fn differences(got: &[u8], want: &[u8]) -> (Vec<usize>, bool) {
        let at = got
            .iter()
            .zip(want)
            .enumerate()
            .filter(|(_, (g, w))| g != w)
            .map(|(i, _)| i)
            .collect();
        (at, got.len() != want.len())
    }

    const PATH: &str = "/v1/artifacts/0123abcd";

    #[test]
    fn artifact_pass_forwards_unchanged_and_records_ranges() {
        let proxy = ArtifactProxy::start(http_server()).unwrap();
        assert_eq!(proxy.fault(), ArtifactFault::Pass);
        let want = artifact();
        let mut c = Client::connect(proxy.addr());
        let full = c.send("GET", PATH, None).unwrap();
        assert_eq!((full.status, full.body.len()), (200, want.len()));
        assert_eq!(full.body, want);
        // The same connection: the proxy found where the first response ended.
        let tail = c.send("GET", PATH, Some(60_000)).unwrap();
        assert_eq!(tail.status, 206);
        assert_eq!(tail.body, want[60_000..]);
        let other = c.send("GET", "/healthz", None).unwrap();
        assert_eq!(other.body, want);

        let seen = proxy.requests();
        assert_eq!(
            seen.len(),
            2,
            "only artifact requests are recorded: {seen:?}"
        );
        assert_eq!(
            seen[0],
            ArtifactRequest {
                method: "GET".into(),
                path: PATH.into(),
                range: None,
                status: Some(200),
                body_bytes: 100_000,
                fault: ArtifactFault::Pass,
                truncated: false,
                corrupted: false,
            }
        );
        assert_eq!(seen[1].range.as_deref(), Some("bytes=60000-"));
        assert_eq!(seen[1].resume_offset(), Some(60_000));
        assert_eq!((seen[1].status, seen[1].body_bytes), (Some(206), 40_000));
        assert_eq!(seen[0].resume_offset(), None);
    }

    #[test]
    fn artifact_truncate_cuts_the_body_and_closes() {
        let proxy = ArtifactProxy::start(http_server()).unwrap();
        proxy.set_fault(ArtifactFault::Truncate { after: 30_000 });
        let want = artifact();

        // Another path on the same connection first: untouched, and the artifact response
        // after it is cut at its own body's offset.
        let mut c = Client::connect(proxy.addr());
        assert_eq!(c.send("GET", "/v1/releases", None).unwrap().body, want);
        let cut = c.send("GET", PATH, None).unwrap();
        assert_eq!((cut.status, cut.length), (200, 100_000));
        assert_eq!(cut.body, want[..30_000]);
        assert!(c.closed(), "the connection is closed after the cut");

        // A resumed request meets the cut 30 000 bytes into its own body.
        let mut c = Client::connect(proxy.addr());
        let resumed = c.send("GET", PATH, Some(30_000)).unwrap();
        assert_eq!(resumed.status, 206);
        assert_eq!(resumed.body, want[30_000..60_000]);
        assert!(c.closed());

        // A body no longer than the cut is forwarded whole, and the connection stays open.
        let mut c = Client::connect(proxy.addr());
        let last = c.send("GET", PATH, Some(90_000)).unwrap();
        assert_eq!(last.body, want[90_000..]);
        proxy.set_fault(ArtifactFault::Pass);
        assert_eq!(c.send("GET", PATH, None).unwrap().body, want);

        let seen: Vec<(Option<u64>, u64, bool, ArtifactFault)> = proxy
            .requests()
            .iter()
            .map(|r| (r.resume_offset(), r.body_bytes, r.truncated, r.fault))
            .collect();
        let cut = ArtifactFault::Truncate { after: 30_000 };
        assert_eq!(
            seen,
            [
                (None, 30_000, true, cut),
                (Some(30_000), 30_000, true, cut),
                (Some(90_000), 10_000, false, cut),
                (None, 100_000, false, ArtifactFault::Pass),
            ]
        );
    }

    #[test]
    fn artifact_corrupt_inverts_one_byte() {
        let proxy = ArtifactProxy::start(http_server()).unwrap();
        // Past the first chunks of 16 KiB, so the offset is counted across reads.
        proxy.set_fault(ArtifactFault::Corrupt { at: 70_000 });
        let want = artifact();
        let mut c = Client::connect(proxy.addr());

        let got = c.send("GET", PATH, None).unwrap();
        assert_eq!(differences(&got.body, &want), (vec![70_000], false));
        assert_eq!(got.body[70_000], want[70_000] ^ 0xff);

        // A HEAD has no body: the GET after it on the same connection is followed correctly.
        let head = c.send("HEAD", PATH, None).unwrap();
        assert_eq!(
            (head.status, head.length, head.body.len()),
            (200, 100_000, 0)
        );
        let got = c.send("GET", PATH, Some(10_000)).unwrap();
        assert_eq!(
            differences(&got.body, &want[10_000..]),
            (vec![70_000], false)
        );

        // A body that ends before the offset is untouched; so is any other path.
        let short = c.send("GET", PATH, Some(50_000)).unwrap();
        assert_eq!(short.body, want[50_000..]);
        assert_eq!(c.send("GET", "/v1/releases", None).unwrap().body, want);

        let seen: Vec<(&str, Option<u64>, u64, bool)> = proxy
            .requests()
            .iter()
            .map(|r| {
                let method = if r.method == "GET" { "GET" } else { "HEAD" };
                (method, r.resume_offset(), r.body_bytes, r.corrupted)
            })
            .collect();
        assert_eq!(
            seen,
            [
                ("GET", None, 100_000, true),
                ("HEAD", None, 0, false),
                ("GET", Some(10_000), 90_000, true),
                ("GET", Some(50_000), 50_000, false),
            ]
        );
    }

    /// A head is found wherever the reads split it, the blank line included.
    #[test]
    fn a_head_split_anywhere_is_found() {
        let text = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc";
        let end = text.len() - 3;
        for split in 1..text.len() {
            let mut h = Head::default();
            let (took, head) = match h.feed(&text[..split]) {
                (took, Some(head)) => (took, head),
                (took, None) => {
                    let (more, head) = h.feed(&text[split..]);
                    (took + more, head.unwrap())
                }
            };
            assert_eq!(
                (took, head.as_slice()),
                (end, &text[..end]),
                "split at {split}"
            );
        }
    }

    /// A request's body is skipped by its length, even when it looks like a request.
    #[test]
    fn request_bodies_are_skipped() {
        let shared = Arc::new(ArtifactShared::default());
        let (sent, expected) = channel();
        let mut requests = Requests {
            head: Head::default(),
            body_left: 0,
            sent: Some(sent),
            shared: Arc::clone(&shared),
        };
        let body = "GET /v1/artifacts/not-a-request HTTP/1.1\r\n\r\n";
        let stream = format!(
            "POST /v1/releases HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}\
             GET {PATH} HTTP/1.1\r\nRange: bytes=5-\r\n\r\n",
            body.len()
        );
        for piece in stream.as_bytes().chunks(7) {
            requests.observe(piece);
        }
        let records: Vec<Option<usize>> = expected.try_iter().map(|s| s.record).collect();
        assert_eq!(records, [None, Some(0)]);
        let log = lock(&shared.log);
        assert_eq!(log.len(), 1, "{log:?}");
        assert_eq!(
            (log[0].path.as_str(), log[0].resume_offset()),
            (PATH, Some(5))
        );
    }

    #[test]
    fn artifact_proxy_closes_connections_until_it_has_an_upstream() {
        let proxy = ArtifactProxy::bind().unwrap();
        assert_eq!(proxy.upstream(), None);
        assert_eq!(proxy.url(), format!("http://{}", proxy.addr()));
        let mut c = Client::connect(proxy.addr());
        assert!(c.send("GET", PATH, None).is_none());

        let server = http_server();
        proxy.set_upstream(server);
        assert_eq!(proxy.upstream(), Some(server));
        let mut c = Client::connect(proxy.addr());
        assert_eq!(c.send("GET", PATH, None).unwrap().body, artifact());
        assert_eq!(proxy.requests().len(), 1);
    }
}
