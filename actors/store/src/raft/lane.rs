//! The AppendEntries of every group this master leads, to one other master, travel together:
//! whatever the groups queued while the previous message was in flight goes as one message,
//! and its answer is split among them. Eight groups replicating to the same follower then pay
//! for one round trip (one send, one receive, one wake-up on each side) instead of eight.
//!
//! Each group keeps at most one append in flight to a follower (openraft replicates in order),
//! so a message never holds two appends of the same group and nothing is reordered. A message
//! that has not been answered within [`STALL`] (a follower busy installing a snapshot for one
//! of the groups, a lost link) no longer holds up the next one, which goes beside it.

use std::sync::Arc;
use std::time::Duration;

use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse};
use tokio::sync::{mpsc, oneshot};

use super::net::{Members, RaftRequest, RaftResponse, Wire, call};
use super::{Member, NodeId, ShardRaft};

/// How long a message may go unanswered before the next one is sent beside it.
const STALL: Duration = Duration::from_millis(5);

/// The most appends one message carries.
const MOST: usize = 64;

/// An append waiting for its message.
pub(super) struct Queued {
    pub group: u32,
    pub rpc: AppendEntriesRequest<ShardRaft>,
    pub timeout: Duration,
    pub reply: oneshot::Sender<Result<AppendEntriesResponse<ShardRaft>, String>>,
}

/// Starts the lane to `target` and returns its queue. The lane ends when every sender is
/// gone (the router that owns it was dropped).
pub(super) fn start(
    wire: Arc<dyn Wire>,
    members: Members,
    target: NodeId,
) -> mpsc::UnboundedSender<Queued> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(run(wire, members, target, rx));
    tx
}

async fn run(
    wire: Arc<dyn Wire>,
    members: Members,
    target: NodeId,
    mut rx: mpsc::UnboundedReceiver<Queued>,
) {
    let mut in_flight: Option<tokio::task::JoinHandle<()>> = None;
    while let Some(first) = rx.recv().await {
        // Whatever comes while the previous message is answered joins this one.
        if let Some(previous) = in_flight.as_mut() {
            // Not answered in time: it goes on by itself and this one is sent beside it.
            let _ = tokio::time::timeout(STALL, previous).await;
        }
        let mut batch = vec![first];
        while batch.len() < MOST {
            match rx.try_recv() {
                Ok(queued) => batch.push(queued),
                Err(_) => break,
            }
        }
        // A caller that gave up no longer needs its append sent.
        batch.retain(|q| !q.reply.is_closed());
        if batch.is_empty() {
            continue;
        }
        let Some(member) = members.get(target) else {
            for q in batch {
                let _ = q
                    .reply
                    .send(Err(format!("member {target} has no known address")));
            }
            continue;
        };
        in_flight = Some(tokio::spawn(send(wire.clone(), member, batch)));
    }
}

/// Sends `batch` as one message and hands each append its answer.
async fn send(wire: Arc<dyn Wire>, to: Member, batch: Vec<Queued>) {
    let timeout = batch
        .iter()
        .map(|q| q.timeout)
        .max()
        .unwrap_or(Duration::from_secs(1));
    let mut replies = Vec::with_capacity(batch.len());
    let mut appends = Vec::with_capacity(batch.len());
    for q in batch {
        appends.push((q.group, q.rpc));
        replies.push(q.reply);
    }
    let sent = replies.len();
    let request = RaftRequest::Appends(appends);
    let answers = match call(wire.as_ref(), &to, &request, timeout).await {
        Ok(RaftResponse::Appends(answers)) if answers.len() == sent => Ok(answers),
        Ok(RaftResponse::Appends(answers)) => Err(format!(
            "{} answered {} of {sent} appends",
            to.name,
            answers.len()
        )),
        Ok(_) => Err("a reply of the wrong kind".to_owned()),
        Err(why) => Err(why),
    };
    match answers {
        Ok(answers) => {
            for (reply, answer) in replies.into_iter().zip(answers) {
                let _ = reply.send(answer);
            }
        }
        Err(why) => {
            for reply in replies {
                let _ = reply.send(Err(why.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse};
    use tokio::sync::Semaphore;

    use super::*;
    use crate::raft::{Vote, WireFuture, decode, encode};

    /// A wire that reports the groups of every message it carries, and answers only once the
    /// test lets it (one permit, one answer): even groups succeed, odd ones conflict.
    struct Gated {
        calls: mpsc::UnboundedSender<Vec<u32>>,
        gate: Arc<Semaphore>,
    }

    impl Wire for Gated {
        fn call(&self, _to: &Member, request: Vec<u8>, _timeout: Duration) -> WireFuture {
            let calls = self.calls.clone();
            let gate = self.gate.clone();
            Box::pin(async move {
                let RaftRequest::Appends(appends) =
                    decode("request", &request).map_err(|e| e.to_string())?
                else {
                    return Err("not appends".into());
                };
                let groups: Vec<u32> = appends.iter().map(|(g, _)| *g).collect();
                let _ = calls.send(groups.clone());
                gate.acquire().await.map_err(|e| e.to_string())?.forget();
                let answers = groups
                    .iter()
                    .map(|g| {
                        Ok(if g % 2 == 0 {
                            AppendEntriesResponse::Success
                        } else {
                            AppendEntriesResponse::Conflict
                        })
                    })
                    .collect();
                encode(&RaftResponse::Appends(answers)).map_err(|e| e.to_string())
            })
        }
    }

    type Answer = oneshot::Receiver<Result<AppendEntriesResponse<ShardRaft>, String>>;

    fn queued(group: u32) -> (Queued, Answer) {
        let (reply, answer) = oneshot::channel();
        let rpc = AppendEntriesRequest {
            vote: Vote::new(1, 1),
            prev_log_id: None,
            entries: Vec::new(),
            leader_commit: None,
        };
        let q = Queued {
            group,
            rpc,
            timeout: Duration::from_secs(1),
            reply,
        };
        (q, answer)
    }

    struct Rig {
        lane: mpsc::UnboundedSender<Queued>,
        calls: mpsc::UnboundedReceiver<Vec<u32>>,
        gate: Arc<Semaphore>,
    }

    fn rig() -> Rig {
        let (tx, calls) = mpsc::unbounded_channel();
        let gate = Arc::new(Semaphore::new(0));
        let members = Members::default();
        members.learn(
            2,
            Member {
                name: "m2".into(),
                addr: "test:2".into(),
                api: String::new(),
            },
        );
        let wire = Gated {
            calls: tx,
            gate: gate.clone(),
        };
        let lane = start(Arc::new(wire), members, 2);
        Rig { lane, calls, gate }
    }

    async fn expect_answer(answer: Answer, group: u32) {
        match answer.await.expect("answered").expect("delivered") {
            AppendEntriesResponse::Success => assert_eq!(group % 2, 0, "group {group}"),
            AppendEntriesResponse::Conflict => assert_eq!(group % 2, 1, "group {group}"),
            other => panic!("group {group} got {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn appends_queued_behind_a_message_go_together_and_get_their_own_answers() {
        let mut rig = rig();
        let (q0, a0) = queued(0);
        rig.lane.send(q0).expect("queued");
        assert_eq!(rig.calls.recv().await, Some(vec![0]));
        let mut waiting = Vec::new();
        for group in 1..4 {
            let (q, a) = queued(group);
            rig.lane.send(q).expect("queued");
            waiting.push((group, a));
            // The lane takes each append as it comes (on this one thread, when the test
            // yields), and holds it until the message in flight is answered.
            for _ in 0..4 {
                tokio::task::yield_now().await;
            }
        }
        rig.gate.add_permits(1);
        assert_eq!(rig.calls.recv().await, Some(vec![1, 2, 3]));
        rig.gate.add_permits(1);
        expect_answer(a0, 0).await;
        for (group, a) in waiting {
            expect_answer(a, group).await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_unanswered_message_holds_up_the_next_only_for_a_while() {
        let mut rig = rig();
        let (q0, a0) = queued(0);
        rig.lane.send(q0).expect("queued");
        assert_eq!(rig.calls.recv().await, Some(vec![0]));
        let since = tokio::time::Instant::now();
        let (q1, a1) = queued(1);
        rig.lane.send(q1).expect("queued");
        assert_eq!(rig.calls.recv().await, Some(vec![1]));
        assert!(since.elapsed() >= STALL, "sent after {:?}", since.elapsed());
        rig.gate.add_permits(2);
        expect_answer(a0, 0).await;
        expect_answer(a1, 1).await;
    }

    #[tokio::test(start_paused = true)]
    async fn an_append_whose_caller_gave_up_is_not_sent() {
        let mut rig = rig();
        let (q0, a0) = queued(0);
        rig.lane.send(q0).expect("queued");
        assert_eq!(rig.calls.recv().await, Some(vec![0]));
        let (q1, a1) = queued(1);
        let (q2, a2) = queued(2);
        rig.lane.send(q1).expect("queued");
        rig.lane.send(q2).expect("queued");
        drop(a1);
        rig.gate.add_permits(1);
        assert_eq!(rig.calls.recv().await, Some(vec![2]));
        rig.gate.add_permits(1);
        expect_answer(a0, 0).await;
        expect_answer(a2, 2).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_member_without_an_address_fails_its_appends() {
        let (tx, _calls) = mpsc::unbounded_channel();
        let wire = Gated {
            calls: tx,
            gate: Arc::new(Semaphore::new(0)),
        };
        let lane = start(Arc::new(wire), Members::default(), 7);
        let (q, a) = queued(0);
        lane.send(q).expect("queued");
        let why = a.await.expect("answered").expect_err("no address");
        assert!(why.contains("no known address"), "{why}");
    }
}
