//! Fairness between vendors. At most a share of the workers (`ORDER_SYNC_VENDOR_SHARE`,
//! default half, at least one) serves one vendor while another vendor has due work waiting;
//! a vendor alone may use every worker (work-conserving: one vendor loses no throughput).
//!
//! Two places apply it. The dispatcher decides what goes into Redis ([`plan`]): per vendor,
//! no more than its limit minus what it already has queued or in flight, nothing for a vendor
//! whose agent cannot be called now (offline, breaker open), Redis' room shared out evenly.
//! The worker checks again when a task arrives ([`Fairness::try_start`]), because a vendor
//! alone may have filled the queue before another vendor's orders came in: a task of a
//! vendor over its share is handed back and the next task served.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, RwLock},
};

/// Whether the dispatcher may hand a vendor's jobs to the workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Its agent can be called.
    All,
    /// Its breaker lets one probe through.
    One,
    /// Offline, unregistered or breaker open: the jobs wait in Postgres, without attempts.
    None,
}

/// One vendor's work as the dispatcher sees it.
#[derive(Debug, Clone)]
pub struct Demand {
    pub vendor_id: String,
    /// Due and not queued.
    pub ready: i64,
    /// Queued in Redis, not yet claimed.
    pub queued: i64,
    /// Held by a worker.
    pub in_flight: i64,
    pub admit: Admit,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// How many ready jobs of each vendor to queue now (vendors with none left out).
    pub quotas: Vec<(String, i64)>,
    /// Vendors whose agent can be called and that have due work waiting for a worker.
    pub waiting: HashSet<String>,
}

/// Shares `room` (what Redis may still take) between vendors. `share` is how many workers of
/// the whole deployment one vendor may hold while another waits; `depth` how much one vendor
/// may have queued and in flight when it is alone.
pub fn plan(demands: &[Demand], room: i64, share: i64, depth: i64) -> Plan {
    let waiting: HashSet<String> = demands
        .iter()
        .filter(|d| d.admit != Admit::None && d.ready + d.queued > 0)
        .map(|d| d.vendor_id.clone())
        .collect();
    let mut wants: Vec<(usize, i64)> = demands
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let contended = waiting.iter().any(|v| *v != d.vendor_id);
            let limit = match d.admit {
                Admit::None => 0,
                Admit::One => 1,
                // At its share: nothing more queued until a worker frees (what is queued
                // would only be handed back by the workers).
                Admit::All if contended && d.in_flight >= share => 0,
                // Its share in flight and as much again queued, so no worker idles between
                // two dispatch rounds.
                Admit::All if contended => 2 * share,
                Admit::All => depth,
            };
            let allowance = (limit - d.queued - d.in_flight).clamp(0, d.ready);
            (i, allowance)
        })
        .filter(|(_, allowance)| *allowance > 0)
        .collect();
    // Water-filling: the smallest wants are met first, the rest split what remains evenly.
    wants.sort_by_key(|(_, allowance)| *allowance);
    let mut left = room.max(0);
    let mut quotas = Vec::with_capacity(wants.len());
    let count = wants.len() as i64;
    for (k, (i, allowance)) in wants.into_iter().enumerate() {
        let fair = (left + (count - k as i64) - 1) / (count - k as i64);
        let give = allowance.min(fair).min(left);
        if give > 0 {
            quotas.push((demands[i].vendor_id.clone(), give));
            left -= give;
        }
    }
    Plan { quotas, waiting }
}

/// This process's side: how many of its workers each vendor holds, and which vendors the
/// dispatcher last saw waiting.
pub struct Fairness {
    share: usize,
    in_flight: Mutex<HashMap<String, usize>>,
    waiting: RwLock<Arc<HashSet<String>>>,
}

impl Fairness {
    pub fn new(concurrency: usize, share: f64) -> Self {
        Self {
            share: share_of(concurrency, share),
            in_flight: Mutex::default(),
            waiting: RwLock::default(),
        }
    }

    pub fn set_waiting(&self, waiting: HashSet<String>) {
        *self.waiting.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(waiting);
    }

    /// A worker slot for `vendor`, unless it already holds its share of this process's
    /// workers while another vendor waits.
    pub fn try_start(self: &Arc<Self>, vendor: &str) -> Option<VendorSlot> {
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        let held = in_flight.get(vendor).copied().unwrap_or(0);
        if held >= self.share {
            let waiting = self
                .waiting
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            if waiting.iter().any(|v| v != vendor) {
                return None;
            }
        }
        *in_flight.entry(vendor.to_owned()).or_insert(0) += 1;
        Some(VendorSlot {
            fairness: self.clone(),
            vendor: vendor.to_owned(),
        })
    }
}

/// Frees the slot when the attempt ends, however it ends.
pub struct VendorSlot {
    fairness: Arc<Fairness>,
    vendor: String,
}

impl Drop for VendorSlot {
    fn drop(&mut self) {
        let mut in_flight = self
            .fairness
            .in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(held) = in_flight.get_mut(&self.vendor) {
            *held -= 1;
            if *held == 0 {
                in_flight.remove(&self.vendor);
            }
        }
    }
}

/// `workers × share`, rounded down, at least one.
pub fn share_of(workers: usize, share: f64) -> usize {
    ((workers as f64 * share).floor() as usize).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demand(vendor: &str, ready: i64, queued: i64, in_flight: i64, admit: Admit) -> Demand {
        Demand {
            vendor_id: vendor.into(),
            ready,
            queued,
            in_flight,
            admit,
        }
    }

    fn quota(plan: &Plan, vendor: &str) -> i64 {
        plan.quotas
            .iter()
            .find(|(v, _)| v == vendor)
            .map_or(0, |(_, n)| *n)
    }

    #[test]
    fn a_vendor_alone_may_use_every_worker() {
        let plan = plan(&[demand("a", 5_000, 0, 0, Admit::All)], 2_000, 10, 400);
        assert_eq!(quota(&plan, "a"), 400);
    }

    #[test]
    fn contended_vendors_are_held_to_their_share() {
        let plan = plan(
            &[
                demand("a", 5_000, 3, 10, Admit::All),
                demand("c", 5_000, 3, 4, Admit::All),
                demand("b", 4, 0, 0, Admit::All),
            ],
            2_000,
            10,
            400,
        );
        assert_eq!(
            quota(&plan, "a"),
            0,
            "a holds its share of 10: nothing more queued"
        );
        assert_eq!(
            quota(&plan, "c"),
            13,
            "share in flight plus as much queued: 20 - 7"
        );
        assert_eq!(quota(&plan, "b"), 4);
        assert_eq!(
            plan.waiting,
            HashSet::from(["a".to_string(), "b".to_string(), "c".to_string()])
        );
    }

    #[test]
    fn vendors_that_cannot_be_called_neither_get_work_nor_hold_others_back() {
        let plan = plan(
            &[
                demand("down", 3_000, 0, 0, Admit::None),
                demand("probe", 50, 0, 0, Admit::One),
                demand("b", 1_000, 0, 0, Admit::All),
            ],
            2_000,
            10,
            400,
        );
        assert_eq!(quota(&plan, "down"), 0);
        assert_eq!(quota(&plan, "probe"), 1, "one probe");
        assert_eq!(
            quota(&plan, "b"),
            20,
            "b is held to twice its share while another waits"
        );
        assert!(!plan.waiting.contains("down"));
    }

    #[test]
    fn room_is_shared_evenly_and_never_exceeded() {
        let demands: Vec<Demand> = (0..3)
            .map(|i| demand(&format!("v{i}"), 1_000, 0, 0, Admit::All))
            .chain([demand("small", 2, 0, 0, Admit::All)])
            .collect();
        let plan = plan(&demands, 302, 1_000, 1_000);
        assert_eq!(quota(&plan, "small"), 2);
        assert_eq!(plan.quotas.iter().map(|(_, n)| n).sum::<i64>(), 302);
        for i in 0..3 {
            assert_eq!(quota(&plan, &format!("v{i}")), 100);
        }
        assert!(super::plan(&demands, 0, 10, 10).quotas.is_empty());
    }

    #[test]
    fn a_process_holds_a_vendor_to_its_share_only_while_another_waits() {
        let fairness = Arc::new(Fairness::new(4, 0.5));
        let a1 = fairness.try_start("a").unwrap();
        let _a2 = fairness.try_start("a").unwrap();
        let a3 = fairness.try_start("a");
        assert!(a3.is_some(), "nobody else waits: work-conserving");
        fairness.set_waiting(HashSet::from(["a".into(), "b".into()]));
        assert!(fairness.try_start("a").is_none(), "b waits: a is at 2 of 4");
        assert!(fairness.try_start("b").is_some());
        drop(a3);
        drop(a1);
        assert!(fairness.try_start("a").is_some(), "a slot came back");
        assert_eq!(share_of(1, 0.5), 1);
        assert_eq!(share_of(5, 0.5), 2);
        assert_eq!(share_of(20, 0.5), 10);
    }
}
