//! Flow control through a russh-to-russh bridge, the shape of sallyport's edge and gateway:
//!
//! ```text
//!  engineer (russh client) ──ssh── bastion (russh server) ──ssh── node (russh server, `cat`)
//!                                   handler bridges each session channel to a channel of
//!                                   one russh client connection to the node
//! ```
//!
//! russh 0.65.1 as published grants receive window when data *arrives* and applies back-pressure
//! only by parking the whole session loop on a full per-channel queue, so this bridge deadlocks
//! under bidirectional load and one stalled channel stops every channel of its connection. The
//! patched copy in `third_party/russh` (see `third_party/russh/SALLYPORT-PATCH.md`) grants window
//! when the application consumes. Both tests fail against unpatched russh.
//!
//! The timeouts below are failure guards (a stall), not timing assertions. Run with
//! `cargo test -p sallyport-bastion --test flow --release -- --nocapture` to see the numbers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use russh::keys::PublicKeyOrCertificate;
use russh::keys::ssh_key::{Algorithm, PrivateKey};
use russh::{
    Channel, ChannelMsg, ChannelReadHalf, ChannelWriteHalf, MethodKind, MethodSet, Preferred,
    cipher, client, server,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::OnceCell;

const MB: u64 = 1024 * 1024;
/// Failure guard for one transfer: far above what a working bridge needs on a loaded 2-core box.
const STALL_GUARD: Duration = Duration::from_secs(150);

/// The tests measure process-wide memory: run them one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn preferred() -> Preferred {
    Preferred {
        // ring's AES-GCM: the cheapest cipher here, so crypto does not dominate the test's time.
        cipher: std::borrow::Cow::Owned(vec![cipher::AES_256_GCM, cipher::CHACHA20_POLY1305]),
        ..Preferred::default()
    }
}

fn server_config() -> Arc<server::Config> {
    let key = PrivateKey::random(&mut russh::keys::key::safe_rng(), Algorithm::Ed25519)
        .expect("host key");
    Arc::new(server::Config {
        methods: MethodSet::from(&[MethodKind::None][..]),
        auth_rejection_time: Duration::from_millis(0),
        auth_rejection_time_initial: Some(Duration::from_millis(0)),
        keys: vec![key],
        inactivity_timeout: None,
        nodelay: true,
        preferred: preferred(),
        ..Default::default()
    })
}

fn client_config() -> Arc<client::Config> {
    Arc::new(client::Config {
        inactivity_timeout: None,
        nodelay: true,
        preferred: preferred(),
        ..Default::default()
    })
}

/// Serves `handler` (cloned per connection) on a fresh loopback port.
async fn serve<H: server::Handler + Clone + Send + 'static>(handler: H) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let config = server_config();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let _ = socket.set_nodelay(true);
            let (config, handler) = (config.clone(), handler.clone());
            tokio::spawn(async move {
                if let Ok(session) = server::run_stream(config, socket, handler).await {
                    let _ = session.await;
                }
            });
        }
    });
    addr
}

struct AnyHostKey;

impl client::Handler for AnyHostKey {
    type Error = russh::Error;

    async fn check_server_key(&mut self, _: &PublicKeyOrCertificate) -> Result<bool, Self::Error> {
        Ok(true)
    }
}

async fn connect(addr: &str) -> client::Handle<AnyHostKey> {
    let socket = TcpStream::connect(addr).await.expect("connect");
    socket.set_nodelay(true).expect("nodelay");
    let mut handle = client::connect_stream(client_config(), socket, AnyHostKey)
        .await
        .expect("ssh handshake");
    let auth = handle.authenticate_none("flow").await.expect("auth");
    assert!(auth.success(), "auth none refused");
    handle
}

/// Copies data (and EOF) from one channel to another until either side goes away. Back-pressure
/// is the writer's window: while `data_bytes` waits, this pump stops reading.
async fn pump<S>(mut from: ChannelReadHalf, to: ChannelWriteHalf<S>)
where
    S: From<(russh::ChannelId, ChannelMsg)> + Send + Sync + 'static,
{
    while let Some(msg) = from.wait().await {
        match msg {
            ChannelMsg::Data { data } if to.data_bytes(data.clone()).await.is_err() => break,
            ChannelMsg::Eof => {
                let _ = to.eof().await;
            }
            ChannelMsg::Close => break,
            _ => {}
        }
    }
    let _ = to.close().await;
}

/// The node: every session channel echoes its input, like `cat`.
#[derive(Clone)]
struct Node;

impl server::Handler for Node {
    type Error = russh::Error;

    async fn auth_none(&mut self, _: &str) -> Result<server::Auth, Self::Error> {
        Ok(server::Auth::Accept)
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<server::Msg>,
        reply: server::ChannelOpenHandle,
        _: &mut server::Session,
    ) -> Result<(), Self::Error> {
        reply.accept().await;
        let (mut rx, tx) = channel.split();
        tokio::spawn(async move {
            while let Some(msg) = rx.wait().await {
                match msg {
                    ChannelMsg::Data { data } if tx.data_bytes(data.clone()).await.is_err() => {
                        break;
                    }
                    ChannelMsg::Eof => {
                        let _ = tx.eof().await;
                    }
                    ChannelMsg::Close => break,
                    _ => {}
                }
            }
        });
        Ok(())
    }
}

/// The bastion: each session channel is bridged to a session channel on the node. All channels
/// of one engineer connection share one node connection (multiplexing on both hops). Nothing in
/// a handler callback waits for the other connection: the bridging runs in spawned tasks.
struct Bastion {
    node_addr: String,
    node: Arc<OnceCell<client::Handle<AnyHostKey>>>,
}

/// `serve` clones the handler for each accepted connection: each engineer connection gets its
/// own node connection.
impl Clone for Bastion {
    fn clone(&self) -> Self {
        Bastion {
            node_addr: self.node_addr.clone(),
            node: Arc::new(OnceCell::new()),
        }
    }
}

impl server::Handler for Bastion {
    type Error = russh::Error;

    async fn auth_none(&mut self, _: &str) -> Result<server::Auth, Self::Error> {
        Ok(server::Auth::Accept)
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<server::Msg>,
        reply: server::ChannelOpenHandle,
        _: &mut server::Session,
    ) -> Result<(), Self::Error> {
        reply.accept().await;
        let (node_addr, node) = (self.node_addr.clone(), Arc::clone(&self.node));
        tokio::spawn(async move {
            let handle = node.get_or_init(|| connect(&node_addr)).await;
            let Ok(upstream) = handle.channel_open_session().await else {
                return;
            };
            let (engineer_rx, engineer_tx) = channel.split();
            let (node_rx, node_tx) = upstream.split();
            tokio::spawn(pump(engineer_rx, node_tx));
            tokio::spawn(pump(node_rx, engineer_tx));
        });
        Ok(())
    }
}

/// A fresh bastion server per test, in front of a fresh node server.
async fn bridge() -> String {
    let node_addr = serve(Node).await;
    serve(Bastion {
        node_addr,
        node: Arc::new(OnceCell::new()),
    })
    .await
}

/// The byte at stream offset `i`: a pattern that catches loss, duplication and reordering.
fn pattern_byte(i: u64) -> u8 {
    (i % 251) as u8
}

/// Writes `total` bytes of the pattern into a channel, counting progress in `sent`.
async fn write_pattern<S>(tx: ChannelWriteHalf<S>, total: u64, sent: Arc<AtomicU64>)
where
    S: From<(russh::ChannelId, ChannelMsg)> + Send + Sync + 'static,
{
    const CHUNK: usize = 64 * 1024;
    let buf: Vec<u8> = (0..(CHUNK + 251) as u64).map(pattern_byte).collect();
    let mut offset = 0u64;
    while offset < total {
        let len = CHUNK.min((total - offset) as usize);
        let start = (offset % 251) as usize;
        if tx.data(&buf[start..start + len]).await.is_err() {
            return;
        }
        offset += len as u64;
        sent.store(offset, Ordering::Relaxed);
    }
    let _ = tx.eof().await;
}

/// Reads `total` bytes from a channel, checking the pattern, counting progress in `received`.
async fn read_pattern(mut rx: ChannelReadHalf, total: u64, received: Arc<AtomicU64>) {
    let mut offset = 0u64;
    while offset < total {
        match rx.wait().await {
            Some(ChannelMsg::Data { data }) => {
                for (k, b) in data.iter().enumerate() {
                    assert_eq!(
                        *b,
                        pattern_byte(offset + k as u64),
                        "corrupted stream at offset {}",
                        offset + k as u64
                    );
                }
                offset += data.len() as u64;
                received.store(offset, Ordering::Relaxed);
            }
            Some(_) => {}
            None => panic!("channel closed after {offset} of {total} bytes"),
        }
    }
}

/// Pushes `total` bytes into `channel` while reading the echo concurrently; returns the time.
async fn echo_through(channel: Channel<client::Msg>, total: u64, what: &str) -> Duration {
    let (rx, tx) = channel.split();
    let sent = Arc::new(AtomicU64::new(0));
    let received = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let writer = tokio::spawn(write_pattern(tx, total, sent.clone()));
    let reader = tokio::spawn(read_pattern(rx, total, received.clone()));
    let done = tokio::time::timeout(STALL_GUARD, async {
        reader.await.expect("reader task");
        writer.await.expect("writer task");
    })
    .await;
    assert!(
        done.is_ok(),
        "{what}: stalled after {STALL_GUARD:?}: {} MB sent, {} MB echoed back, of {} MB",
        sent.load(Ordering::Relaxed) / MB,
        received.load(Ordering::Relaxed) / MB,
        total / MB
    );
    start.elapsed()
}

/// (kB) of a `/proc/self/status` field.
fn status_kb(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"))
}

/// Resets the peak-RSS mark (VmHWM) if the kernel allows it; returns whether it did.
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Samples VmRSS every few milliseconds until dropped; the maximum is a lower bound of the peak
/// (used when VmHWM cannot be reset).
struct RssSampler {
    max_kb: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl RssSampler {
    fn start() -> Self {
        let max_kb = Arc::new(AtomicU64::new(status_kb("VmRSS:")));
        let max = max_kb.clone();
        let task = tokio::spawn(async move {
            loop {
                max.fetch_max(status_kb("VmRSS:"), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        RssSampler { max_kb, task }
    }

    fn stop(self) -> u64 {
        self.task.abort();
        self.max_kb.load(Ordering::Relaxed)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bidirectional_300mb_through_bridge_with_bounded_memory() {
    let _serial = SERIAL.lock().await;
    const TOTAL: u64 = 300 * MB;
    // Peak RSS growth allowed while 300 MB go in and 300 MB come out through two hops. A correct
    // bridge holds at most the windows in flight (2 MB per channel, direction and hop: 8 MB here)
    // plus packet buffers and allocator slack; measured: 11-15 MB. A bridge that buffers instead
    // of applying back-pressure (e.g. an unbounded queue with window granted on receipt) needs
    // around 100 MB for this load and more for a larger one.
    const RSS_BOUND_MB: u64 = 64;

    let bastion = bridge().await;
    let engineer = connect(&bastion).await;
    let channel = engineer.channel_open_session().await.expect("open channel");

    // Warm up (the node connection, the allocator's arenas), then measure from here. Kept below
    // what fills russh's queues, so that unpatched russh fails in the measured transfer.
    echo_through(
        engineer.channel_open_session().await.expect("open channel"),
        MB,
        "warm-up",
    )
    .await;
    let peak_was_reset = reset_peak_rss();
    let baseline_kb = status_kb("VmRSS:");
    let sampler = RssSampler::start();

    let elapsed = echo_through(channel, TOTAL, "300 MB both ways").await;

    let sampled_kb = sampler.stop();
    // VmHWM is exact if it could be reset; otherwise it may still hold an earlier peak, and
    // the sampled maximum is used.
    let peak_kb = if peak_was_reset {
        status_kb("VmHWM:").max(sampled_kb)
    } else {
        sampled_kb
    };
    let growth_mb = peak_kb.saturating_sub(baseline_kb) / 1024;
    let rate = (TOTAL as f64 / MB as f64) / elapsed.as_secs_f64();
    println!(
        "bidirectional: {} MB in and {} MB out concurrently through bastion+node in {:.1?} \
         ({rate:.1} MB/s each way); RSS {} MB before, peak {} MB, growth {growth_mb} MB \
         (VmHWM reset: {peak_was_reset}; sampled VmRSS max {} MB)",
        TOTAL / MB,
        TOTAL / MB,
        elapsed,
        baseline_kb / 1024,
        peak_kb / 1024,
        sampled_kb / 1024,
    );
    assert!(
        growth_mb < RSS_BOUND_MB,
        "peak RSS grew by {growth_mb} MB (bound {RSS_BOUND_MB} MB) while relaying"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stalled_channel_does_not_block_its_neighbour() {
    let _serial = SERIAL.lock().await;
    const LIVE_TOTAL: u64 = 50 * MB;
    // What the stalled channel's writer may get into the pipeline before back-pressure stops it:
    // windows of 2 MB on each of the two hops in each direction, the queues behind them, and
    // the messages the pumps hold.
    const STALLED_BOUND_MB: u64 = 32;

    let bastion = bridge().await;
    let engineer = connect(&bastion).await;
    let stalled = engineer.channel_open_session().await.expect("open channel");
    let live = engineer.channel_open_session().await.expect("open channel");

    // The stalled channel: its echo is never read (the read half is kept, not dropped), while a
    // writer keeps pushing into it until back-pressure stops it.
    let (stalled_rx, stalled_tx) = stalled.split();
    let stalled_sent = Arc::new(AtomicU64::new(0));
    let stalled_writer = tokio::spawn(write_pattern(stalled_tx, 1024 * MB, stalled_sent.clone()));
    // Let the stalled channel fill every window and queue on its path.
    let mut last = u64::MAX;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = stalled_sent.load(Ordering::Relaxed);
        if now == last {
            break;
        }
        last = now;
    }
    let stalled_before = stalled_sent.load(Ordering::Relaxed);

    let elapsed = echo_through(live, LIVE_TOTAL, "live channel next to a stalled one").await;

    let stalled_after = stalled_sent.load(Ordering::Relaxed);
    let rate = (LIVE_TOTAL as f64 / MB as f64) / elapsed.as_secs_f64();
    println!(
        "stalled neighbour: {} MB echoed on the live channel in {:.1?} ({rate:.1} MB/s each way); \
         the stalled channel's writer got {:.1} MB in before the live transfer and {:.1} MB after",
        LIVE_TOTAL / MB,
        elapsed,
        stalled_before as f64 / MB as f64,
        stalled_after as f64 / MB as f64,
    );
    assert!(
        stalled_after < STALLED_BOUND_MB * MB,
        "the stalled channel's writer was not held back: {} MB accepted",
        stalled_after / MB
    );
    assert!(
        !stalled_writer.is_finished(),
        "the stalled writer should still be waiting"
    );
    drop(stalled_rx);
}

/// How long a closed channel's queue may take to end: a failure guard (a CLOSE that is never
/// answered leaves the queue open for ever), not a timing assertion.
const CLOSE_GUARD: Duration = Duration::from_secs(30);

/// Reads a channel's queue to its end (the session dropped its sending half).
async fn queue_ends(mut rx: ChannelReadHalf) -> bool {
    tokio::time::timeout(CLOSE_GUARD, async { while rx.wait().await.is_some() {} })
        .await
        .is_ok()
}

/// A server that closes every session channel first, then reports whether the channel's queue
/// ended once the client answered.
#[derive(Clone)]
struct ClosesFirst(tokio::sync::mpsc::UnboundedSender<bool>);

impl server::Handler for ClosesFirst {
    type Error = russh::Error;

    async fn auth_none(&mut self, _: &str) -> Result<server::Auth, Self::Error> {
        Ok(server::Auth::Accept)
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<server::Msg>,
        reply: server::ChannelOpenHandle,
        _: &mut server::Session,
    ) -> Result<(), Self::Error> {
        reply.accept().await;
        let done = self.0.clone();
        tokio::spawn(async move {
            let (rx, tx) = channel.split();
            let _ = tx.close().await;
            let _ = done.send(queue_ends(rx).await);
        });
        Ok(())
    }
}

/// A channel one side closes first is forgotten by that side's session once the peer answers
/// with its CLOSE: the application's queue ends. As published, russh ignored that answer and
/// kept the channel (its queue and state, ~3 KiB) until the whole connection ended — per
/// channel, in the edge's and the gateway's tunnels, which carry one channel per engineer
/// session for as long as the gateway stays connected. Both directions: the client closes
/// first, then the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_closed_first_ends_when_the_peer_answers() {
    let _serial = SERIAL.lock().await;
    let node = connect(&serve(Node).await).await;
    for _ in 0..3 {
        let channel = node.channel_open_session().await.expect("open channel");
        let (rx, tx) = channel.split();
        tx.close().await.expect("close");
        assert!(
            queue_ends(rx).await,
            "the client kept a channel it closed after the server answered"
        );
    }

    let (done, mut reports) = tokio::sync::mpsc::unbounded_channel();
    let server = connect(&serve(ClosesFirst(done)).await).await;
    for _ in 0..3 {
        let _channel = server.channel_open_session().await.expect("open channel");
        let ended = reports.recv().await.expect("the server's report");
        assert!(
            ended,
            "the server kept a channel it closed after the client answered"
        );
    }
}
