//! How many refused payments one payer may have the ledger decide, and so
//! record for good, per window of time.
//!
//! Every refusal of a verified payment is recorded (a replay must get the
//! same refusal), so without a bound one account could make the server
//! store refusals as fast as a connection can send them. The budget counts
//! refusals per payer in fixed windows; a payer over budget gets nothing
//! decided until its window ends. Only payers with verified signatures are
//! ever charged, so the map holds at most one entry per account, and
//! entries of ended windows are pruned as it grows.

use std::collections::HashMap;

use crate::core::name::Name;

/// One payer's count in its current window.
#[derive(Debug, Clone, Copy)]
struct Window {
    start_ms: u64,
    refusals: u32,
}

/// Refusals per payer per window.
#[derive(Debug)]
pub struct RefusalBudget {
    window_ms: u64,
    per_window: u32,
    windows: HashMap<Name, Window>,
    /// Map size after the last prune; the next prune runs at twice that,
    /// so pruning costs O(1) per charge, amortized.
    pruned_at_len: usize,
}

impl RefusalBudget {
    /// A budget of `per_window` refusals per payer per `window_ms`.
    pub fn new(window_ms: u64, per_window: u32) -> RefusalBudget {
        assert!(window_ms > 0, "a refusal window must last");
        RefusalBudget {
            window_ms,
            per_window,
            windows: HashMap::new(),
            pruned_at_len: 0,
        }
    }

    /// `None` when a payment of `payer` may be decided at `now_ms`;
    /// otherwise how long until its window ends, ms.
    pub fn wait_ms(&self, payer: &Name, now_ms: u64) -> Option<u64> {
        let w = self.windows.get(payer)?;
        let end_ms = w.start_ms.saturating_add(self.window_ms);
        (now_ms < end_ms && w.refusals >= self.per_window).then(|| end_ms - now_ms)
    }

    /// Counts one refusal decided for `payer` at `now_ms`.
    pub fn charge(&mut self, payer: &Name, now_ms: u64) {
        let window_ms = self.window_ms;
        let w = self.windows.entry(payer.clone()).or_insert(Window {
            start_ms: now_ms,
            refusals: 0,
        });
        if now_ms >= w.start_ms.saturating_add(window_ms) {
            *w = Window {
                start_ms: now_ms,
                refusals: 0,
            };
        }
        w.refusals = w.refusals.saturating_add(1);
        if self.windows.len() >= self.pruned_at_len.saturating_mul(2).max(64) {
            self.windows
                .retain(|_, w| now_ms < w.start_ms.saturating_add(window_ms));
            self.pruned_at_len = self.windows.len();
        }
    }

    /// Payers with a window on record (for tests and bounds).
    pub fn tracked(&self) -> usize {
        self.windows.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> Name {
        Name::parse(s).expect("name")
    }

    #[test]
    fn a_payer_over_budget_waits_for_the_window_and_others_do_not() {
        let mut budget = RefusalBudget::new(1_000, 3);
        let (alice, bob) = (name("alice"), name("bob"));
        for t in [0, 10, 20] {
            assert_eq!(budget.wait_ms(&alice, t), None);
            budget.charge(&alice, t);
        }
        assert_eq!(budget.wait_ms(&alice, 30), Some(970));
        assert_eq!(budget.wait_ms(&alice, 999), Some(1));
        assert_eq!(budget.wait_ms(&bob, 30), None);
        assert_eq!(budget.wait_ms(&alice, 1_000), None);
        budget.charge(&alice, 1_000);
        assert_eq!(budget.wait_ms(&alice, 1_001), None);
    }

    #[test]
    fn ended_windows_are_pruned_so_memory_follows_active_payers() {
        let mut budget = RefusalBudget::new(100, 1);
        for i in 0..1_000u64 {
            budget.charge(&name(&format!("p{i}")), i * 1_000);
        }
        assert!(budget.tracked() <= 64, "{}", budget.tracked());
    }
}
