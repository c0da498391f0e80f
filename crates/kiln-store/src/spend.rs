//! Model spend, in tokens: the types of the ledger the model gateway keeps
//! in the database, so a budget survives restarts and is shared by every
//! server instance on one PostgreSQL.
//!
//! A *scope* is what a cap applies to (`session:<key>`, `global:<day>`).
//! A request first *holds* tokens in every scope it counts against — all or
//! none, checked against each cap in the same transaction — and *settles*
//! when its answer ends: the hold is released and the usage charged. Holds
//! are rows of their own, named by request and by server instance, so a
//! settle counts once and a dead process's holds can be charged in full
//! when it starts again. Keys and request contents are never stored.

/// Largest token count stored (2^53: exact in a JSON number, and sums of a
/// few never overflow a 64-bit column).
pub const MAX_TOKENS: u64 = 1 << 53;

/// Tokens one scope has used (`spent`) and holds for requests in flight.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScopeSpend {
    pub spent: u64,
    pub reserved: u64,
}

impl ScopeSpend {
    /// Spent and held together: what a new hold must fit next to.
    pub fn committed(&self) -> u64 {
        self.spent.saturating_add(self.reserved)
    }
}

/// A cap a hold must fit under: `spent + reserved + tokens ≤ cap`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpendCap {
    pub scope: String,
    pub cap: u64,
}

/// One request's hold.
#[derive(Debug, Clone, Copy)]
pub struct SpendHold<'a> {
    /// Unique per request (see [`crate::new_id`]).
    pub id: &'a str,
    /// The server instance that holds it (its holds are settled in full by
    /// [`crate::Store::spend_settle_abandoned`] at its next start).
    pub holder: &'a str,
    pub tokens: u64,
    pub now_ms: i64,
}

/// What [`crate::Store::spend_reserve`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpendReservation {
    /// Held in every scope; each scope's spend after the hold, in the order
    /// of the caps given.
    Held(Vec<ScopeSpend>),
    /// Nothing was held: `scope` would have gone over `cap`.
    Refused { scope: String, spend: ScopeSpend, cap: u64 },
}

pub(crate) fn to_db(n: u64) -> i64 {
    n.min(MAX_TOKENS) as i64
}

pub(crate) fn from_db(n: i64) -> u64 {
    n.max(0) as u64
}
