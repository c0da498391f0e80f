//! The spend ledger's statements (see [`crate::spend`]).
//!
//! Overshoot is prevented by the database, not by the caller: a hold is a
//! conditional `UPDATE … WHERE spent + reserved + $tokens <= $cap`, one per
//! scope, in one transaction. On SQLite that transaction holds the write
//! lock from its start (`BEGIN IMMEDIATE`); on PostgreSQL each `UPDATE`
//! takes the row lock and re-checks its condition against the newest row,
//! and scopes are always locked in sorted order, so concurrent holds never
//! deadlock and never both fit into the same remainder.

use sqlx::Row;

use super::SqlStore;
use crate::spend::{ScopeSpend, SpendCap, SpendHold, SpendReservation, from_db, to_db};
use crate::{Result, StoreError};

const ENSURE: &str =
    "INSERT INTO model_spend (scope, spent, reserved, updated_at) VALUES ($1, 0, 0, $2) ON CONFLICT (scope) DO NOTHING";
const HOLD: &str = "UPDATE model_spend SET reserved = reserved + $2, updated_at = $4 \
     WHERE scope = $1 AND spent + reserved + $2 <= $3 RETURNING spent, reserved";
const INSERT_HOLD: &str =
    "INSERT INTO model_spend_holds (id, scope, tokens, holder, created_at) VALUES ($1, $2, $3, $4, $5)";
const GET: &str = "SELECT spent, reserved FROM model_spend WHERE scope = $1";
const TAKE_HOLD: &str = "DELETE FROM model_spend_holds WHERE id = $1 RETURNING scope, tokens";
const TAKE_HOLDS_OF: &str = "DELETE FROM model_spend_holds WHERE holder = $1 RETURNING id, scope, tokens";
const CHARGE: &str = "UPDATE model_spend SET \
     reserved = CASE WHEN reserved > $2 THEN reserved - $2 ELSE 0 END, spent = spent + $3, updated_at = $4 \
     WHERE scope = $1 RETURNING spent, reserved";

type Tx = sqlx::Transaction<'static, sqlx::Any>;

fn spend_of(row: &sqlx::any::AnyRow) -> Result<ScopeSpend> {
    Ok(ScopeSpend { spent: from_db(row.try_get("spent")?), reserved: from_db(row.try_get("reserved")?) })
}

/// Releases `held` tokens of `scope` and charges `charged`.
async fn charge(tx: &mut Tx, scope: &str, held: i64, charged: u64, now_ms: i64) -> Result<ScopeSpend> {
    let row = sqlx::query(CHARGE)
        .bind(scope)
        .bind(held)
        .bind(to_db(charged))
        .bind(now_ms)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or_else(|| StoreError::Corrupt {
            table: "model_spend",
            detail: format!("a hold names no scope {scope:?}"),
        })?;
    spend_of(&row)
}

impl SqlStore {
    pub(super) async fn spend_reserve_in(&self, hold: &SpendHold<'_>, caps: &[SpendCap]) -> Result<SpendReservation> {
        // Sorted, one cap per scope (the lowest), so locks are taken in one order.
        let mut order: Vec<&SpendCap> = caps.iter().collect();
        order.sort_by(|a, b| a.scope.cmp(&b.scope).then(a.cap.cmp(&b.cap)));
        order.dedup_by(|b, a| a.scope == b.scope);
        let tokens = to_db(hold.tokens);
        let mut tx = self.begin_write().await?;
        let mut after = std::collections::HashMap::new();
        for c in order {
            sqlx::query(ENSURE).bind(&c.scope).bind(hold.now_ms).execute(&mut *tx).await?;
            let held = sqlx::query(HOLD)
                .bind(&c.scope)
                .bind(tokens)
                .bind(to_db(c.cap))
                .bind(hold.now_ms)
                .fetch_optional(&mut *tx)
                .await?;
            let Some(row) = held else {
                let row = sqlx::query(GET).bind(&c.scope).fetch_one(&mut *tx).await?;
                let spend = spend_of(&row)?;
                tx.rollback().await?;
                return Ok(SpendReservation::Refused { scope: c.scope.clone(), spend, cap: c.cap });
            };
            sqlx::query(INSERT_HOLD)
                .bind(hold.id)
                .bind(&c.scope)
                .bind(tokens)
                .bind(hold.holder)
                .bind(hold.now_ms)
                .execute(&mut *tx)
                .await?;
            after.insert(c.scope.as_str(), spend_of(&row)?);
        }
        tx.commit().await?;
        Ok(SpendReservation::Held(caps.iter().map(|c| after[c.scope.as_str()]).collect()))
    }

    pub(super) async fn spend_settle_in(
        &self,
        id: &str,
        charged: u64,
        now_ms: i64,
    ) -> Result<Vec<(String, ScopeSpend)>> {
        let mut tx = self.begin_write().await?;
        let mut holds: Vec<(String, i64)> = sqlx::query(TAKE_HOLD)
            .bind(id)
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|r| Ok((r.try_get("scope")?, r.try_get("tokens")?)))
            .collect::<Result<_>>()?;
        holds.sort();
        let mut out = Vec::with_capacity(holds.len());
        for (scope, held) in holds {
            let spend = charge(&mut tx, &scope, held, charged, now_ms).await?;
            out.push((scope, spend));
        }
        tx.commit().await?;
        Ok(out)
    }

    pub(super) async fn spend_settle_abandoned_in(&self, holder: &str, now_ms: i64) -> Result<u64> {
        let mut tx = self.begin_write().await?;
        let mut holds: Vec<(String, String, i64)> = sqlx::query(TAKE_HOLDS_OF)
            .bind(holder)
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|r| Ok((r.try_get("scope")?, r.try_get("id")?, r.try_get("tokens")?)))
            .collect::<Result<_>>()?;
        holds.sort();
        let mut ids = std::collections::HashSet::new();
        for (scope, id, held) in holds {
            // The answer may have been generated in full: charge the hold.
            charge(&mut tx, &scope, held, from_db(held), now_ms).await?;
            ids.insert(id);
        }
        tx.commit().await?;
        Ok(ids.len() as u64)
    }

    pub(super) async fn spend_get(&self, scope: &str) -> Result<ScopeSpend> {
        match sqlx::query(GET).bind(scope).fetch_optional(&self.pool).await? {
            Some(row) => spend_of(&row),
            None => Ok(ScopeSpend::default()),
        }
    }
}
