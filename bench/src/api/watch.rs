//! The watch run: many watchers of one namespace, each receiving every event of a stream of
//! creates at a set rate; the lag from a pod's creation stamp to each watcher's receipt.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use indicatif::ProgressBar;
use serde::Serialize;
use serde_json::{Value, json};

use super::client::{Conn, Endpoint};
use super::{
    ApiBenchError, CONNECTING, Options, create_namespace, create_pod, histogram, ms, pod, setup,
    spread_ticks,
};

#[derive(Serialize)]
pub(super) struct WatchResult {
    pub(super) watchers: usize,
    pub(super) asked_writes_per_s: u64,
    pub(super) writes: u64,
    pub(super) writes_per_s: f64,
    /// Events every watcher should have seen, and the events seen.
    pub(super) expected_events: u64,
    pub(super) delivered_events: u64,
    pub(super) delivered_per_s: f64,
    pub(super) lag_p50_ms: f64,
    pub(super) lag_p99_ms: f64,
    pub(super) lag_max_ms: f64,
}

/// The `bench/sent` stamp of a watch line, read without parsing the line.
fn sent_stamp(line: &[u8]) -> Option<u64> {
    let needle = b"\"bench/sent\":\"";
    let at = memchr::memmem::find(line, needle)? + needle.len();
    let digits = line[at..].iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&line[at..at + digits])
        .ok()?
        .parse()
        .ok()
}

pub(super) async fn watch(
    endpoint: &Endpoint,
    options: &Options,
    bar: &ProgressBar,
) -> Result<WatchResult, ApiBenchError> {
    create_namespace(endpoint, "bench-watch").await?;
    let pods = "/api/v1/namespaces/bench-watch/pods";
    let (code, body) = endpoint
        .connect()
        .await?
        .call("GET", &format!("{pods}?resourceVersion=0"), "", Vec::new())
        .await?;
    if code != 200 {
        return Err(setup(format!("listing: {code}")));
    }
    let version: Value = serde_json::from_slice(&body).map_err(setup)?;
    let version = version["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let epoch = Instant::now();
    let writes = options.writes_per_second * options.seconds;
    let watch_for = Duration::from_secs(options.seconds + 30);
    let path = format!(
        "{pods}?watch=true&resourceVersion={version}&timeoutSeconds={}",
        watch_for.as_secs()
    );
    let mut watchers = Vec::with_capacity(options.watchers);
    let ready = Arc::new(tokio::sync::Barrier::new(options.watchers + 1));
    for _ in 0..options.watchers {
        let endpoint = endpoint.clone();
        let path = path.clone();
        let ready = ready.clone();
        watchers.push(tokio::spawn(async move {
            let conn: Result<Conn, ApiBenchError> = endpoint.connect().await;
            let body = match conn {
                Ok(mut conn) => conn.stream(&path).await.map(|b| (b, conn)),
                Err(e) => Err(e),
            };
            ready.wait().await;
            let (mut body, _conn) = body.map_err(|e| e.to_string())?;
            let (mut hist, mut seen) = (histogram(), 0u64);
            let mut pending: Vec<u8> = Vec::new();
            while seen < writes {
                let Some(frame) = body.frame().await else {
                    break;
                };
                let Ok(data) = frame.map_err(|e| e.to_string())?.into_data() else {
                    continue;
                };
                pending.extend_from_slice(&data);
                let now = epoch.elapsed().as_micros() as u64;
                let mut start = 0;
                while let Some(end) = memchr::memchr(b'\n', &pending[start..]) {
                    if let Some(sent) = sent_stamp(&pending[start..start + end]) {
                        let _ = hist.record(now.saturating_sub(sent).max(1));
                        seen += 1;
                    }
                    start += end + 1;
                }
                pending.drain(..start);
            }
            Ok::<_, String>((hist, seen))
        }));
    }
    ready.wait().await;
    // The writers: enough connections that the asked rate holds while each write waits up
    // to 64 ms (under a thousand busy watchers a create waits tens of milliseconds for its
    // turn, and sixteen writers held the stream to about half of 1,000 writes/s).
    let writers = (options.writes_per_second * 64 / 1000).max(16) as usize;
    let next = Arc::new(AtomicU64::new(0));
    // The writers connect first; then each one's ticks fall between the others'.
    let started = Instant::now() + CONNECTING;
    let period = Duration::from_secs_f64(writers as f64 / options.writes_per_second.max(1) as f64);
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let endpoint = endpoint.clone();
            let next = next.clone();
            let bar = bar.clone();
            let mut tick = spread_ticks(started, period, w, writers);
            tokio::spawn(async move {
                let mut conn = endpoint.connect().await?;
                loop {
                    tick.tick().await;
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= writes {
                        return Ok::<_, ApiBenchError>(());
                    }
                    let sent = epoch.elapsed().as_micros() as u64;
                    let body = pod(
                        "bench-watch",
                        &format!("w{n}"),
                        json!({"app": "watch"}),
                        sent,
                    );
                    create_pod(&mut conn, pods, body).await?;
                    bar.inc(1);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.map_err(setup)??;
    }
    let write_time = started.elapsed().as_secs_f64();
    let (mut lag, mut delivered) = (histogram(), 0u64);
    for w in watchers {
        match w.await.map_err(setup)? {
            Ok((h, seen)) => {
                let _ = lag.add(&h);
                delivered += seen;
            }
            Err(why) => tracing::warn!(%why, "a watcher failed"),
        }
    }
    let watch_time = started.elapsed().as_secs_f64();
    Ok(WatchResult {
        watchers: options.watchers,
        asked_writes_per_s: options.writes_per_second,
        writes,
        writes_per_s: writes as f64 / write_time,
        expected_events: writes * options.watchers as u64,
        delivered_events: delivered,
        delivered_per_s: delivered as f64 / watch_time,
        lag_p50_ms: ms(lag.value_at_quantile(0.50)),
        lag_p99_ms: ms(lag.value_at_quantile(0.99)),
        lag_max_ms: ms(lag.max()),
    })
}

#[cfg(test)]
mod tests {
    use super::sent_stamp;

    #[test]
    fn stamps_are_read_from_the_raw_bytes() {
        let line =
            br#"{"type":"ADDED","object":{"metadata":{"annotations":{"bench/sent":"12345"}}}}"#;
        assert_eq!(sent_stamp(line), Some(12345));
        assert_eq!(sent_stamp(b"{}"), None);
    }
}
