//! Blame: who held the workers while a request waited for one, and how much of the wait each
//! is charged.
//!
//! Each culprit gets its *overlap* (how long its polls ran during the wait) and its *share*:
//! every instant of the wait is divided equally among the polls running then, so shares add
//! up to the part of the wait during which any culprit ran (the blamed time), never more.
//!
//! A request keeps at most [`MAX_CULPRITS`] culprits, the largest shares: a request that
//! waits thousands of times behind thousands of others (a long stream on a busy server) must
//! not grow a list without end, nor copy it into every report. Its blamed time still counts
//! every wait; the shares of the culprits left out are what it exceeds their sum by.

use std::sync::Arc;

use super::{
    identity::Identity,
    occupancy::{Held, Holder},
};

/// Culprits a request keeps, the largest shares: far more than a header (four), a log line or
/// a reader's attention takes, few enough that merging each wait's culprits stays cheap.
pub const MAX_CULPRITS: usize = 32;
/// Poll intervals kept per culprit, for the timeline only: a culprit's first ones, enough to
/// draw what a lab request shows.
pub const MAX_CULPRIT_POLLS: usize = 64;

/// One culprit of one wait (or, merged, of all a request's waits).
#[derive(Debug, Clone)]
pub struct Culprit {
    pub holder: Holder,
    /// Time its polls overlapped the victim's waits (ns).
    pub overlap: u64,
    /// Its share of the waits (ns): see the module docs.
    pub share: u64,
    /// Its polls during the waits, clipped to them (engine ns).
    pub polls: Vec<(u64, u64)>,
}

impl Culprit {
    /// The culprit request, if it is one.
    pub fn request(&self) -> Option<&Arc<Identity>> {
        match &self.holder {
            Holder::Request(identity) => Some(identity),
            Holder::Task { .. } => None,
        }
    }
}

/// Culprits of one wait from the polls that overlapped it, and the blamed time (the union of
/// their polls, ns).
pub(crate) fn blame(held: Vec<Held>) -> (Vec<Culprit>, u64) {
    let mut culprits: Vec<Culprit> = Vec::new();
    let mut keys = Vec::with_capacity(held.len());
    for poll in &held {
        let i = match culprits.iter().position(|c| c.holder.same_as(&poll.holder)) {
            Some(i) => i,
            None => {
                culprits.push(Culprit {
                    holder: poll.holder.clone(),
                    overlap: 0,
                    share: 0,
                    polls: Vec::new(),
                });
                culprits.len() - 1
            }
        };
        culprits[i].overlap += poll.end.saturating_sub(poll.start);
        culprits[i].polls.push((poll.start, poll.end));
        keys.push(i);
    }
    // Sweep the wait: between consecutive boundaries the same polls run.
    let mut bounds: Vec<u64> = held.iter().flat_map(|p| [p.start, p.end]).collect();
    bounds.sort_unstable();
    bounds.dedup();
    let mut blamed = 0;
    for window in bounds.windows(2) {
        let (a, b) = (window[0], window[1]);
        let running: Vec<usize> = held
            .iter()
            .zip(&keys)
            .filter(|(p, _)| p.start <= a && p.end >= b)
            .map(|(_, &k)| k)
            .collect();
        if running.is_empty() {
            continue;
        }
        let len = b - a;
        blamed += len;
        let n = running.len() as u64;
        // The remainder of the division goes to the first, so that shares add up exactly.
        for (j, k) in running.into_iter().enumerate() {
            culprits[k].share += len / n + if j == 0 { len % n } else { 0 };
        }
    }
    culprits.sort_by_key(|c| std::cmp::Reverse(c.share));
    (culprits, blamed)
}

/// Scales one wait's shares by `part / whole`, for a wait of which only `part` of the `whole`
/// blamed counts (the rest was charged to the request already), so that they never add up to
/// more than what is blamed.
pub(crate) fn scale_shares(culprits: &mut [Culprit], part: u64, whole: u64) {
    for culprit in culprits {
        culprit.share =
            u64::try_from(u128::from(culprit.share) * u128::from(part) / u128::from(whole.max(1)))
                .unwrap_or(culprit.share);
    }
}

/// Adds one wait's culprits to a request's running list, keeping the [`MAX_CULPRITS`] largest
/// shares. Poll intervals are kept (up to [`MAX_CULPRIT_POLLS`] each) only when the request
/// asked for its timeline (`keep_polls`), the one place they are shown.
pub(crate) fn merge(into: &mut Vec<Culprit>, more: Vec<Culprit>, keep_polls: bool) {
    for mut culprit in more {
        if !keep_polls {
            culprit.polls = Vec::new();
        }
        culprit.polls.truncate(MAX_CULPRIT_POLLS);
        match into.iter_mut().find(|c| c.holder.same_as(&culprit.holder)) {
            Some(known) => {
                known.overlap += culprit.overlap;
                known.share += culprit.share;
                let room = MAX_CULPRIT_POLLS.saturating_sub(known.polls.len());
                known.polls.extend(culprit.polls.into_iter().take(room));
            }
            None => into.push(culprit),
        }
    }
    into.sort_by_key(|c| std::cmp::Reverse(c.share));
    into.truncate(MAX_CULPRITS);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A holder of its own (task ids cannot be made outside tokio; requests stand in).
    fn holder() -> Holder {
        Holder::Request(Identity::untraced("/s/M"))
    }

    #[test]
    fn two_workers_held_through_the_wait_share_it_equally() {
        let (a, b) = (holder(), holder());
        let held = vec![
            Held {
                start: 0,
                end: 100,
                holder: a.clone(),
            },
            Held {
                start: 0,
                end: 100,
                holder: b.clone(),
            },
        ];
        let (culprits, blamed) = blame(held);
        assert_eq!(blamed, 100);
        assert_eq!(culprits.len(), 2);
        assert!(culprits.iter().all(|c| c.overlap == 100 && c.share == 50));
    }

    #[test]
    fn shares_add_up_to_the_union_and_merge_by_holder() {
        let (a, b) = (holder(), holder());
        let held = vec![
            Held {
                start: 0,
                end: 60,
                holder: a.clone(),
            },
            Held {
                start: 40,
                end: 100,
                holder: b.clone(),
            },
            Held {
                start: 120,
                end: 150,
                holder: a.clone(),
            },
        ];
        let (culprits, blamed) = blame(held);
        assert_eq!(blamed, 130, "the union of 0..100 and 120..150");
        let total: u64 = culprits.iter().map(|c| c.share).sum();
        assert_eq!(total, blamed);
        let first = culprits.iter().find(|c| c.holder.same_as(&a)).unwrap();
        assert_eq!(first.overlap, 90);
        assert_eq!(first.share, 40 + 10 + 30, "alone, shared half, alone");
        assert_eq!(first.polls.len(), 2);

        let mut all = Vec::new();
        merge(&mut all, culprits.clone(), true);
        merge(&mut all, culprits.clone(), true);
        assert_eq!(all.len(), 2);
        assert_eq!(all.iter().map(|c| c.share).sum::<u64>(), 2 * blamed);
        assert_eq!(all.iter().map(|c| c.polls.len()).sum::<usize>(), 6);

        let mut untimed = Vec::new();
        merge(&mut untimed, culprits, false);
        assert!(
            untimed.iter().all(|c| c.polls.is_empty()),
            "no timeline asked"
        );
    }

    #[test]
    fn shares_add_up_exactly_when_a_window_does_not_divide() {
        let (a, b, c) = (holder(), holder(), holder());
        let held = [a, b, c]
            .into_iter()
            .map(|holder| Held {
                start: 0,
                end: 100,
                holder,
            })
            .collect();
        let (culprits, blamed) = blame(held);
        assert_eq!(blamed, 100);
        assert_eq!(culprits.iter().map(|c| c.share).sum::<u64>(), 100);
    }

    #[test]
    fn scaled_shares_do_not_exceed_the_part_blamed() {
        let (a, b) = (holder(), holder());
        let held = vec![
            Held {
                start: 0,
                end: 100,
                holder: a,
            },
            Held {
                start: 50,
                end: 100,
                holder: b,
            },
        ];
        let (mut culprits, blamed) = blame(held);
        assert_eq!(blamed, 100);
        scale_shares(&mut culprits, 40, blamed);
        let total: u64 = culprits.iter().map(|c| c.share).sum();
        assert!((39..=40).contains(&total), "{total}");
    }

    /// A long stream on a busy server waits behind ever new requests: its list stays bounded
    /// and keeps the largest shares.
    #[test]
    fn a_request_keeps_its_largest_culprits_only() {
        let mut all = Vec::new();
        for i in 0..10 * MAX_CULPRITS as u64 {
            let held = vec![Held {
                start: 0,
                end: 1 + i,
                holder: holder(),
            }];
            merge(&mut all, blame(held).0, true);
        }
        assert_eq!(all.len(), MAX_CULPRITS);
        assert_eq!(all[0].share, 10 * MAX_CULPRITS as u64);
        assert!(all.iter().all(|c| c.share > 9 * MAX_CULPRITS as u64));
    }
}
