//! The tools of the history test: clients that record what they asked and were told, and
//! watchers that record what they saw, all through curl against real masters.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shoal_store::history::{Call, Outcome, Record};

use shoal_tests::wait_for;

use super::masters::Masters;

/// Master `i`'s API, spoken to with curl and the admin certificate: one process per request,
/// so that a request cut short by a kill is simply a request without an answer.
#[derive(Clone)]
pub struct Api {
    base: String,
    creds: (PathBuf, PathBuf, PathBuf),
}

impl Api {
    pub fn of(masters: &Masters, i: usize) -> Api {
        let m = &masters.masters[i];
        let dir = masters.dir.join(format!("creds-{i}"));
        fs::create_dir_all(&dir).expect("creds dir");
        Api {
            base: format!("https://{}:{}", m.address, m.api_port),
            creds: shoal_tests::credentials(&masters.kubeconfig(i), &dir),
        }
    }

    pub fn curl(&self, max_time: &str) -> Command {
        let (ca, cert, key) = &self.creds;
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "-N", "--max-time", max_time])
            .arg("--cacert")
            .arg(ca)
            .arg("--cert")
            .arg(cert)
            .arg("--key")
            .arg(key);
        cmd
    }

    /// One request: the status code and body, or `None` when no answer came.
    pub fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Option<(u16, serde_json::Value)> {
        let mut cmd = self.curl("3");
        cmd.args(["-X", method, "-w", "\n%{http_code}"]);
        if let Some(body) = body {
            cmd.args(["-H", "Content-Type: application/json", "--data-binary"])
                .arg(body.to_string());
        }
        let out = cmd.arg(format!("{}{path}", self.base)).output().ok()?;
        if !out.status.success() {
            return None;
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let (body, code) = text.rsplit_once('\n')?;
        Some((
            code.trim().parse().ok()?,
            serde_json::from_str(body).unwrap_or_default(),
        ))
    }
}

pub const HISTORY_KEYS: usize = 3;
pub const HISTORY_SHARDS: u32 = 4;
pub const CONFIGMAPS: &str = "/api/v1/namespaces/default/configmaps";

/// A tiny deterministic generator, so a run's choices are reproducible from its seed.
pub struct Rng(u64);

impl Rng {
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

pub fn rev_of(object: &serde_json::Value) -> Option<u64> {
    object
        .pointer("/metadata/resourceVersion")?
        .as_str()?
        .parse()
        .ok()
}

pub fn reason_of(status: &serde_json::Value) -> &str {
    status["reason"].as_str().unwrap_or_default()
}

/// One client's operations on the history's keys, recorded with a clock shared by all;
/// `answered` counts the requests that got an answer, so faults can be timed by progress.
pub fn history_client(
    api: Vec<Api>,
    seed: u64,
    ops: usize,
    clock: Instant,
    answered: Arc<AtomicUsize>,
) -> Vec<Record> {
    let now = || clock.elapsed().as_micros() as u64;
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut records = Vec::new();
    for n in 0..ops {
        let key = format!("k{}", rng.below(HISTORY_KEYS as u64));
        let via = &api[rng.below(api.len() as u64) as usize];
        let ask = |method: &str, path: &str, body: Option<&serde_json::Value>| {
            let reply = via.call(method, path, body);
            if reply.is_some() {
                answered.fetch_add(1, Ordering::SeqCst);
            }
            reply
        };
        let value = format!("c{seed}-{n}");
        let object = |rv: Option<u64>| {
            let mut meta = serde_json::json!({"name": key});
            if let Some(rv) = rv {
                meta["resourceVersion"] = serde_json::json!(rv.to_string());
            }
            serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {"v": value}})
        };
        let roll = rng.below(100);
        let began = now();
        let (call, reply) = match roll {
            0..25 => (
                Call::Create {
                    value: value.clone(),
                },
                ask("POST", CONFIGMAPS, Some(&object(None))),
            ),
            25..70 => {
                // Compare-and-swap: read, then write at the version read.
                let read = ask("GET", &format!("{CONFIGMAPS}/{key}"), None);
                let seen = match &read {
                    Some((200, obj)) => rev_of(obj),
                    _ => None,
                };
                let ended = now();
                if let Some((code @ (200 | 404), obj)) = &read {
                    let found = (*code == 200).then(|| {
                        (
                            rev_of(obj).unwrap_or(0),
                            obj["data"]["v"].as_str().unwrap_or_default().to_owned(),
                        )
                    });
                    records.push(Record {
                        key: key.clone(),
                        call: Call::Get,
                        outcome: Outcome::Read(found),
                        began,
                        ended: Some(ended),
                    });
                }
                let Some(rev) = seen else { continue };
                let began = now();
                let reply = if roll < 60 {
                    ask(
                        "PUT",
                        &format!("{CONFIGMAPS}/{key}"),
                        Some(&object(Some(rev))),
                    )
                } else {
                    let options = serde_json::json!({"kind": "DeleteOptions", "apiVersion": "v1", "preconditions": {"resourceVersion": rev.to_string()}});
                    ask("DELETE", &format!("{CONFIGMAPS}/{key}"), Some(&options))
                };
                let call = if roll < 60 {
                    Call::Update {
                        value: value.clone(),
                        expected: Some(rev),
                    }
                } else {
                    Call::Delete {
                        expected: Some(rev),
                    }
                };
                let outcome = write_outcome(&call, reply.as_ref());
                records.push(record(key.clone(), call, outcome, began, now()));
                continue;
            }
            _ => (Call::Get, ask("GET", &format!("{CONFIGMAPS}/{key}"), None)),
        };
        let outcome = match (&call, reply.as_ref()) {
            (Call::Get, Some((200, obj))) => Outcome::Read(Some((
                rev_of(obj).unwrap_or(0),
                obj["data"]["v"].as_str().unwrap_or_default().to_owned(),
            ))),
            (Call::Get, Some((404, _))) => Outcome::Read(None),
            // A read without an answer says nothing.
            (Call::Get, _) => continue,
            _ => write_outcome(&call, reply.as_ref()),
        };
        records.push(record(key, call, outcome, began, now()));
    }
    records
}

/// A finished operation as the checker takes it: one without an answer never ended, since
/// it may take effect at any later point, or never.
pub fn record(key: String, call: Call, outcome: Outcome, began: u64, ended: u64) -> Record {
    let ended = (outcome != Outcome::Unknown).then_some(ended);
    Record {
        key,
        call,
        outcome,
        began,
        ended,
    }
}

pub fn write_outcome(call: &Call, reply: Option<&(u16, serde_json::Value)>) -> Outcome {
    match reply {
        Some((200 | 201, obj)) => match call {
            Call::Delete { .. } => Outcome::Deleted,
            _ => rev_of(obj).map_or(Outcome::Unknown, |rev| Outcome::Written { rev }),
        },
        Some((409, status)) if reason_of(status) == "AlreadyExists" => Outcome::AlreadyExists,
        Some((409, status)) if reason_of(status) == "Conflict" => Outcome::Conflict,
        Some((404, _)) => Outcome::NotFound,
        // 5xx, timeouts, a refused or cut connection: it may or may not have happened.
        _ => Outcome::Unknown,
    }
}

/// The store shard of configmap `name` in `default`.
pub fn shard_of(name: &str) -> usize {
    let key = shoal_core::ObjectKey {
        group: String::new(),
        resource: "configmaps".into(),
        namespace: Some("default".into()),
        name: name.to_owned(),
    }
    .encode();
    shoal_core::shard_for(&key, HISTORY_SHARDS) as usize
}

/// One watch event as a watcher saw it: (name, type, revision, value).
pub type Seen = (String, String, u64, String);

/// When a watcher is done: once it has seen every one of these names added (sentinels
/// written last, one per shard), and no later than the deadline.
pub type Until = Arc<Mutex<Option<(Vec<String>, Instant)>>>;

/// Watches the configmaps through one master from `position` (a composite version), in
/// short watches each resumed where the last ended, until `until` says it is done; returns
/// every event.
pub fn history_watcher(
    api: Api,
    mut position: Vec<u64>,
    until: Until,
) -> Result<Vec<Seen>, String> {
    use std::io::BufRead;
    let mut seen: Vec<Seen> = Vec::new();
    loop {
        let done = until.lock().map(|t| t.clone()).unwrap_or_default();
        if let Some((names, deadline)) = done {
            if names.iter().all(|n| {
                seen.iter()
                    .any(|(name, kind, _, _)| name == n && kind == "ADDED")
            }) {
                return Ok(seen);
            }
            if Instant::now() > deadline {
                return Err(format!("{} never caught up: at {position:?}", api.base));
            }
        }
        let version: Vec<String> = position.iter().map(u64::to_string).collect();
        let url = format!(
            "{}{CONFIGMAPS}?watch=1&timeoutSeconds=2&resourceVersion={}",
            api.base,
            version.join(".")
        );
        let mut child = api
            .curl("4")
            .arg(url)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| e.to_string())?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            let kind = event["type"].as_str().unwrap_or_default().to_owned();
            if kind == "ERROR" {
                let _ = child.kill();
                // A master that has not reached the position yet (restarted and catching
                // up, or cut off) says so with a 504, as Kubernetes does; like a master that
                // cannot be reached, it is asked again from the same position. Anything
                // else (a 410 above all: events lost) fails the test.
                if event.pointer("/object/details/causes/0/reason")
                    == Some(&serde_json::json!("ResourceVersionTooLarge"))
                {
                    break;
                }
                return Err(format!("{}: watch error {event}", api.base));
            }
            let object = &event["object"];
            let name = object
                .pointer("/metadata/name")
                .and_then(|n| n.as_str())
                .unwrap_or_default()
                .to_owned();
            // A watch event's version is the stream's position after it (every shard's
            // revision); the object's own revision is its shard's part.
            let version: Vec<u64> = object
                .pointer("/metadata/resourceVersion")
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .split('.')
                .map(|r| r.parse().unwrap_or(0))
                .collect();
            if version.len() != position.len() {
                let _ = child.kill();
                return Err(format!("an event without a stream position: {event}"));
            }
            if version.iter().zip(&position).any(|(v, p)| v < p) {
                let _ = child.kill();
                return Err(format!(
                    "{}: went back from {position:?}: {event}",
                    api.base
                ));
            }
            let rev = version[shard_of(&name)];
            position = version;
            let value = object["data"]["v"].as_str().unwrap_or_default().to_owned();
            seen.push((name, kind, rev, value));
        }
        let _ = child.wait();
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The composite version of a list of the configmaps through `api`.
pub fn list_version(api: &Api) -> (Vec<u64>, serde_json::Value) {
    let (_, list) = wait_for("a list of configmaps", Duration::from_secs(10), || {
        api.call("GET", CONFIGMAPS, None)
            .filter(|(code, _)| *code == 200)
    });
    let version = list["metadata"]["resourceVersion"]
        .as_str()
        .expect("a list version")
        .split('.')
        .map(|r| r.parse().expect("a revision"))
        .collect();
    (version, list)
}

/// One more read of every key through every master, once all is healed: the checker holds
/// them to the same order, so every acknowledged write must be there.
pub fn final_reads(api: &[Api], clock: Instant) -> Vec<Record> {
    let mut reads = Vec::new();
    for k in 0..HISTORY_KEYS {
        for a in api {
            let key = format!("k{k}");
            let began = clock.elapsed().as_micros() as u64;
            let (code, obj) = wait_for("a final read", Duration::from_secs(15), || {
                a.call("GET", &format!("{CONFIGMAPS}/{key}"), None)
                    .filter(|(code, _)| matches!(code, 200 | 404))
            });
            let found = (code == 200).then(|| {
                (
                    rev_of(&obj).unwrap_or(0),
                    obj["data"]["v"].as_str().unwrap_or_default().to_owned(),
                )
            });
            reads.push(record(
                key,
                Call::Get,
                Outcome::Read(found),
                began,
                clock.elapsed().as_micros() as u64,
            ));
        }
    }
    reads
}

/// Writes a sentinel configmap in every shard, after everything else: a watcher that has
/// seen them has seen everything before them. Returns their names.
pub fn write_sentinels(api: &Api) -> Vec<String> {
    (0..HISTORY_SHARDS as usize)
        .map(|shard| {
            let name = (0..)
                .map(|n| format!("end-{n}"))
                .find(|name| shard_of(name) == shard)
                .unwrap_or_default();
            let body = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"v": "end"}});
            wait_for("a sentinel", Duration::from_secs(10), || {
                api.call("POST", CONFIGMAPS, Some(&body))
                    .filter(|(code, _)| *code == 201)
            });
            name
        })
        .collect()
}

/// Checks what the watchers saw against the history and the final list: each key's changes
/// in order and once each, every acknowledged write among them, a replay equal to the
/// final list, and the same changes, key by key, on every watcher (shards interleave in any
/// order).
pub fn check_streams(streams: &[Vec<Seen>], history: &[Record], final_list: &serde_json::Value) {
    let written: Vec<(&str, u64)> = history
        .iter()
        .filter_map(|r| match r.outcome {
            Outcome::Written { rev } => Some((r.key.as_str(), rev)),
            _ => None,
        })
        .collect();
    let final_state: BTreeMap<String, String> = final_list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| {
            Some((
                o.pointer("/metadata/name")?.as_str()?.to_owned(),
                o["data"]["v"].as_str()?.to_owned(),
            ))
        })
        .collect();
    let per_key = |stream: &[Seen]| {
        let mut keys: BTreeMap<String, Vec<Seen>> = BTreeMap::new();
        for seen in stream {
            keys.entry(seen.0.clone()).or_default().push(seen.clone());
        }
        keys
    };
    for (i, stream) in streams.iter().enumerate() {
        let mut last: HashMap<&str, u64> = HashMap::new();
        let mut state: BTreeMap<String, String> = BTreeMap::new();
        for (name, kind, rev, value) in stream {
            if let Some(prev) = last.insert(name, *rev) {
                assert!(*rev > prev, "watcher {i}: {name} went from {prev} to {rev}");
            }
            let present = match kind.as_str() {
                "ADDED" => state.insert(name.clone(), value.clone()).is_none(),
                "MODIFIED" => state.insert(name.clone(), value.clone()).is_some(),
                "DELETED" => state.remove(name).is_some(),
                other => panic!("watcher {i}: an event of type {other}"),
            };
            assert!(
                present,
                "watcher {i}: {kind} of {name} at {rev} does not follow"
            );
        }
        for (key, rev) in &written {
            assert!(
                stream.iter().any(|(n, _, r, _)| n == key && r == rev),
                "watcher {i} missed {key} at {rev}"
            );
        }
        assert_eq!(
            state, final_state,
            "watcher {i}'s replay differs from the final list"
        );
        assert_eq!(
            per_key(stream),
            per_key(&streams[0]),
            "watchers 0 and {i} saw different changes"
        );
    }
}
