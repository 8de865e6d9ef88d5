//! The Kubernetes API over HTTPS, against a `shoal-master` process on this machine, with
//! the admin kubeconfig's client certificate, one connection per client:
//!
//! 1. **A mix of verbs at a set write rate**: each client creates a pod, reads it, updates
//!    it, lists its namespace and deletes it, paced so that all together make the asked
//!    writes per second (three of the five calls write); p50 and p99 per verb.
//! 2. **LIST of many pods from the watch cache**: that many pods are created, then clients
//!    (one by default) list them all at `resourceVersion=0` (the cache), one list after
//!    another, and, for comparison, at the latest version (a read of the store).
//! 3. **Many watchers of one write stream**: each watcher has its own connection and watch;
//!    a writer creates pods at the asked rate, each stamped with when its write began, and
//!    every watcher records how long after that it saw the pod.

mod client;
mod watch;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use serde_json::{Value, json};

use client::{Conn, Endpoint};

/// Options of `shoal-bench api`.
#[derive(clap::Args, Clone)]
pub struct Options {
    /// Clients of the mixed run.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Writes per second the mixed run and the watch run make.
    #[arg(long, default_value_t = 1000)]
    writes_per_second: u64,
    /// Seconds the mixed run, the list run and the watch run each last.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Pods the list run lists.
    #[arg(long, default_value_t = 10_000)]
    list_pods: usize,
    /// Clients listing at once in the list run.
    #[arg(long, default_value_t = 1)]
    listers: usize,
    /// Watchers of the watch run.
    #[arg(long, default_value_t = 1000)]
    watchers: usize,
    /// The master binary (by default, the one beside this program).
    #[arg(long)]
    master: Option<PathBuf>,
    /// The store shards the master creates its cluster with [default: the master's own, one
    /// per worker of its store's runtime, at most 8]
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=256))]
    shards: Option<u32>,
    /// The address the master listens on (a loopback one).
    #[arg(long, default_value = "127.0.0.71")]
    address: String,
    /// Where the master keeps its data (on the disk being measured).
    #[arg(long, default_value = "/var/tmp/shoal-bench-api")]
    dir: PathBuf,
    /// Where the numbers are written.
    #[arg(long, default_value = "bench/results/api.json")]
    out: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiBenchError {
    #[error("{0}")]
    Setup(String),
    #[error("client: {0}")]
    Client(String),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

fn setup(what: impl std::fmt::Display) -> ApiBenchError {
    ApiBenchError::Setup(what.to_string())
}

/// Latencies in microseconds, 1 µs to ten minutes, three significant digits.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3)
        .expect("1 µs to 600 s at three significant digits is a valid range")
}

/// The master process, stopped (by its PID) when dropped.
struct Master {
    child: Child,
}

impl Drop for Master {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port(address: &str) -> Result<u16, ApiBenchError> {
    Ok(std::net::TcpListener::bind((address, 0))?
        .local_addr()?
        .port())
}

async fn start_master(options: &Options) -> Result<(Master, Endpoint), ApiBenchError> {
    let binary = match &options.master {
        Some(path) => path.clone(),
        None => std::env::current_exe()?
            .parent()
            .map(|dir| dir.join("shoal-master"))
            .ok_or_else(|| setup("this program has no directory"))?,
    };
    // An earlier run's data is removed, its blocks discarded, before this run starts.
    crate::clear_dir(&options.dir)?;
    std::fs::create_dir_all(&options.dir)?;
    let log = std::fs::File::create(options.dir.join("master.log"))?;
    let mut command = Command::new(&binary);
    if let Some(shards) = options.shards {
        command.args(["--shards", &shards.to_string()]);
    }
    let child = command
        .args([
            "--data-dir",
            &options.dir.join("master").display().to_string(),
        ])
        .args(["--address", &options.address])
        .args(["--api-port", &free_port(&options.address)?.to_string()])
        .args(["--quic-port", &free_port(&options.address)?.to_string()])
        .args(["--name", "bench"])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| setup(format!("starting {}: {e}", binary.display())))?;
    let master = Master { child };
    let kubeconfig = options.dir.join("master/admin.kubeconfig");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if kubeconfig.exists()
            && let Ok(endpoint) = Endpoint::from_kubeconfig(&kubeconfig)
            && let Ok(mut conn) = endpoint.connect().await
            && let Ok((200, _)) = conn.call("GET", "/readyz", "", Vec::new()).await
        {
            return Ok((master, endpoint));
        }
        if Instant::now() > deadline {
            return Err(setup(format!(
                "the master did not serve within 60 s (see {})",
                options.dir.join("master.log").display()
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn pod(namespace: &str, name: &str, labels: Value, sent_us: u64) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels,
            "annotations": {"bench/sent": sent_us.to_string()},
        },
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }))
    .unwrap_or_default()
}

async fn create_namespace(endpoint: &Endpoint, name: &str) -> Result<(), ApiBenchError> {
    let mut conn = endpoint.connect().await?;
    let body = serde_json::to_vec(&json!({"metadata": {"name": name}})).unwrap_or_default();
    match conn
        .call("POST", "/api/v1/namespaces", "application/json", body)
        .await?
    {
        (201 | 409, _) => Ok(()),
        (code, body) => Err(setup(format!(
            "creating namespace {name}: {code} {}",
            String::from_utf8_lossy(&body)
        ))),
    }
}

/// Creates a pod from `body` in the collection `pods`.
async fn create_pod(conn: &mut Conn, pods: &str, body: Vec<u8>) -> Result<(), ApiBenchError> {
    match conn.call("POST", pods, "application/json", body).await? {
        (201, _) => Ok(()),
        (code, body) => Err(setup(format!(
            "creating a pod: {code} {}",
            String::from_utf8_lossy(&body)
        ))),
    }
}

/// The verbs of the mixed run.
const VERBS: [&str; 5] = ["create", "get", "update", "list", "delete"];

#[derive(Serialize)]
struct VerbRow {
    verb: String,
    calls: u64,
    errors: u64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

fn row(verb: &str, hist: &Histogram<u64>, errors: u64) -> VerbRow {
    VerbRow {
        verb: verb.into(),
        calls: hist.len(),
        errors,
        p50_ms: ms(hist.value_at_quantile(0.50)),
        p99_ms: ms(hist.value_at_quantile(0.99)),
        max_ms: ms(hist.max()),
    }
}

#[derive(Serialize)]
struct MixResult {
    clients: usize,
    asked_writes_per_s: u64,
    writes_per_s: f64,
    verbs: Vec<VerbRow>,
}

/// How long clients are given to connect before their paced loops start.
const CONNECTING: Duration = Duration::from_millis(500);

/// The ticks of the `i`-th of `n` clients that together make one call every `period / n`:
/// every `period`, starting `i / n` of a period after `start`, so that the clients' calls
/// come as an even stream rather than all at once. A tick that is missed is taken late.
fn spread_ticks(start: Instant, period: Duration, i: usize, n: usize) -> tokio::time::Interval {
    let first = tokio::time::Instant::from_std(start) + period.mul_f64(i as f64 / n as f64);
    let mut tick = tokio::time::interval_at(first, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick
}

/// One client of the mixed run: its loops, paced to `period` each, until `end`.
async fn mix_client(
    endpoint: Endpoint,
    c: usize,
    mut tick: tokio::time::Interval,
    end: Instant,
    bar: ProgressBar,
) -> Result<([Histogram<u64>; 5], [u64; 5]), ApiBenchError> {
    let mut conn = endpoint.connect().await?;
    let mut hists = [(); 5].map(|()| histogram());
    let mut errors = [0u64; 5];
    let pods = "/api/v1/namespaces/bench-mix/pods";
    let mut n = 0u64;
    while Instant::now() < end {
        tick.tick().await;
        let name = format!("c{c}-{n}");
        n += 1;
        let mut timed = async |verb: usize, method: &str, path: &str, body: Vec<u8>, want: u16| {
            let content_type = if method == "PUT" || method == "POST" {
                "application/json"
            } else {
                ""
            };
            let t = Instant::now();
            match conn.call(method, path, content_type, body).await {
                Ok((code, body)) if code == want => {
                    let _ = hists[verb].record(t.elapsed().as_micros() as u64);
                    Some(body)
                }
                _ => {
                    errors[verb] += 1;
                    None
                }
            }
        };
        let labels = json!({"client": c.to_string()});
        let Some(created) = timed(0, "POST", pods, pod("bench-mix", &name, labels, 0), 201).await
        else {
            continue;
        };
        let one = format!("{pods}/{name}");
        timed(1, "GET", &one, Vec::new(), 200).await;
        let mut object: Value = serde_json::from_slice(&created).unwrap_or_default();
        object["metadata"]["labels"]["round"] = json!(n.to_string());
        let body = serde_json::to_vec(&object).unwrap_or_default();
        timed(2, "PUT", &one, body, 200).await;
        let list = format!("{pods}?labelSelector=client%3D{c}");
        timed(3, "GET", &list, Vec::new(), 200).await;
        timed(4, "DELETE", &one, Vec::new(), 200).await;
        bar.inc(3);
    }
    Ok((hists, errors))
}

async fn mix(
    endpoint: &Endpoint,
    options: &Options,
    bar: &ProgressBar,
) -> Result<MixResult, ApiBenchError> {
    create_namespace(endpoint, "bench-mix").await?;
    // Three writes a loop: each client loops writes/3/clients times a second.
    let loops_per_s = (options.writes_per_second as f64 / 3.0).max(1.0);
    let period = Duration::from_secs_f64(options.clients as f64 / loops_per_s);
    // The clients connect first; then each one's loops start between the others'.
    let started = Instant::now() + CONNECTING;
    let end = started + Duration::from_secs(options.seconds);
    let clients = options.clients;
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let tick = spread_ticks(started, period, c, clients);
            tokio::spawn(mix_client(endpoint.clone(), c, tick, end, bar.clone()))
        })
        .collect();
    let mut hists = [(); 5].map(|()| histogram());
    let mut errors = [0u64; 5];
    for task in tasks {
        let (h, e) = task.await.map_err(setup)??;
        for v in 0..5 {
            let _ = hists[v].add(&h[v]);
            errors[v] += e[v];
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let writes = hists[0].len() + hists[2].len() + hists[4].len();
    Ok(MixResult {
        clients: options.clients,
        asked_writes_per_s: options.writes_per_second,
        writes_per_s: writes as f64 / elapsed,
        verbs: VERBS
            .iter()
            .enumerate()
            .map(|(v, verb)| row(verb, &hists[v], errors[v]))
            .collect(),
    })
}

#[derive(Serialize)]
struct ListResult {
    pods: usize,
    created_per_s: f64,
    response_bytes: usize,
    from_cache: VerbRow,
    from_store: VerbRow,
}

/// Lists `path` over one connection per client until `end`.
async fn list_loop(
    endpoint: &Endpoint,
    clients: usize,
    path: &str,
    until: Duration,
    want: usize,
) -> Result<(Histogram<u64>, u64, usize), ApiBenchError> {
    let end = Instant::now() + until;
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let endpoint = endpoint.clone();
            let path = path.to_owned();
            tokio::spawn(async move {
                let mut conn = endpoint.connect().await?;
                let (mut hist, mut errors, mut bytes) = (histogram(), 0u64, 0usize);
                while Instant::now() < end {
                    let t = Instant::now();
                    let (code, body) = conn.call("GET", &path, "", Vec::new()).await?;
                    let took = t.elapsed().as_micros() as u64;
                    if code == 200 && count_items(&body) == want {
                        let _ = hist.record(took);
                        bytes = body.len();
                    } else {
                        errors += 1;
                    }
                }
                Ok::<_, ApiBenchError>((hist, errors, bytes))
            })
        })
        .collect();
    let (mut all, mut errors, mut bytes) = (histogram(), 0, 0);
    for task in tasks {
        let (h, e, b) = task.await.map_err(setup)??;
        let _ = all.add(&h);
        errors += e;
        bytes = bytes.max(b);
    }
    Ok((all, errors, bytes))
}

/// How many pods a list body holds (each pod has one `"uid"`), counted without parsing it,
/// so that the client's own decoding does not weigh on the server's numbers.
fn count_items(body: &[u8]) -> usize {
    memchr::memmem::find_iter(body, b"\"uid\":").count()
}

async fn list(
    endpoint: &Endpoint,
    options: &Options,
    bar: &ProgressBar,
) -> Result<ListResult, ApiBenchError> {
    create_namespace(endpoint, "bench-list").await?;
    let pods = "/api/v1/namespaces/bench-list/pods";
    let next = Arc::new(AtomicU64::new(0));
    let total = options.list_pods as u64;
    let started = Instant::now();
    let creators: Vec<_> = (0..32)
        .map(|_| {
            let endpoint = endpoint.clone();
            let next = next.clone();
            let bar = bar.clone();
            tokio::spawn(async move {
                let mut conn = endpoint.connect().await?;
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= total {
                        return Ok::<_, ApiBenchError>(());
                    }
                    let body = pod("bench-list", &format!("p{n}"), json!({"app": "list"}), 0);
                    create_pod(&mut conn, pods, body).await?;
                    bar.inc(1);
                }
            })
        })
        .collect();
    for c in creators {
        c.await.map_err(setup)??;
    }
    let created_per_s = total as f64 / started.elapsed().as_secs_f64();
    // The cache has every pod once a list at 0 shows them all.
    let mut conn = endpoint.connect().await?;
    let cached = format!("{pods}?resourceVersion=0");
    let deadline = Instant::now() + Duration::from_secs(60);
    while count_items(&conn.call("GET", &cached, "", Vec::new()).await?.1) != options.list_pods {
        if Instant::now() > deadline {
            return Err(setup("the watch cache never showed every pod"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let until = Duration::from_secs(options.seconds);
    let (from_cache, cache_errors, bytes) =
        list_loop(endpoint, options.listers, &cached, until, options.list_pods).await?;
    let (from_store, store_errors, _) =
        list_loop(endpoint, options.listers, pods, until, options.list_pods).await?;
    Ok(ListResult {
        pods: options.list_pods,
        created_per_s,
        response_bytes: bytes,
        from_cache: row("list at 0 (cache)", &from_cache, cache_errors),
        from_store: row("list (store)", &from_store, store_errors),
    })
}

pub async fn run(options: Options) -> Result<(), ApiBenchError> {
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} {pos}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    bar.set_message("starting the master");
    let (master, endpoint) = start_master(&options).await?;
    // What the master settled on (the flag, or its default), as it recorded it.
    let shards_file = options.dir.join("master/store/shards");
    let shards: u32 = std::fs::read_to_string(&shards_file)
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .ok_or_else(|| setup(format!("no shard count in {}", shards_file.display())))?;
    bar.set_message(format!(
        "[1/3] mixed verbs, {} clients: writes",
        options.clients
    ));
    let mixed = mix(&endpoint, &options, &bar).await?;
    bar.set_position(0);
    bar.set_message(format!("[2/3] creating {} pods to list", options.list_pods));
    let listed = list(&endpoint, &options, &bar).await?;
    bar.set_position(0);
    bar.set_message(format!("[3/3] {} watchers: writes", options.watchers));
    let watched = watch::watch(&endpoint, &options, &bar).await?;
    bar.finish_and_clear();
    drop(master);
    crate::clear_dir(&options.dir)?;

    println!(
        "API over HTTPS, one master ({shards} store shard(s)), {} clients asking {} writes/s for {} s: \
         {:.0} writes/s",
        mixed.clients, mixed.asked_writes_per_s, options.seconds, mixed.writes_per_s
    );
    println!(
        "{:<20} {:>8} {:>8} {:>10} {:>10} {:>10}",
        "verb", "calls", "errors", "p50 ms", "p99 ms", "max ms"
    );
    for v in mixed
        .verbs
        .iter()
        .chain([&listed.from_cache, &listed.from_store])
    {
        println!(
            "{:<20} {:>8} {:>8} {:>10.2} {:>10.2} {:>10.2}",
            v.verb, v.calls, v.errors, v.p50_ms, v.p99_ms, v.max_ms
        );
    }
    println!(
        "lists of {} pods ({} bytes each; the pods were created at {:.0}/s by 32 clients)",
        listed.pods, listed.response_bytes, listed.created_per_s
    );
    println!(
        "{} watchers, {} writes at {:.0}/s: {} of {} events delivered ({:.0}/s), lag p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        watched.watchers,
        watched.writes,
        watched.writes_per_s,
        watched.delivered_events,
        watched.expected_events,
        watched.delivered_per_s,
        watched.lag_p50_ms,
        watched.lag_p99_ms,
        watched.lag_max_ms
    );
    let report = json!({
        "benchmark": "api",
        "seconds": options.seconds,
        "shards": shards,
        "mixed": mixed,
        "list": listed,
        "watch": watched,
    });
    crate::write_report(&options.out, &report)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn items_are_counted_from_the_raw_bytes() {
        assert_eq!(
            count_items(br#"{"items":[{"metadata":{"uid":"a"}},{"metadata":{"uid":"b"}}]}"#),
            2
        );
    }

    #[test]
    fn a_path_must_exist_for_a_kubeconfig() {
        assert!(Endpoint::from_kubeconfig(Path::new("/nonexistent/kubeconfig")).is_err());
    }
}
