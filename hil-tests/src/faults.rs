//! Network fault injection: a TCP proxy for one link (an agent and its broker) that a test can
//! partition, heal and slow down while the link is in use, as tough's toxic proxy does for
//! HTTP.
//!
//! The proxy listens on `127.0.0.1:0`; the agent is configured with [`FaultProxy::addr`]
//! instead of the broker's address. Each accepted connection gets a fresh connection to the
//! upstream address and two pump threads, one per direction.
//!
//! | Fault | What the client sees |
//! |---|---|
//! | [`FaultProxy::partition`] | every open connection is shut down; new ones are accepted and closed at once (a connection refused by a middlebox) until [`FaultProxy::heal`] |
//! | [`FaultProxy::set_latency`] | each chunk of bytes, in either direction, is held that long before it is forwarded |
//!
//! Threads only (`std::net`), no runtime: the proxy works beside any test. Dropping it stops
//! accepting, shuts every connection down and joins every thread.

use std::io::{Read as _, Write as _};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

/// Bytes read per chunk: one MQTT packet of the agent's usually fits.
const CHUNK: usize = 16 * 1024;

/// What the accept thread and the pumps share with the handle.
#[derive(Debug, Default)]
struct Shared {
    /// Set once the proxy is dropped.
    stopping: AtomicBool,
    /// While set, connections are dropped and refused.
    partitioned: AtomicBool,
    /// Added delay per forwarded chunk, milliseconds.
    latency_ms: AtomicU64,
    /// One handle of each open socket (both ends of every connection), to shut them down.
    open: Mutex<Vec<TcpStream>>,
    /// The pump threads, joined on drop.
    pumps: Mutex<Vec<JoinHandle<()>>>,
    /// Connections accepted and forwarded.
    forwarded: AtomicU64,
    /// Connections refused while partitioned.
    refused: AtomicU64,
}

impl Shared {
    /// Shuts down every open socket: the pumps see end-of-stream or an error and stop.
    fn cut_all(&self) {
        let open = std::mem::take(&mut *self.open.lock().unwrap_or_else(PoisonError::into_inner));
        for s in open {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

/// A TCP proxy from an ephemeral local port to `upstream`, with run-time faults.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    upstream: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// Starts a proxy to `upstream` on `127.0.0.1:0`.
    pub fn start(upstream: SocketAddr) -> std::io::Result<FaultProxy> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let accept = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name(format!("fault-proxy {addr}"))
                .spawn(move || accept_loop(&listener, upstream, &shared))?
        };
        Ok(FaultProxy {
            addr,
            upstream,
            shared,
            accept: Some(accept),
        })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
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
        self.shared.cut_all();
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

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        // Wakes the blocking accept so it sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        self.shared.cut_all();
        let pumps = std::mem::take(
            &mut *self
                .shared
                .pumps
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for p in pumps {
            let _ = p.join();
        }
    }
}

fn accept_loop(listener: &TcpListener, upstream: SocketAddr, shared: &Arc<Shared>) {
    for client in listener.incoming() {
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = client else { continue };
        if shared.partitioned.load(Ordering::SeqCst) {
            shared.refused.fetch_add(1, Ordering::SeqCst);
            let _ = client.shutdown(Shutdown::Both);
            continue;
        }
        // The upstream refusing is passed on the same way: the client's connection closes.
        let Ok(server) = TcpStream::connect(upstream) else {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        };
        if let Err(e) = connect_pumps(client, server, shared) {
            // Out of threads or descriptors: this connection is lost, the proxy goes on.
            eprintln!("fault proxy to {upstream}: {e}");
        }
    }
}

fn connect_pumps(
    client: TcpStream,
    server: TcpStream,
    shared: &Arc<Shared>,
) -> std::io::Result<()> {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    {
        let mut open = shared.open.lock().unwrap_or_else(PoisonError::into_inner);
        // Checked under the lock: a partition that began after the accept has already taken
        // the list, so this connection must not join it.
        if shared.partitioned.load(Ordering::SeqCst) || shared.stopping.load(Ordering::SeqCst) {
            let _ = client.shutdown(Shutdown::Both);
            let _ = server.shutdown(Shutdown::Both);
            shared.refused.fetch_add(1, Ordering::SeqCst);
            return Ok(());
        }
        open.push(client.try_clone()?);
        open.push(server.try_clone()?);
    }
    shared.forwarded.fetch_add(1, Ordering::SeqCst);
    let up = {
        let (from, to, shared) = (client.try_clone()?, server.try_clone()?, Arc::clone(shared));
        std::thread::Builder::new()
            .name("fault-proxy up".into())
            .spawn(move || pump(from, to, &shared))?
    };
    let down = {
        let shared = Arc::clone(shared);
        std::thread::Builder::new()
            .name("fault-proxy down".into())
            .spawn(move || pump(server, client, &shared))?
    };
    let mut pumps = shared.pumps.lock().unwrap_or_else(PoisonError::into_inner);
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

/// Copies `from` to `to` until either side closes, holding each chunk for the latency; then
/// shuts both down, so the other direction stops too.
fn pump(mut from: TcpStream, mut to: TcpStream, shared: &Shared) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let ms = shared.latency_ms.load(Ordering::SeqCst);
        if ms > 0 {
            // The injected delay itself.
            std::thread::sleep(Duration::from_millis(ms));
        }
        if shared.partitioned.load(Ordering::SeqCst) || to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
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
}
