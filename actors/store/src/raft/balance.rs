//! Spreading shard leaderships evenly over the masters: each master looks at the groups it
//! leads and hands one at a time to the voter leading the fewest, once that voter has caught
//! up. A master that returns after an outage gets its share back this way.

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

/// How this master sees every local group now.
pub fn observe(host: &RaftHost) -> Vec<GroupView> {
    host.all()
        .into_iter()
        .map(|(group, replica)| {
            let m = replica.raft().metrics().borrow_watched().clone();
            let membership = m.membership_config.membership();
            let voters = membership.voter_ids().collect();
            let joint = membership.get_joint_config().len() > 1;
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

/// The leadership balancer of one master.
#[derive(Clone)]
pub struct Balancer;

impl Actor for Balancer {
    type Msg = BalancerMsg;
    type State = BalancerArgs;
    type Arguments = BalancerArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<BalancerMsg>,
        args: BalancerArgs,
    ) -> Result<BalancerArgs, ActorProcessingErr> {
        myself.send_interval(args.period, || BalancerMsg::Tick);
        Ok(args)
    }

    async fn handle(
        &self,
        _myself: ActorRef<BalancerMsg>,
        _msg: BalancerMsg,
        state: &mut BalancerArgs,
    ) -> Result<(), ActorProcessingErr> {
        let views = observe(&state.host);
        if let Some((group, target)) = rebalance(state.id, &views)
            && let Some(replica) = state.host.replica(group)
        {
            tracing::info!(
                group,
                to = target,
                "handing shard leadership over to even out the masters"
            );
            replica.raft().trigger().transfer_leader(target).await?;
        }
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
        }
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
            })
            .collect();
        assert_eq!(rebalance(1, &groups), None);
    }
}
