//! Spreading shard leaderships evenly over the masters: each master looks at the groups it
//! leads and hands one at a time to the voter leading the fewest, once that voter has caught
//! up. A master that returns after an outage gets its share back this way.
//!
//! It also finishes membership changes that a leadership change cut short: openraft leaves a
//! group joint when its leader loses the leadership between a change's two steps, and such a
//! group needs a majority of the old voters and of the new ones until it is finished.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use ractor_cluster::RactorMessage;

use super::{NodeId, RaftHost};

/// One group as a master sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupView {
    pub group: u32,
    pub leader: Option<NodeId>,
    pub voters: BTreeSet<NodeId>,
    /// Voters whose log matches the leader's (known on the leader only).
    pub caught_up: BTreeSet<NodeId>,
    /// Whether the group's membership is joint: a change between its two steps, which a
    /// leadership hand-over would cut short (leaving the group joint, and needing both the
    /// old and the new voters' majorities until a later change finishes it).
    pub joint: bool,
    /// The log index of the group's membership entry.
    pub membership_at: Option<u64>,
}

/// The one transfer `me` should make now, if any: a group it leads and the voter to give it
/// to. Only a master holding more than its fair share (groups / voters, rounded up) gives
/// one away, and only to a caught-up voter holding less than its share, and never a group
/// whose membership is being changed.
pub fn rebalance(me: NodeId, groups: &[GroupView]) -> Option<(u32, NodeId)> {
    let voters: BTreeSet<NodeId> = groups
        .iter()
        .flat_map(|g| g.voters.iter().copied())
        .collect();
    if voters.len() < 2 || groups.is_empty() {
        return None;
    }
    let fair = groups.len().div_ceil(voters.len());
    let mut led: BTreeMap<NodeId, usize> = voters.iter().map(|v| (*v, 0)).collect();
    for g in groups {
        if let Some(l) = g.leader {
            *led.entry(l).or_default() += 1;
        }
    }
    if led.get(&me).copied().unwrap_or(0) <= fair {
        return None;
    }
    groups
        .iter()
        .filter(|g| g.leader == Some(me) && !g.joint)
        .filter_map(|g| {
            g.caught_up
                .iter()
                .filter(|v| **v != me && g.voters.contains(v))
                .map(|v| (led.get(v).copied().unwrap_or(0), *v))
                .filter(|(count, _)| *count < fair)
                .min()
                .map(|(count, v)| (count, g.group, v))
        })
        .min()
        .map(|(_, group, target)| (group, target))
}

/// The groups `me` leads that are joint now and were joint at the same membership entry when
/// it last looked (a balancer's period ago): changes a leadership change cut short between
/// their two steps, which nobody else finishes. A change in progress is joint only for the
/// moment between its steps.
pub fn abandoned_joints(me: NodeId, before: &[GroupView], now: &[GroupView]) -> Vec<u32> {
    now.iter()
        .filter(|g| g.joint && g.leader == Some(me))
        .filter(|g| {
            before.iter().any(|b| {
                b.group == g.group
                    && b.joint
                    && b.leader == Some(me)
                    && b.membership_at == g.membership_at
            })
        })
        .map(|g| g.group)
        .collect()
}

/// How this master sees every local group now.
pub fn observe(host: &RaftHost) -> Vec<GroupView> {
    host.all()
        .into_iter()
        .map(|(group, replica)| {
            let m = replica.raft().metrics().borrow_watched().clone();
            let voters = m.membership_config.membership().voter_ids().collect();
            let joint = replica.joint();
            let membership_at = m.membership_config.log_id().as_ref().map(|l| l.index);
            let last = m.last_log_index.unwrap_or(0);
            let caught_up = m
                .replication
                .as_ref()
                .map(|r| {
                    r.iter()
                        .filter(|(_, matched)| {
                            matched.as_ref().is_some_and(|l| l.index + 1 >= last)
                        })
                        .map(|(id, _)| *id)
                        .collect()
                })
                .unwrap_or_default();
            GroupView {
                group,
                leader: m.current_leader,
                voters,
                caught_up,
                joint,
                membership_at,
            }
        })
        .collect()
}

/// Messages of the balancer (local only).
#[derive(RactorMessage)]
pub enum BalancerMsg {
    Tick,
}

/// What the balancer works with.
#[derive(Clone)]
pub struct BalancerArgs {
    pub id: NodeId,
    pub host: RaftHost,
    pub period: Duration,
}

/// How long finishing an abandoned change may take before the balancer tries again.
const FINISH_WITHIN: Duration = Duration::from_secs(10);

/// The balancer's state: its arguments and what it saw at its last look.
pub struct Balancing {
    args: BalancerArgs,
    last: Vec<GroupView>,
}

/// The leadership balancer of one master.
#[derive(Clone)]
pub struct Balancer;

impl Actor for Balancer {
    type Msg = BalancerMsg;
    type State = Balancing;
    type Arguments = BalancerArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<BalancerMsg>,
        args: BalancerArgs,
    ) -> Result<Balancing, ActorProcessingErr> {
        myself.send_interval(args.period, || BalancerMsg::Tick);
        Ok(Balancing {
            args,
            last: Vec::new(),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<BalancerMsg>,
        _msg: BalancerMsg,
        state: &mut Balancing,
    ) -> Result<(), ActorProcessingErr> {
        let views = observe(&state.args.host);
        for group in abandoned_joints(state.args.id, &state.last, &views) {
            let Some(replica) = state.args.host.replica(group) else {
                continue;
            };
            tracing::warn!(
                group,
                "finishing a membership change that a leadership change left joint"
            );
            // On a task of its own: the commit needs a quorum, which the balancer does not
            // wait for.
            tokio::spawn(async move {
                match tokio::time::timeout(FINISH_WITHIN, replica.finish_joint()).await {
                    Ok(Ok(_)) => tracing::info!(group, "the membership change is finished"),
                    Ok(Err(err)) => {
                        tracing::warn!(group, reason = %err, "the membership change is not finished")
                    }
                    Err(_) => tracing::warn!(
                        group,
                        "the membership change was not finished within {FINISH_WITHIN:?}"
                    ),
                }
            });
        }
        if let Some((group, target)) = rebalance(state.args.id, &views)
            && let Some(replica) = state.args.host.replica(group)
        {
            tracing::info!(
                group,
                to = target,
                "handing shard leadership over to even out the masters"
            );
            replica.raft().trigger().transfer_leader(target).await?;
        }
        state.last = views;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(group: u32, leader: u64) -> GroupView {
        GroupView {
            group,
            leader: Some(leader),
            voters: [1, 2, 3].into(),
            caught_up: [1, 2, 3].into(),
            joint: false,
            membership_at: Some(3),
        }
    }

    #[test]
    fn a_change_left_joint_across_two_looks_is_finished_by_its_leader() {
        let before: Vec<_> = (0..4).map(|g| view(g, 1)).collect();
        let mut now = before.clone();
        let mut then = before.clone();
        // Group 0: joint at both looks, at the same entry: abandoned.
        then[0].joint = true;
        now[0].joint = true;
        // Group 1: joint now only: a change between its steps.
        now[1].joint = true;
        // Group 2: joint at both looks, but at different entries: two changes in progress.
        then[2].joint = true;
        now[2].joint = true;
        now[2].membership_at = Some(9);
        // Group 3: joint at both looks, led elsewhere now.
        then[3].joint = true;
        now[3].joint = true;
        now[3].leader = Some(2);
        assert_eq!(abandoned_joints(1, &then, &now), vec![0]);
        assert_eq!(abandoned_joints(2, &then, &now), Vec::<u32>::new());
        assert!(
            abandoned_joints(1, &[], &now).is_empty(),
            "a first look finishes nothing"
        );
    }

    #[test]
    fn a_group_whose_membership_is_changing_is_not_handed_over() {
        let mut groups: Vec<_> = (0..4).map(|g| view(g, 1)).collect();
        for g in &mut groups[..3] {
            g.joint = true;
        }
        assert_eq!(
            rebalance(1, &groups),
            Some((3, 2)),
            "the one group not joint"
        );
        groups[3].joint = true;
        assert_eq!(rebalance(1, &groups), None);
    }

    #[test]
    fn a_master_with_more_than_its_share_gives_one_to_the_least_loaded() {
        // Eight groups over three masters: at most three each.
        let groups: Vec<_> = (0..8).map(|g| view(g, if g < 6 { 1 } else { 2 })).collect();
        assert_eq!(rebalance(1, &groups), Some((0, 3)));
        assert_eq!(rebalance(2, &groups), None);
        assert_eq!(rebalance(3, &groups), None);
    }

    #[test]
    fn an_even_spread_stays() {
        let groups: Vec<_> = (0..8).map(|g| view(g, u64::from(g % 3) + 1)).collect();
        for me in 1..=3 {
            assert_eq!(rebalance(me, &groups), None);
        }
    }

    #[test]
    fn only_caught_up_voters_receive_a_leadership() {
        let mut groups: Vec<_> = (0..4).map(|g| view(g, 1)).collect();
        for g in &mut groups {
            g.caught_up = [1].into();
        }
        assert_eq!(rebalance(1, &groups), None);
        groups[2].caught_up = [1, 2].into();
        assert_eq!(rebalance(1, &groups), Some((2, 2)));
    }

    #[test]
    fn a_single_master_keeps_everything() {
        let groups: Vec<_> = (0..8)
            .map(|g| GroupView {
                group: g,
                leader: Some(1),
                voters: [1].into(),
                caught_up: BTreeSet::new(),
                joint: false,
                membership_at: Some(1),
            })
            .collect();
        assert_eq!(rebalance(1, &groups), None);
    }
}
