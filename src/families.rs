//! Rotation families. Every session descends from one sign-in, its family
//! (family_id: the first session's id, NULL on that one). castle.rotate
//! keeps the session it replaces, marked rotated_at: for castle.rotate_grace
//! its token stands for the family's newest session, so requests in flight
//! during a rotation succeed, and rotating it again hands back that same
//! successor (its secret is derived, `token::successor_secret`); after the
//! grace the token is a reuse — a copy of it is being replayed — and the
//! whole family is revoked.
//!
//! A family remembers every token it rotated away in the last hour
//! (REMEMBERED_FOR), and always its ROTATED_KEPT newest; older ones are
//! forgotten at the next rotation (then refused as unknown), so a session
//! rotated every few minutes for months keeps a few rows, while a copy
//! rotated away lately stays a reuse however fast the family is refreshed:
//! a family that rotates more than MOST_REMEMBERED times an hour is being
//! flushed, and is revoked.
//!
//! A reuse is always refused, and authenticate refuses by raising, which
//! rolls back the caller's transaction and with it any revocation made
//! there. So the family is revoked in a transaction of its own: queued in
//! shared memory for castle's standing workers when the library is
//! preloaded (`revocations`, whose contract says what that guarantees), else
//! by a worker the call starts. Either way the caller sees the same refusal
//! as for any bad token, and nothing is written, waited for or raised in its
//! transaction.

use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, SignalWakeFlags};
use pgrx::pg_sys;
use pgrx::prelude::*;

use std::cell::RefCell;

use pgrx::spi::SpiClient;

use crate::events;
use crate::plans::{self, Statement, BYTEA, INT4, INT8, TEXT, TIMESTAMPTZ};
use crate::{revocations, settings, store, token};
use rand::RngCore;

static FAMILY_OF_SESSION: Statement = Statement {
    sql: "SELECT COALESCE(s.family_id, s.id), s.user_id FROM castle.sessions AS s WHERE s.id = $1",
    args: &[INT8],
    mutating: true,
};
static USER_OF_FAMILY: Statement = Statement {
    sql: "SELECT s.user_id FROM castle.sessions AS s WHERE s.id = $1 OR s.family_id = $1 LIMIT 1",
    args: &[INT8],
    mutating: true,
};
static DELETE_WHOLE_FAMILY: Statement = Statement {
    sql: include_str!("queries/delete_whole_family.sql"),
    args: &[INT8, TEXT],
    mutating: true,
};

static KEY_OF_MINUTE: Statement = Statement {
    sql: "SELECT k.key FROM castle.rotation_keys AS k WHERE k.epoch = $1",
    args: &[INT8],
    mutating: false,
};
static MAKE_KEY: Statement = Statement {
    sql: "INSERT INTO castle.rotation_keys AS k (epoch, key) VALUES ($1, $2) \
          ON CONFLICT DO NOTHING RETURNING k.key",
    args: &[INT8, BYTEA],
    mutating: true,
};
static FORGET_KEYS: Statement = Statement {
    sql: "DELETE FROM castle.rotation_keys AS k WHERE k.epoch < $1",
    args: &[INT8],
    mutating: true,
};
static NEXT_IN_FAMILY: Statement = Statement {
    sql: include_str!("queries/next_in_family.sql"),
    args: &[INT8, INT8],
    mutating: false,
};

/// A rotation key serves the rotations of one minute (its epoch).
const KEY_EPOCH: i64 = 60_000_000;

fn epoch_of(at: i64) -> i64 {
    at.div_euclid(KEY_EPOCH)
}

/// The key for a rotation at `rotated_at` (PostgreSQL's microseconds): made
/// from the operating system's CSPRNG for a new minute, when `make`. Keys of
/// minutes whose rotations are all past their grace are deleted here: none
/// is kept longer than it is needed.
pub fn rotation_key(client: &mut SpiClient<'_>, rotated_at: i64, make: bool) -> Option<Vec<u8>> {
    let epoch = epoch_of(rotated_at);
    let read = plans::kept(client, &KEY_OF_MINUTE);
    if let Some(key) = first_bytes(client.select(read, Some(1), &[epoch.into()])) {
        return Some(key);
    }
    if !make {
        return None;
    }
    let grace = i64::from(settings::rotate_grace_seconds()) * 1_000_000;
    let forget = plans::kept(client, &FORGET_KEYS);
    let oldest_needed = epoch_of(rotated_at.saturating_sub(grace));
    plans::or_raise(client.update(forget, None, &[oldest_needed.into()]));
    let mut fresh = vec![0u8; 32];
    if rand::rngs::OsRng.try_fill_bytes(&mut fresh).is_err() {
        error!("castle_sessions: the operating system's random source failed");
    }
    let make = plans::kept(client, &MAKE_KEY);
    let args = [epoch.into(), fresh.as_slice().into()];
    if let Some(key) = first_bytes(client.update(make, Some(1), &args)) {
        return Some(key);
    }
    // another transaction made it meanwhile: a new statement sees it
    let read = plans::kept(client, &KEY_OF_MINUTE);
    first_bytes(client.select(read, Some(1), &[epoch.into()]))
}

/// Forgets every rotation key: castle.revoke_everything's, so that nothing
/// rotated before it can be derived after.
pub fn forget_all_keys(client: &mut SpiClient<'_>) {
    let forget = plans::kept(client, &FORGET_KEYS);
    plans::or_raise(client.update(forget, None, &[i64::MAX.into()]));
}

fn first_bytes(rows: pgrx::spi::SpiResult<pgrx::spi::SpiTupleTable<'_>>) -> Option<Vec<u8>> {
    let rows = plans::or_raise(rows);
    if rows.is_empty() {
        return None;
    }
    plans::or_raise(rows.first().get::<Vec<u8>>(1))
}

/// The token a rotation of session `id` (whose secret is `secret`, rotated
/// at `rotated_at`) in `family` made, or, if that successor was rotated on
/// in turn, the family's newest: each step's secret derived from the one
/// before with the key of its rotation's minute, and proved against the
/// stored hash. None when the chain is broken — the successor gone, a key
/// gone (its grace is over), or a successor made otherwise (by 0.5.0, or
/// under another castle.secret_size).
pub fn follow_successors(
    client: &mut SpiClient<'_>,
    family: i64,
    mut id: i64,
    mut secret: Vec<u8>,
    mut rotated_at: i64,
) -> Option<(i64, String)> {
    // a family's rotations within a grace are at most MOST_REMEMBERED
    for _ in 0..=MOST_REMEMBERED {
        let key = rotation_key(client, rotated_at, false)?;
        let next = plans::kept(client, &NEXT_IN_FAMILY);
        let rows = plans::or_raise(client.select(next, Some(1), &[family.into(), id.into()]));
        if rows.is_empty() {
            return None;
        }
        let row = rows.first();
        let next_id = plans::or_raise(row.get::<i64>(1))?;
        let stored = plans::or_raise(row.get::<String>(2))?;
        let next_rotated_at = plans::or_raise(row.get::<pgrx::datum::TimestampWithTimeZone>(3))
            .map(|at| at.into_inner());
        let next_secret = token::successor_secret(&key, id, &secret, settings::secret_size());
        if !token::hashes_equal(
            &token::hash_secret(next_secret.as_bytes()),
            stored.as_bytes(),
        ) {
            return None;
        }
        let Some(next_rotated_at) = next_rotated_at else {
            return Some((next_id, next_secret));
        };
        (id, secret, rotated_at) = (next_id, next_secret.into_bytes(), next_rotated_at);
    }
    None
}

/// How many tokens rotated away a family keeps for reuse detection,
/// however long ago they were rotated.
pub const ROTATED_KEPT: i32 = 8;
/// How long a token rotated away is remembered, however many rotations
/// follow it (microseconds): a thief cannot flush a victim's copy by
/// refreshing quickly.
pub const REMEMBERED_FOR: i64 = 3_600_000_000;
/// Most rotations a family may make within REMEMBERED_FOR, one a minute:
/// more is an attempt to flush a copy out of its memory, and revokes it.
pub const MOST_REMEMBERED: i64 = 60;

static FORGET_ROTATED: Statement = Statement {
    sql: include_str!("queries/forget_rotated.sql"),
    args: &[INT8, INT4, TIMESTAMPTZ],
    mutating: true,
};
static RECENT_ROTATIONS: Statement = Statement {
    sql: include_str!("queries/recent_rotations.sql"),
    args: &[INT8, TIMESTAMPTZ],
    mutating: false,
};

/// After a rotation in `family` at `now`: forgets its tokens rotated away
/// beyond the ROTATED_KEPT newest that are older than REMEMBERED_FOR.
/// False when the family rotated more than MOST_REMEMBERED times within
/// REMEMBERED_FOR: the caller treats it as a reuse.
pub fn remember_rotations(client: &mut pgrx::spi::SpiClient<'_>, family: i64, now: i64) -> bool {
    let since = now.saturating_sub(REMEMBERED_FOR);
    let forget = plans::kept(client, &FORGET_ROTATED);
    let args = [
        family.into(),
        ROTATED_KEPT.into(),
        plans::timestamptz(since),
    ];
    plans::or_raise(client.update(forget, None, &args));
    let count = plans::kept(client, &RECENT_ROTATIONS);
    let args = [family.into(), plans::timestamptz(since)];
    let rows = plans::or_raise(client.select(count, Some(1), &args));
    plans::or_raise(rows.first().get::<i64>(1)).unwrap_or(0) <= MOST_REMEMBERED
}

/// Whether a token rotated away at `rotated_at` still stands for its
/// successor at `now` (PostgreSQL's microseconds).
pub fn within_grace(rotated_at: i64, now: i64) -> bool {
    now < rotated_at.saturating_add(i64::from(settings::rotate_grace_seconds()) * 1_000_000)
}

/// A rotated token came back after its grace: revoke every session of its
/// family (`family`, the first session's id; `presented` is the session the
/// token names). On a standby nothing can be written: the token is refused
/// there, and its family is revoked when the token next reaches the primary.
/// Nothing here writes, waits or raises in the caller.
pub fn reuse(family: i64, presented: i64) {
    if unsafe { pg_sys::RecoveryInProgress() } {
        events::log_server_only(&format!(
            "reuse of a rotated token on a standby: family of session {presented} \
             is revoked when the token next reaches the primary"
        ));
        return;
    }
    if revocations::enqueue(family, presented) || started_lately(family) {
        return;
    }
    // not preloaded: a worker of this backend's own
    if start_worker(family, presented) {
        let now = unsafe { pg_sys::GetCurrentTimestamp() };
        STARTED.with(|started| started.borrow_mut().push((family, now)));
    } else {
        events::log_server_only(&format!(
            "no background worker free (max_worker_processes): family of session {presented} \
             is revoked when one is (preload castle_sessions to have it queued)"
        ));
        PENDING.with(|pending| {
            let mut pending = pending.borrow_mut();
            if !pending.contains(&(family, presented)) && pending.len() < MOST_PENDING {
                pending.push((family, presented));
            }
        });
    }
}

/// Without preloading only: the families this backend owes a worker, and
/// the workers it started in the last STARTED_FOR microseconds, so that one
/// statement presenting a family's tokens a thousand times starts one
/// worker, not a thousand.
const MOST_PENDING: usize = 64;
const STARTED_FOR: i64 = 5_000_000;
thread_local! {
    static PENDING: RefCell<Vec<(i64, i64)>> = const { RefCell::new(Vec::new()) };
    static STARTED: RefCell<Vec<(i64, i64)>> = const { RefCell::new(Vec::new()) };
}

fn started_lately(family: i64) -> bool {
    let now = unsafe { pg_sys::GetCurrentTimestamp() };
    STARTED.with(|started| {
        let mut started = started.borrow_mut();
        started.retain(|&(_, at)| at > now - STARTED_FOR);
        started.iter().any(|&(id, _)| id == family)
    })
}

/// At every check: the workers this backend could not start before.
pub fn retry_pending() {
    if PENDING.with(|pending| pending.borrow().is_empty())
        || unsafe { pg_sys::RecoveryInProgress() }
    {
        return;
    }
    let owed = PENDING.with(|pending| std::mem::take(&mut *pending.borrow_mut()));
    let still: Vec<(i64, i64)> = owed
        .into_iter()
        .filter(|&(family, presented)| !start_worker(family, presented))
        .collect();
    PENDING.with(|pending| pending.borrow_mut().extend(still));
}

fn start_worker(family: i64, presented: i64) -> bool {
    BackgroundWorkerBuilder::new("castle_sessions revocation")
        .set_type("castle_sessions revocation")
        .set_library("castle_sessions")
        .set_function("castle_sessions_revoke_family")
        .set_argument(Some(pg_sys::Datum::from(presented)))
        .set_extra(&format!(
            "{} {} {} {family}",
            unsafe { pg_sys::MyDatabaseId }.to_u32(),
            u8::from(settings::log_events()),
            u8::from(settings::notify_revocations())
        ))
        .enable_spi_access()
        .set_restart_time(None)
        .load_dynamic()
        .is_ok()
}

/// Deletes session `id`'s family, if `id` is `only_user`'s (when given),
/// under the user's lock (`delete_family_of`). Returns the ids.
pub fn delete(client: &mut SpiClient<'_>, id: i64, only_user: Option<&[u8]>) -> Vec<i64> {
    let read = plans::kept(client, &FAMILY_OF_SESSION);
    let rows = plans::or_raise(client.select(read, Some(1), &[id.into()]));
    if rows.is_empty() {
        return Vec::new();
    }
    let row = rows.first();
    let (Some(family), Some(user_id)) = (
        plans::or_raise(row.get::<i64>(1)),
        plans::or_raise(row.get_datum_by_ordinal(2))
            .map(|user| unsafe { store::text_bytes(user) }.to_vec()),
    ) else {
        return Vec::new();
    };
    if only_user.is_some_and(|only| only != user_id.as_slice()) {
        return Vec::new();
    }
    delete_family_of(client, family, &user_id)
}

/// Deletes every session of `family` (its first session's id, stored or
/// not: a reuse's revocation, by a worker that may come after the presented
/// token was forgotten), under its user's lock. Returns the ids.
fn delete_whole_family(client: &mut SpiClient<'_>, family: i64) -> Vec<i64> {
    let read = plans::kept(client, &USER_OF_FAMILY);
    let rows = plans::or_raise(client.select(read, Some(1), &[family.into()]));
    if rows.is_empty() {
        return Vec::new();
    }
    let Some(user_id) = plans::or_raise(rows.first().get_datum_by_ordinal(1))
        .map(|user| unsafe { store::text_bytes(user) }.to_vec())
    else {
        return Vec::new();
    };
    delete_family_of(client, family, &user_id)
}

/// Deletes `family` of `user_id` under the user's lock: every rotation of
/// the family takes it too, so the delete waits for one in flight and then
/// sees its new session, and never deadlocks with it, with trimming or with
/// revoke_all.
fn delete_family_of(client: &mut SpiClient<'_>, family: i64, user_id: &[u8]) -> Vec<i64> {
    crate::user_lock::lock_user(user_id);
    let delete = plans::kept(client, &DELETE_WHOLE_FAMILY);
    let args = [family.into(), plans::text(user_id)];
    let ids = plans::returned_ids(plans::or_raise(client.update(delete, None, &args)));
    ids
}

/// The worker a backend starts when the library is not preloaded: connects
/// to the caller's database as the bootstrap superuser (the table's owner
/// may not be allowed to log in) and revokes the family, retrying a failure
/// a few times, each logged with its cause.
#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn castle_sessions_revoke_family(argument: pg_sys::Datum) {
    let presented = argument.value() as i64;
    let extra: Vec<i64> = BackgroundWorker::get_extra()
        .split(' ')
        .filter_map(|field| field.parse().ok())
        .collect();
    let [database, log_events, notify, family] = extra[..] else {
        error!("castle_sessions revocation worker: bad arguments");
    };
    let database = u32::try_from(database).unwrap_or_default();
    // SIGTERM only sets a flag, read between two attempts: never an exit
    // from inside the signal handler
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGTERM);
    BackgroundWorker::connect_worker_to_spi_by_oid(Some(pg_sys::Oid::from(database)), None);
    settings_for_a_revocation(c"5s");
    for attempt in 1..=WORKER_ATTEMPTS {
        if BackgroundWorker::sigterm_received() {
            return;
        }
        match revoke_in_a_transaction(family, presented, log_events == 1, notify == 1) {
            Ok(()) => return,
            Err((_, cause)) => events::log_server_only(&format!(
                "family of session {presented} not revoked yet (attempt {attempt} of \
                 {WORKER_ATTEMPTS}): {cause}"
            )),
        }
        std::thread::sleep(std::time::Duration::from_millis(100 * attempt));
    }
    events::log_server_only(&format!(
        "reuse of a rotated token: family of session {presented} NOT revoked after \
         {WORKER_ATTEMPTS} attempts (their causes are above); it is revoked when the token \
         is presented again"
    ));
}

const WORKER_ATTEMPTS: u64 = 5;

/// In a revocation worker, once connected: what the database's defaults
/// (for its clients) must not decide. READ COMMITTED whatever
/// default_transaction_isolation says, so that a concurrent rotation is a
/// wait, not a serialization failure; writable; no statement timeout; a
/// lock waited for at most `lock_wait`, then retried.
pub fn settings_for_a_revocation(lock_wait: &std::ffi::CStr) {
    settings::set_for_worker_value(c"default_transaction_isolation", c"read committed");
    settings::set_for_worker_value(c"default_transaction_read_only", c"off");
    settings::set_for_worker_value(c"statement_timeout", c"0");
    settings::set_for_worker_value(c"lock_timeout", lock_wait);
}

/// Revokes `family` (whose token rotated away, session `presented`'s, came
/// back) as the table's owner, in a transaction of its own, with the
/// presenting caller's log and notify settings: Err with the error's code
/// and its cause (SQLSTATE and message) when it failed.
pub fn revoke_in_a_transaction(
    family: i64,
    presented: i64,
    log_events: bool,
    notify: bool,
) -> Result<(), (PgSqlErrorCode, String)> {
    BackgroundWorker::transaction(|| {
        // the write lock first, never waited for (uses.rs says why)
        if !unsafe { crate::uses::lock_sessions_at_once() } {
            return Err((
                PgSqlErrorCode::ERRCODE_LOCK_NOT_AVAILABLE,
                "castle.sessions is locked by another transaction".to_owned(),
            ));
        }
        settings::set_for_worker(c"castle.log_events", log_events);
        settings::set_for_worker(c"castle.notify_revocations", notify);
        plans::attempt(|| {
            let ids = plans::as_owner(store::table_owner(), || {
                Spi::connect_mut(|client| delete_whole_family(client, family))
            });
            events::reuse_revoked(presented, &ids);
        })
    })
}
