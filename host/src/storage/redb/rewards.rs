//! Each tenant's reward catalogue and how many of each reward were redeemed.

use ::redb::{Database, ReadableDatabase, ReadableTable, WriteTransaction};

use super::codec::{decode, encode};
use super::read::require_tenant;
use super::tables::{REWARD_COUNTS, REWARDS, TENANTS};
use crate::storage::{RewardRecord, StoreError};

/// Adds or replaces a reward, as [`Store::put_reward`](crate::storage::Store::put_reward).
pub(super) fn put(
    txn: &WriteTransaction,
    tenant: &str,
    reward: &RewardRecord,
    create: bool,
) -> Result<(), StoreError> {
    require_tenant(&txn.open_table(TENANTS)?, tenant)?;
    let mut table = txn.open_table(REWARDS)?;
    let exists = table.get((tenant, reward.id.as_str()))?.is_some();
    match (create, exists) {
        (true, true) => {
            return Err(StoreError::Conflict(format!(
                "tenant {tenant} has a reward {:?} already",
                reward.id
            )));
        }
        (false, false) => {
            return Err(StoreError::NotFound(format!(
                "tenant {tenant} has no reward {:?}",
                reward.id
            )));
        }
        _ => {}
    }
    let bytes = encode(reward, || {
        format!("reward {} of tenant {tenant}", reward.id)
    })?;
    table.insert((tenant, reward.id.as_str()), bytes.as_slice())?;
    Ok(())
}

/// One reward with its count.
pub(super) fn get(
    db: &Database,
    tenant: &str,
    id: &str,
) -> Result<Option<(RewardRecord, u64)>, StoreError> {
    let txn = db.begin_read()?;
    let table = txn.open_table(REWARDS)?;
    let counts = txn.open_table(REWARD_COUNTS)?;
    let Some(bytes) = table.get((tenant, id))? else {
        return Ok(None);
    };
    let reward: RewardRecord = decode(bytes.value(), || format!("reward {id} of tenant {tenant}"))?;
    let count = counts.get((tenant, id))?.map_or(0, |count| count.value());
    Ok(Some((reward, count)))
}

/// Every reward of a tenant with its count.
pub(super) fn all(db: &Database, tenant: &str) -> Result<Vec<(RewardRecord, u64)>, StoreError> {
    let txn = db.begin_read()?;
    let table = txn.open_table(REWARDS)?;
    let counts = txn.open_table(REWARD_COUNTS)?;
    let mut rewards = Vec::new();
    for row in table.range::<(&str, &str)>((tenant, "")..)? {
        let (key, value) = row?;
        let (owner, id) = key.value();
        if owner != tenant {
            break;
        }
        let reward: RewardRecord =
            decode(value.value(), || format!("reward {id} of tenant {tenant}"))?;
        let count = counts.get((tenant, id))?.map_or(0, |count| count.value());
        rewards.push((reward, count));
    }
    Ok(rewards)
}
