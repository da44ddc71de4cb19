//! One database as one shard of a power-of-two set (docs/sharding.md).
//!
//! Contract: a configured shard issues ids `sequence * BUCKETS + bucket`,
//! where `bucket = castle.user_hash(user_id) & (BUCKETS - 1)`, so that
//! `id & (partitions - 1)` names a session's shard for every power-of-two
//! count up to BUCKETS and a split never re-encodes an id or a token. It
//! refuses (55000, never 28000) to add or revoke sessions of a user whose
//! bucket it does not own, so a stale router cannot break `max_sessions`.
//! Unconfigured, ids come from the identity as before and nothing is checked.
//!
//! The configuration is castle.shard's one row, which pg_dump keeps. Each
//! backend caches it until a relcache invalidation of that table, which the
//! table's trigger sends on every change. It is read only while the caller
//! holds castle.user_locks in ROW EXCLUSIVE mode (taking that lock processes
//! every invalidation committed before it), and configure_shard takes SHARE
//! ROW EXCLUSIVE, so no sign-in or sign-out straddles a change.

use std::cell::Cell;

use pgrx::pg_sys::{self, Datum, Oid};
use pgrx::prelude::*;
use sha2::{Digest, Sha256};

use crate::catalog::Catalog;
use crate::issue::key_of;
use crate::raw_text::RawText;
use crate::{settings, token};

/// Buckets a user hash is cut into: the most shards a set can have.
pub const BUCKETS: i64 = 1024;

#[derive(Clone, Copy, PartialEq, Eq)]
struct Config {
    partition: i32,
    partitions: i32,
}

#[derive(Clone, Copy)]
struct Cached {
    /// castle.shard, whose invalidation forgets this (InvalidOid: no table)
    table: Oid,
    config: Option<Config>,
}

thread_local! {
    static CACHED: Cell<Option<Cached>> = const { Cell::new(None) };
}

pub fn register_invalidation() {
    unsafe { pg_sys::CacheRegisterRelcacheCallback(Some(invalidated), Datum::from(0)) };
}

#[pg_guard]
unsafe extern "C-unwind" fn invalidated(_arg: Datum, relid: Oid) {
    // With no castle.shard yet (a 0.6.0 catalog), any invalidation may be
    // its creation: forget, and look again at the next sign-in.
    let concerns_us = CACHED.with(Cell::get).is_some_and(|c| {
        relid == pg_sys::InvalidOid || relid == c.table || c.table == pg_sys::InvalidOid
    });
    if concerns_us {
        CACHED.with(|cached| cached.set(None));
    }
}

/// The first four bytes of SHA-256 of the user id's stored bytes, as a
/// big-endian int4: in SQL,
/// `('x' || left(encode(sha256(convert_to(id::text, getdatabaseencoding())), 'hex'), 8))::bit(32)::int4`.
pub fn hash_of(user_id: &[u8]) -> i32 {
    let digest = Sha256::digest(user_id);
    i32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
}

pub fn bucket_of(user_id: &[u8]) -> i64 {
    i64::from(hash_of(user_id)) & (BUCKETS - 1)
}

#[pg_extern(name = "user_hash", immutable, strict, parallel_safe)]
fn user_hash_bigint(user_id: i64) -> i32 {
    hash_of(&key_of(Some(user_id)))
}

#[pg_extern(name = "user_hash", immutable, strict, parallel_safe)]
fn user_hash_uuid(user_id: pgrx::Uuid) -> i32 {
    hash_of(&key_of(Some(user_id)))
}

#[pg_extern(name = "user_hash", immutable, strict, parallel_safe)]
fn user_hash_text(user_id: RawText) -> i32 {
    hash_of(user_id.bytes())
}

/// The session id a token names, from the token alone (NULL when it does not
/// decode under castle.token_prefix): what a router routes by.
#[pg_extern(stable, parallel_safe)]
fn token_session_id(token: Option<RawText>) -> Option<i64> {
    let token = token?;
    settings::with_token_prefix(|prefix| token::id_and_secret(prefix, token.bytes()))
        .map(|(id, _)| id)
}

/// Makes this database partition `partition` of `partitions` (a power of two
/// up to 1024). Waits for every sign-in and sign-out in flight, and moves the
/// id sequence past every id already issued, so ids issued before (without a
/// bucket) stay below every id issued after.
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn configure_shard(partition: Option<i32>, partitions: Option<i32>) {
    let (Some(partition), Some(partitions)) = (partition, partitions) else {
        ereport!(
            ERROR,
            PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
            "partition and partitions must not be NULL"
        );
    };
    let valid_count =
        partitions > 0 && i64::from(partitions) <= BUCKETS && (partitions & (partitions - 1)) == 0;
    if !valid_count || partition < 0 || partition >= partitions {
        ereport!(
            ERROR,
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("no partition {partition} of {partitions}"),
            format!("partitions is a power of two from 1 to {BUCKETS}; partition is 0 to partitions - 1.")
        );
    }
    crate::issue::refuse_on_standby("configure_shard");
    Spi::connect_mut(|client| {
        let run = |client: &mut pgrx::spi::SpiClient<'_>,
                   sql: &str,
                   args: &[pgrx::datum::DatumWithOid]| {
            client
                .update(sql, None, args)
                .unwrap_or_else(|e| error!("castle_sessions: configure_shard: {e}"));
        };
        run(
            client,
            "LOCK TABLE castle.user_locks IN SHARE ROW EXCLUSIVE MODE",
            &[],
        );
        run(client, "DELETE FROM castle.shard", &[]);
        run(
            client,
            "INSERT INTO castle.shard (partition, partitions) VALUES ($1, $2)",
            &[partition.into(), partitions.into()],
        );
        // every id issued so far stays below every id issued from now on
        run(
            client,
            "SELECT pg_catalog.setval(s.seq, GREATEST(pg_catalog.nextval(s.seq), \
                 (SELECT COALESCE(pg_catalog.max(id), 0) FROM castle.sessions) / $1 + 1)) \
               FROM (SELECT pg_catalog.pg_get_serial_sequence('castle.sessions', 'id')::pg_catalog.regclass AS seq) AS s",
            &[BUCKETS.into()],
        );
    });
    crate::events::without_context(|| {
        log!("castle_sessions: this database is now partition {partition} of {partitions}")
    });
}

/// What castle.shard's trigger calls: every backend forgets its cached
/// configuration when the change commits.
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn shard_changed() {
    if let Some(table) = shard_table() {
        unsafe { pg_sys::CacheInvalidateRelcacheByRelid(table) };
    }
}

fn shard_table() -> Option<Oid> {
    Spi::get_one::<Oid>("SELECT pg_catalog.to_regclass('castle.shard')::pg_catalog.oid")
        .unwrap_or_else(|e| error!("castle_sessions: cannot look up castle.shard: {e}"))
}

/// This backend's configuration, read once per change. The caller holds
/// castle.user_locks in ROW EXCLUSIVE mode and runs as the table's owner.
fn config() -> Option<Config> {
    if let Some(cached) = CACHED.with(Cell::get) {
        return cached.config;
    }
    let (table, config) = crate::plans::pinned(|| {
        let table = shard_table();
        (table, table.and_then(|_| unsafe { read_config() }))
    });
    CACHED.with(|cached| {
        cached.set(Some(Cached {
            table: table.unwrap_or(pg_sys::InvalidOid),
            config,
        }))
    });
    config
}

const CONFIG: &std::ffi::CStr = c"SELECT partition, partitions FROM castle.shard";

/// castle.shard's row as of now, not as of the transaction's snapshot: at
/// REPEATABLE READ a snapshot may predate a configure_shard that committed
/// before our lock was granted. SPI is connected by the caller.
unsafe fn read_config() -> Option<Config> {
    unsafe {
        let plan = pg_sys::SPI_prepare(CONFIG.as_ptr(), 0, std::ptr::null_mut());
        if plan.is_null() {
            error!("castle_sessions: could not prepare the read of castle.shard");
        }
        let rc = pg_sys::SPI_execute_snapshot(
            plan,
            std::ptr::null_mut(),
            std::ptr::null(),
            pg_sys::GetLatestSnapshot(),
            std::ptr::null_mut(),
            true,
            false,
            1,
        );
        if rc != pg_sys::SPI_OK_SELECT as i32 {
            error!("castle_sessions: the read of castle.shard failed");
        }
        let config = (pg_sys::SPI_processed == 1).then(|| {
            let table = pg_sys::SPI_tuptable;
            let row = *(*table).vals;
            let mut null = false;
            let partition = pg_sys::SPI_getbinval(row, (*table).tupdesc, 1, &mut null);
            let partitions = pg_sys::SPI_getbinval(row, (*table).tupdesc, 2, &mut null);
            Config {
                partition: partition.value() as i32,
                partitions: partitions.value() as i32,
            }
        });
        pg_sys::SPI_freeplan(plan);
        config
    }
}

/// Refuses, unless this shard owns the user's bucket (or is no shard). The
/// caller holds castle.user_locks in ROW EXCLUSIVE mode.
///
/// A background worker's revocation (a reuse's family) is never refused: a
/// deletion cannot break max_sessions, and during a move the family must
/// still go (the copy on the new shard is revoked at its next reuse).
pub fn refuse_unless_owned(user_id: &[u8]) {
    if unsafe { pg_sys::MyBackendType } == pg_sys::BackendType::B_BG_WORKER {
        return;
    }
    if let Some(config) = config() {
        let bucket = bucket_of(user_id);
        let owner = bucket & i64::from(config.partitions - 1);
        if owner != i64::from(config.partition) {
            ereport!(
                ERROR,
                PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                format!(
                    "castle_sessions: this shard is partition {} of {}; the user's bucket {bucket} belongs to partition {owner}",
                    config.partition, config.partitions
                ),
                "The router's castle_shards server names the wrong database, or the user's sessions are moving to another shard: see docs/sharding.md."
            );
        }
    }
}

/// The bucket a new session of the user carries in its id, after refusing a
/// user this shard does not own; None on a database that is no shard.
pub fn bucket_of_new_session(user_id: &[u8]) -> Option<i64> {
    let user_locks = Catalog::get().user_locks;
    unsafe { pg_sys::LockRelationOid(user_locks, pg_sys::RowExclusiveLock as _) };
    refuse_unless_owned(user_id);
    config().map(|_| bucket_of(user_id))
}
