//! Last use, recorded off the request path.
//!
//! Contract: a request never writes `used_at`. A check that finds a write due
//! (castle.touch_interval) notes the use in its backend (auth.rs); when the
//! transaction commits — never when it or the savepoint the check ran in
//! rolls back — `queue` puts the uses into a table in shared memory and
//! returns: no transaction id, no lock but this table's, no wait, on a
//! primary as in a read-only or REPEATABLE READ transaction. The standing
//! workers (revocations.rs) take each database's uses in batches of at most
//! BATCH and write each batch in a transaction (`write`: row by row through
//! the heap where the catalog allows, else one UPDATE; HOT, never moving
//! used_at back, skipping a row another transaction holds), within about a
//! second of the commit. A batch that emptied the queue is followed by a
//! short nap (revocations.rs, FLUSH_NAP), so steady traffic is written in a
//! few batches a second, not one transaction for every few uses.
//!
//! The table holds one entry per session (a later use of a queued session
//! only moves its time), at most MOST_QUEUED: a use that finds it full is
//! dropped and counted as skipped, as is what a crash or a fast shutdown
//! finds queued. What is lost is the use of the last moments, never a
//! session: the session's next check finds the write still due and queues it
//! again.
//!
//! Without preloading, while the launcher is down, or while the table is half
//! full (no worker keeps up), `standing()` is false and the caller writes at
//! its own commit, as 0.5.0 did (auth.rs). A hot
//! standby cannot write, and has no launcher: its uses are not recorded; a
//! session's use is recorded when it is next checked on the primary.

use pgrx::prelude::*;
use pgrx::{pg_shmem_init, pg_sys, PGRXSharedMemory, PgLwLock};

use crate::plans::{self, Statement, INT8_ARRAY, TIMESTAMPTZ_ARRAY};
use crate::stats::{self, Counter};
use crate::store;

static TOUCH_SESSIONS: Statement = Statement {
    sql: include_str!("queries/touch_sessions.sql"),
    args: &[INT8_ARRAY, TIMESTAMPTZ_ARRAY],
    mutating: true,
};

/// Slots of the table (a power of two): 16,384 × 24 bytes.
const SLOTS: usize = 16_384;
/// Sessions queued at most: open addressing stays fast below 3/4 full.
const MOST_QUEUED: usize = SLOTS / 4 * 3;
/// Uses one UPDATE writes at most.
pub const BATCH: usize = 2_000;

#[derive(Clone, Copy)]
struct Use {
    /// 0: the slot is free
    database: u32,
    session: i64,
    /// the latest use queued (PostgreSQL's microseconds)
    at: i64,
}

const FREE: Use = Use {
    database: 0,
    session: 0,
    at: 0,
};

pub struct Uses {
    slots: [Use; SLOTS],
    queued: usize,
}

// SAFETY: plain values, no pointers: valid in every process that maps it.
unsafe impl PGRXSharedMemory for Uses {}

static USES: PgLwLock<Uses> = unsafe { PgLwLock::new(c"castle_sessions uses") };

/// From revocations::register, when preloaded: its launcher and workers
/// serve this table too.
pub fn register() {
    pg_shmem_init!(
        USES = Uses {
            slots: [FREE; SLOTS],
            queued: 0,
        }
    );
}

/// Whether uses go to the workers: preloaded, on a primary, with a launcher
/// that looked lately and a queue less than half full (a fuller one means
/// no worker keeps up — every slot taken, say — and the caller writes its
/// uses itself rather than see them dropped).
pub fn standing() -> bool {
    crate::revocations::launcher_alive()
        && !unsafe { pg_sys::RecoveryInProgress() }
        && USES.share().queued < MOST_QUEUED / 2
}

fn home(database: u32, session: i64) -> usize {
    let key = (session as u64) ^ (u64::from(database) << 40);
    (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - SLOTS.trailing_zeros())) as usize
}

impl Uses {
    /// Queues one use; false when the table is full.
    fn put(&mut self, database: u32, session: i64, at: i64) -> bool {
        let mut slot = home(database, session);
        loop {
            let entry = &mut self.slots[slot];
            if entry.database == 0 {
                if self.queued >= MOST_QUEUED {
                    return false;
                }
                *entry = Use {
                    database,
                    session,
                    at,
                };
                self.queued += 1;
                return true;
            }
            if entry.database == database && entry.session == session {
                entry.at = entry.at.max(at);
                return true;
            }
            slot = (slot + 1) & (SLOTS - 1);
        }
    }

    /// Empties `hole` and moves back the entries after it that probed past
    /// it, so every entry stays reachable from its home slot.
    fn remove(&mut self, mut hole: usize) {
        let mut next = hole;
        loop {
            next = (next + 1) & (SLOTS - 1);
            let entry = self.slots[next];
            if entry.database == 0 {
                break;
            }
            // the entry may move to the hole if the hole is on its probe path
            let from_home = next.wrapping_sub(home(entry.database, entry.session)) & (SLOTS - 1);
            let from_hole = next.wrapping_sub(hole) & (SLOTS - 1);
            if from_home >= from_hole {
                self.slots[hole] = entry;
                hole = next;
            }
        }
        self.slots[hole] = FREE;
        self.queued -= 1;
    }
}

/// At the caller's commit: queues its uses (session, time). Only memory is
/// touched — this runs after the commit, where nothing may fail.
pub fn queue(uses: &[(i64, i64)]) {
    if !crate::revocations::preloaded() {
        return;
    }
    let dropped = put_all(unsafe { pg_sys::MyDatabaseId }.to_u32(), uses);
    // after the commit: no catalog look-up may claim a counter row here
    stats::add_if_held(Counter::TouchesSkipped, dropped);
}

/// Queues `database`'s uses; returns how many did not fit.
fn put_all(database: u32, uses: &[(i64, i64)]) -> u64 {
    let mut table = USES.exclusive();
    let queued = uses
        .iter()
        .filter(|&&(session, at)| table.put(database, session, at))
        .count();
    (uses.len() - queued) as u64
}

/// The databases with uses queued.
pub fn databases() -> Vec<u32> {
    let table = USES.share();
    let mut databases: Vec<u32> = Vec::new();
    if table.queued == 0 {
        return databases;
    }
    for entry in &table.slots {
        if entry.database != 0 && !databases.contains(&entry.database) {
            databases.push(entry.database);
        }
    }
    databases
}

/// At most BATCH of `database`'s uses, taken out of the table.
pub fn take(database: u32) -> Vec<(i64, i64)> {
    let mut taken = Vec::new();
    let mut table = USES.exclusive();
    let mut slot = 0;
    while slot < SLOTS && taken.len() < BATCH && table.queued > 0 {
        let entry = table.slots[slot];
        if entry.database == database {
            taken.push((entry.session, entry.at));
            // an entry from further on may now sit here: look again
            table.remove(slot);
        } else {
            slot += 1;
        }
    }
    taken
}

/// Writes uses — straight through the heap where the catalog allows
/// (`store::touch_directly`), else with one UPDATE — and returns how many
/// rows it wrote. The rest were revoked, already newer, or held by another
/// transaction.
pub fn write(uses: &[(i64, i64)]) -> u64 {
    plans::as_owner(store::table_owner(), || {
        store::touch_directly(uses).unwrap_or_else(|| write_with_sql(uses))
    })
}

fn write_with_sql(uses: &[(i64, i64)]) -> u64 {
    let ids: Vec<i64> = uses.iter().map(|&(id, _)| id).collect();
    let times: Vec<pgrx::datum::TimestampWithTimeZone> = uses
        .iter()
        .map(|&(_, at)| unsafe {
            pgrx::datum::TimestampWithTimeZone::from_datum(pg_sys::Datum::from(at), false)
                .expect("a timestamp")
        })
        .collect();
    Spi::connect_mut(|client| {
        let touch = plans::kept(client, &TOUCH_SESSIONS);
        let touched = plans::or_raise(client.update(touch, None, &[ids.into(), times.into()]));
        touched.len() as u64
    })
}

/// A worker's batch: written in a transaction of its own and counted; a
/// failure (the extension being updated, say) is logged and the batch
/// dropped. False, with the batch queued again, when castle.sessions cannot
/// be locked at once: the worker takes its write lock before anything else
/// and never waits for it, so it never holds a weaker lock that a DBA's DDL
/// (ALTER EXTENSION … UPDATE) waits for while it waits for that DDL — a
/// deadlock PostgreSQL would end by cancelling the DDL.
pub fn write_in_a_transaction(database: u32, uses: &[(i64, i64)]) -> bool {
    let outcome = pgrx::bgworkers::BackgroundWorker::transaction(|| {
        if !unsafe { lock_sessions_at_once() } {
            return None;
        }
        Some(plans::attempt(|| write(uses)))
    });
    let written = match outcome {
        None => {
            requeue(database, uses);
            return false;
        }
        Some(Ok(written)) => written,
        Some(Err((_, cause))) => {
            crate::events::log_server_only(&format!(
                "{} uses of sessions not recorded: {cause}",
                uses.len()
            ));
            0
        }
    };
    stats::add(Counter::TouchesWritten, written);
    stats::add(Counter::TouchesSkipped, uses.len() as u64 - written);
    true
}

/// castle.sessions in ROW EXCLUSIVE mode, if no one holds a conflicting lock.
pub unsafe fn lock_sessions_at_once() -> bool {
    unsafe {
        let schema = pg_sys::get_namespace_oid(c"castle".as_ptr(), true);
        if schema == pg_sys::InvalidOid {
            return true; // the write reports what is missing
        }
        let table = pg_sys::get_relname_relid(c"sessions".as_ptr(), schema);
        table == pg_sys::InvalidOid
            || pg_sys::ConditionalLockRelationOid(table, pg_sys::RowExclusiveLock as _)
    }
}

/// Puts uses taken out back in the table (those that no longer fit are
/// dropped and counted).
fn requeue(database: u32, uses: &[(i64, i64)]) {
    stats::add(Counter::TouchesSkipped, put_all(database, uses));
}

/// Drops the uses of a database dropped or closed to connections.
pub fn forget(database: u32) {
    let mut table = USES.exclusive();
    let mut slot = 0;
    while slot < SLOTS && table.queued > 0 {
        if table.slots[slot].database == database {
            table.remove(slot);
        } else {
            slot += 1;
        }
    }
}
