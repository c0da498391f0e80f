//! Budgets as hard limits: hold before forwarding, settle when the answer
//! ends.
//!
//! Checking spend when a request starts is not a limit — forty concurrent
//! streams all see the same unspent budget. So every billed request first
//! *holds* its worst case (estimated input + its output cap) in each scope
//! it counts against: its session and the whole server's UTC day. The check
//! and the hold are one atomic step of a [`SpendLedger`], so together
//! requests in flight can never hold more than a cap allows; the answer's
//! reported usage is charged when it ends (the worst case when the usage is
//! unknown, see [`crate::usage`]).
//!
//! The ledger is a trait the gateway holds: [`StoreLedger`] keeps spend in
//! Kiln's database (it survives restarts and is shared by instances on one
//! PostgreSQL); [`MemoryLedger`] is for tests and embedders without one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
pub use kiln_store::spend::MAX_TOKENS;
pub use kiln_store::{ScopeSpend, SpendCap, SpendReservation};

/// The ledger could not be read or written (the gateway then refuses).
#[derive(Debug, thiserror::Error)]
#[error("the model spend ledger failed: {0}")]
pub struct LedgerError(pub String);

/// Where spend is held and charged, atomically per call.
#[async_trait]
pub trait SpendLedger: Send + Sync {
    /// Holds `tokens` under hold `id` in every scope of `caps`, if each
    /// stays within its cap; otherwise holds nothing.
    async fn reserve(&self, id: &str, tokens: u64, caps: &[SpendCap]) -> Result<SpendReservation, LedgerError>;

    /// Releases hold `id` and charges `charged` to its scopes (once: a
    /// second settle changes nothing). Returns the scopes' spend after.
    async fn settle(&self, id: &str, charged: u64) -> Result<Vec<(String, ScopeSpend)>, LedgerError>;

    /// A scope's spend.
    async fn spend(&self, scope: &str) -> Result<ScopeSpend, LedgerError>;
}

/// The scope of one session's (or pool placeholder's) spend.
pub fn session_scope(owner: &str) -> String {
    format!("session:{owner}")
}

/// The scope of everyone's spend on the UTC day of `unix_secs`
/// (`global:2025-01-31`).
pub fn global_scope(unix_secs: u64) -> String {
    let (y, m, d) = civil_date(unix_secs / 86_400);
    format!("global:{y:04}-{m:02}-{d:02}")
}

/// Year, month, day of a day number since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
fn civil_date(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + u64::from(m <= 2), m, d)
}

/// Spend in this process only (lost on restart).
#[derive(Debug, Default)]
pub struct MemoryLedger {
    inner: Mutex<Memory>,
}

#[derive(Debug, Default)]
struct Memory {
    scopes: HashMap<String, ScopeSpend>,
    holds: HashMap<String, (Vec<String>, u64)>,
}

#[async_trait]
impl SpendLedger for MemoryLedger {
    async fn reserve(&self, id: &str, tokens: u64, caps: &[SpendCap]) -> Result<SpendReservation, LedgerError> {
        let mut m = self.inner.lock().unwrap();
        for c in caps {
            let spend = m.scopes.get(&c.scope).copied().unwrap_or_default();
            if spend.committed().saturating_add(tokens) > c.cap {
                return Ok(SpendReservation::Refused { scope: c.scope.clone(), spend, cap: c.cap });
            }
        }
        let mut scopes: Vec<String> = caps.iter().map(|c| c.scope.clone()).collect();
        scopes.sort();
        scopes.dedup();
        for s in &scopes {
            m.scopes.entry(s.clone()).or_default().reserved += tokens;
        }
        m.holds.insert(id.to_owned(), (scopes, tokens));
        Ok(SpendReservation::Held(caps.iter().map(|c| m.scopes[&c.scope]).collect()))
    }

    async fn settle(&self, id: &str, charged: u64) -> Result<Vec<(String, ScopeSpend)>, LedgerError> {
        let mut m = self.inner.lock().unwrap();
        let Some((scopes, held)) = m.holds.remove(id) else { return Ok(vec![]) };
        let mut out = Vec::new();
        for s in scopes {
            let e = m.scopes.entry(s.clone()).or_default();
            e.reserved = e.reserved.saturating_sub(held);
            e.spent = e.spent.saturating_add(charged);
            out.push((s, *e));
        }
        Ok(out)
    }

    async fn spend(&self, scope: &str) -> Result<ScopeSpend, LedgerError> {
        Ok(self.inner.lock().unwrap().scopes.get(scope).copied().unwrap_or_default())
    }
}

/// Spend in Kiln's database, held under this server instance's name.
pub struct StoreLedger {
    store: Arc<dyn kiln_store::Store>,
    holder: String,
}

impl std::fmt::Debug for StoreLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreLedger").field("kind", &self.store.kind()).field("holder", &self.holder).finish()
    }
}

impl From<kiln_store::StoreError> for LedgerError {
    fn from(e: kiln_store::StoreError) -> LedgerError {
        LedgerError(e.to_string())
    }
}

impl StoreLedger {
    /// `instance` names this server process's holds (a stable name: the
    /// next process of the same instance settles what this one left).
    pub fn new(store: Arc<dyn kiln_store::Store>, instance: &str) -> StoreLedger {
        StoreLedger { store, holder: instance.to_owned() }
    }

    /// Charges in full the holds a previous process of this instance had in
    /// flight when it died (their answers may have been generated in full).
    /// Call once at start-up, before serving. Returns how many there were.
    pub async fn recover(&self) -> Result<u64, LedgerError> {
        self.store.spend_settle_abandoned(&self.holder, kiln_store::now_ms()).await.map_err(LedgerError::from)
    }
}

#[async_trait]
impl SpendLedger for StoreLedger {
    async fn reserve(&self, id: &str, tokens: u64, caps: &[SpendCap]) -> Result<SpendReservation, LedgerError> {
        let hold = kiln_store::SpendHold { id, holder: &self.holder, tokens, now_ms: kiln_store::now_ms() };
        self.store.spend_reserve(&hold, caps).await.map_err(LedgerError::from)
    }

    async fn settle(&self, id: &str, charged: u64) -> Result<Vec<(String, ScopeSpend)>, LedgerError> {
        self.store.spend_settle(id, charged, kiln_store::now_ms()).await.map_err(LedgerError::from)
    }

    async fn spend(&self, scope: &str) -> Result<ScopeSpend, LedgerError> {
        self.store.spend(scope).await.map_err(LedgerError::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn global_scopes_are_utc_days() {
        assert_eq!(global_scope(0), "global:1970-01-01");
        assert_eq!(global_scope(951_782_400), "global:2000-02-29");
        assert_eq!(global_scope(1_738_367_999), "global:2025-01-31");
        assert_eq!(global_scope(1_738_368_000), "global:2025-02-01");
    }

    #[tokio::test]
    async fn the_memory_ledger_holds_all_or_nothing_and_settles_once() {
        let l = MemoryLedger::default();
        let caps = [SpendCap { scope: "s".into(), cap: 100 }, SpendCap { scope: "g".into(), cap: 150 }];
        assert!(matches!(l.reserve("a", 90, &caps).await.unwrap(), SpendReservation::Held(_)));
        let r = l.reserve("b", 20, &caps).await.unwrap();
        assert!(matches!(r, SpendReservation::Refused { ref scope, .. } if scope == "s"), "{r:?}");
        assert_eq!(l.spend("g").await.unwrap(), ScopeSpend { spent: 0, reserved: 90 });
        assert_eq!(l.settle("a", 30).await.unwrap().len(), 2);
        assert!(l.settle("a", 30).await.unwrap().is_empty());
        assert_eq!(l.spend("s").await.unwrap(), ScopeSpend { spent: 30, reserved: 0 });
    }
}
