//! The standing workers, and the revocation of a family after a reuse, off
//! the caller's path. (The same workers write the queue of last uses,
//! `uses.rs`.)
//!
//! Contract: `enqueue(family, presented)` is all a presenting backend does.
//! It records the family in a table in shared memory — once: a family queued
//! and not yet revoked is not queued again — and returns. It writes, waits
//! for, wakes and raises nothing, and costs a lock held for a scan of the
//! table, so a reuse is refused in the time of any other refusal. (Waking the
//! launcher would not be: the worker it starts at once competes with the
//! caller for the CPU, and that was enough to tell a reuse apart.)
//!
//! The launcher, a standing background worker registered when the library is
//! preloaded, looks every LAUNCHER_NAP and starts one worker per database
//! with work due (families, or uses queued), at most DRAINERS at once:
//! however many reuses clients present, castle never takes more than
//! 1 + DRAINERS worker slots. A database's worker stays while work comes,
//! and gives its slot up after IDLE_EXIT idle, or after TURN when another
//! database waits. It revokes its database's families one at a time, each
//! in a READ COMMITTED transaction of its own, waiting at most LOCK_WAIT for
//! a lock (a transaction holding the user's lock cannot stall it); a failure is logged with its cause and retried after
//! a backoff, until the family is revoked. An entry leaves the table only
//! then, so neither the presenting backend's exit, nor a worker's
//! termination, nor a full worker table loses it; a terminated launcher is
//! restarted by the postmaster within a second.
//!
//! The launcher also keeps the queue in a file of the data directory
//! (SAVED_QUEUE, written beside, flushed and renamed, as pg_prewarm keeps its
//! block list), whenever it changed, at most every LAUNCHER_NAP, and when it
//! is told to stop; a new launcher — after a restart, a fast shutdown or a
//! crash — queues what it finds there again, if the file was saved by this
//! server on this timeline (not copied by a base backup, nor left from
//! before a promotion). So what a crash can lose is the
//! revocation of a reuse presented in the last LAUNCHER_NAP, never a
//! session: the rotated-away token stays stored, and presenting it again
//! queues the family again. A revocation done twice deletes nothing the
//! second time. A full table (QUEUED families waiting) is logged, and the
//! family is likewise queued the next time its token comes back.
//!
//! Without preloading there is no shared memory and no launcher; `enqueue`
//! says so, and the caller starts a worker of its own (families.rs).

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

use pgrx::bgworkers::{
    BackgroundWorker, BackgroundWorkerBuilder, BgWorkerStartTime, DynamicBackgroundWorker,
    SignalWakeFlags,
};
use pgrx::prelude::*;
use pgrx::{pg_shmem_init, pg_sys, PGRXSharedMemory, PgLwLock};

use crate::events;
use crate::families;
use crate::settings;

/// Families waiting to be revoked, in every database.
const QUEUED: usize = 1024;
/// Drain workers running at once, each for one database.
const DRAINERS: usize = 2;
/// The longest a drain worker waits for a lock before it retries later.
const LOCK_WAIT: &std::ffi::CStr = c"500ms";
/// Attempts at one family before it is given up (about ten minutes, the
/// backoff at its longest), logged; it is queued again when its token comes
/// back.
const MOST_ATTEMPTS: u32 = 64;
/// How recently the launcher must have looked for a reuse to be queued:
/// else (it could not be registered, or is being restarted) the presenting
/// backend starts a worker of its own.
const LAUNCHER_ALIVE: i64 = 5_000_000;
/// How often the launcher looks at the queue: what a revocation may wait
/// before its worker starts.
const LAUNCHER_NAP: Duration = Duration::from_millis(200);
/// The queue as the launcher last saved it, in the data directory.
const SAVED_QUEUE: &str = "castle_sessions.revocations";
/// How long a worker lets uses gather after a batch that emptied its
/// database's queue: under steady traffic a batch every FLUSH_NAP, not a
/// transaction (and a transaction id) for every few uses. A full batch is
/// followed by the next at once, so the queue grows by at most the uses of a
/// nap and a write.
const FLUSH_NAP: Duration = Duration::from_millis(100);
/// The longest backoff between two attempts at one family (microseconds).
const MOST_BACKOFF: i64 = 10_000_000;
/// A database's worker exits after this long with nothing to do (microseconds).
const IDLE_EXIT: i64 = 2_000_000;
/// ... or after this long when another database waits for a worker slot.
const TURN: i64 = 10_000_000;

const LOG_EVENTS: u8 = 1;
const NOTIFY: u8 = 2;

#[derive(Clone, Copy)]
struct Entry {
    /// 0: the entry is free
    database: u32,
    /// the family's first session's id
    family: i64,
    /// the session whose token came back (what the log names)
    presented: i64,
    /// the presenting caller's castle.log_events and notify_revocations
    flags: u8,
    /// the drain worker revoking it now (0: none)
    drainer: i32,
    attempts: u32,
    /// not before this time (PostgreSQL's microseconds)
    due: i64,
}

const FREE: Entry = Entry {
    database: 0,
    family: 0,
    presented: 0,
    flags: 0,
    drainer: 0,
    attempts: 0,
    due: 0,
};

pub struct Queue {
    entries: [Entry; QUEUED],
    /// when the launcher last looked (PostgreSQL's microseconds)
    launcher_seen: i64,
    /// a database has work and no worker: the workers give up their turn
    waiting: bool,
}

// SAFETY: plain values, no pointers: valid in every process that maps it.
unsafe impl PGRXSharedMemory for Queue {}

static QUEUE: PgLwLock<Queue> = unsafe { PgLwLock::new(c"castle_sessions revocations") };
/// Set in the postmaster when preloaded; every backend forked after has it.
static STANDING: AtomicBool = AtomicBool::new(false);

/// From _PG_init: the queue's shared memory and the launcher, when loaded by
/// shared_preload_libraries, the only time either can be had.
pub fn register() {
    if !unsafe { pg_sys::process_shared_preload_libraries_in_progress } {
        return;
    }
    pg_shmem_init!(
        QUEUE = Queue {
            entries: [FREE; QUEUED],
            launcher_seen: 0,
            waiting: false,
        }
    );
    crate::uses::register();
    // on a primary only: a standby cannot write (and queues nothing)
    BackgroundWorkerBuilder::new("castle_sessions launcher")
        .set_type("castle_sessions launcher")
        .set_library("castle_sessions")
        .set_function("castle_sessions_launcher")
        .set_start_time(BgWorkerStartTime::RecoveryFinished)
        .set_restart_time(Some(Duration::from_secs(1)))
        .enable_spi_access()
        .load();
    STANDING.store(true, Relaxed);
}

/// Whether the library was preloaded: the queues' shared memory exists.
pub fn preloaded() -> bool {
    STANDING.load(Relaxed)
}

/// Whether the launcher looked lately: preloaded, and not being restarted.
pub fn launcher_alive() -> bool {
    STANDING.load(Relaxed)
        && unsafe { pg_sys::GetCurrentTimestamp() } - QUEUE.share().launcher_seen <= LAUNCHER_ALIVE
}

/// Queues the revocation of `family`, whose token rotated away (session
/// `presented`'s) came back after its grace. False without preloading, or
/// while no launcher runs: then nothing was queued.
pub fn enqueue(family: i64, presented: i64) -> bool {
    if !STANDING.load(Relaxed) {
        return false;
    }
    let database = unsafe { pg_sys::MyDatabaseId }.to_u32();
    let flags = if settings::log_events() {
        LOG_EVENTS
    } else {
        0
    } | if settings::notify_revocations() {
        NOTIFY
    } else {
        0
    };
    let now = unsafe { pg_sys::GetCurrentTimestamp() };
    let full = {
        let mut queue = QUEUE.exclusive();
        if now - queue.launcher_seen > LAUNCHER_ALIVE {
            return false;
        }
        let queued = queue
            .entries
            .iter()
            .any(|e| e.database == database && e.family == family);
        let mut full = false;
        if !queued {
            match queue.entries.iter_mut().find(|e| e.database == 0) {
                Some(free) => {
                    *free = Entry {
                        database,
                        family,
                        presented,
                        flags,
                        ..FREE
                    }
                }
                None => full = true,
            }
        }
        full
    };
    if full {
        events::log_server_only(&format!(
            "{QUEUED} families wait for revocation: family of session {presented} is queued \
             when its token rotated away is presented again"
        ));
    }
    true
}

/// The launcher: starts drain workers for the databases with work due, and
/// gives back what the ones that stopped left unfinished.
#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn castle_sessions_launcher(_argument: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    // to no database: only to be seen in pg_stat_activity (and ended there)
    BackgroundWorker::connect_worker_to_spi(None, None);
    let mut saved = load_saved_queue();
    let mut drainers: Vec<(u32, DynamicBackgroundWorker)> = Vec::new();
    let mut told_no_slot = 0i64;
    // woken by its drainers' start and exit, else every LAUNCHER_NAP
    loop {
        QUEUE.exclusive().launcher_seen = unsafe { pg_sys::GetCurrentTimestamp() };
        save_queue(&mut saved);
        if !BackgroundWorker::wait_latch(Some(LAUNCHER_NAP)) {
            save_queue(&mut saved);
            break;
        }
        release_entries_of_stopped_drainers();
        drainers.retain(|(_, worker)| {
            !matches!(
                worker.pid(),
                Err(pgrx::bgworkers::BackgroundWorkerStatus::Stopped
                    | pgrx::bgworkers::BackgroundWorkerStatus::PostmasterDied)
            )
        });
        let mut waiting = false;
        for database in databases_due() {
            if drainers.iter().any(|(d, _)| *d == database) {
                continue;
            }
            if drainers.len() >= DRAINERS {
                waiting = true;
                break;
            }
            if !accepts_connections(database) {
                drop_entries_of(database);
                continue;
            }
            match start_drainer(database) {
                Some(worker) => drainers.push((database, worker)),
                None => {
                    let now = unsafe { pg_sys::GetCurrentTimestamp() };
                    if now - told_no_slot > 60_000_000 {
                        told_no_slot = now;
                        events::log_server_only(
                            "no background worker free (max_worker_processes) for a database's \
                             revocations and uses: retrying",
                        );
                    }
                }
            }
        }
        QUEUE.exclusive().waiting = waiting;
    }
    // not 0, which would unregister it: terminated, it is started again
    // (a shutdown starts nothing)
    unsafe { pg_sys::proc_exit(1) };
}

/// What the queue holds that a new launcher needs: a header naming this
/// server's system and timeline, then database, family, session presented
/// and flags of every entry, one a line.
fn queue_lines() -> String {
    let mut entries = Vec::with_capacity(QUEUED);
    {
        let queue = QUEUE.share();
        for e in queue.entries.iter().filter(|e| e.database != 0) {
            entries.push((e.database, e.family, e.presented, e.flags));
        }
    }
    entries.sort_unstable();
    let mut lines = header();
    for (database, family, presented, flags) in entries {
        lines.push_str(&format!("{database} {family} {presented} {flags}\n"));
    }
    lines
}

/// The file's first line: a queue saved by another server (a base backup
/// copies the file) or on another timeline (before a promotion or a rewind)
/// names sessions of another history, and is not loaded.
fn header() -> String {
    let (system, timeline) = unsafe {
        (
            pg_sys::GetSystemIdentifier(),
            pg_sys::GetWALInsertionTimeLine(),
        )
    };
    format!("castle_sessions revocations {system} {timeline}\n")
}

/// Writes the queue to SAVED_QUEUE if it changed since `saved`: written
/// beside, flushed to disk, renamed, and the directory flushed, so a reader
/// finds the old file or the new one, whole, even after a machine crash. A
/// failure is logged once, and the queue goes on in shared memory.
fn save_queue(saved: &mut String) {
    let lines = queue_lines();
    if lines == *saved {
        return;
    }
    let temporary = format!("{SAVED_QUEUE}.tmp");
    let written = std::fs::File::create(&temporary)
        .and_then(|mut file| {
            std::io::Write::write_all(&mut file, lines.as_bytes())?;
            file.sync_all()
        })
        .and_then(|()| std::fs::rename(&temporary, SAVED_QUEUE))
        .and_then(|()| std::fs::File::open(".")?.sync_all());
    match written {
        Ok(()) => *saved = lines,
        Err(error) => {
            if !saved.starts_with("failed") {
                events::log_server_only(&format!("could not save the revocation queue: {error}"));
            }
            *saved = "failed".to_owned();
        }
    }
}

/// Queues again what the last launcher of this server and timeline saved
/// (a restart, a shutdown or a crash came between) and returns it as saved.
fn load_saved_queue() -> String {
    let Ok(text) = std::fs::read_to_string(SAVED_QUEUE) else {
        return String::new();
    };
    let Some(entries) = text.strip_prefix(header().as_str()) else {
        events::log_server_only(
            "a revocation queue saved by another server or on another timeline was not loaded",
        );
        return String::new();
    };
    // parsed before the lock is taken: exactly four numbers a line
    let mut parsed = Vec::with_capacity(QUEUED);
    for line in entries.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let [database, family, presented, flags] = fields[..] else {
            continue;
        };
        if let (Ok(database), Ok(family), Ok(presented), Ok(flags)) = (
            database.parse::<u32>(),
            family.parse::<i64>(),
            presented.parse::<i64>(),
            flags.parse::<u8>(),
        ) {
            parsed.push(Entry {
                database,
                family,
                presented,
                flags,
                ..FREE
            });
        }
    }
    let mut queue = QUEUE.exclusive();
    for entry in parsed {
        let queued = queue
            .entries
            .iter()
            .any(|e| e.database == entry.database && e.family == entry.family);
        if queued {
            continue;
        }
        if let Some(free) = queue.entries.iter_mut().find(|e| e.database == 0) {
            *free = entry;
        }
    }
    text
}

fn start_drainer(database: u32) -> Option<DynamicBackgroundWorker> {
    BackgroundWorkerBuilder::new("castle_sessions worker")
        .set_type("castle_sessions worker")
        .set_library("castle_sessions")
        .set_function("castle_sessions_drain")
        .set_argument(Some(pg_sys::Datum::from(database)))
        .set_notify_pid(unsafe { pg_sys::MyProcPid })
        .enable_spi_access()
        .set_restart_time(None)
        .load_dynamic()
        .ok()
}

/// The databases with work: entries due that no worker is revoking, the one
/// whose entry has waited longest first, then those with uses queued.
fn databases_due() -> Vec<u32> {
    let now = unsafe { pg_sys::GetCurrentTimestamp() };
    let mut due: Vec<(i64, u32)> = Vec::with_capacity(QUEUED);
    {
        let queue = QUEUE.share();
        for entry in &queue.entries {
            if entry.database != 0 && entry.drainer == 0 && entry.due <= now {
                due.push((entry.due, entry.database));
            }
        }
    }
    due.sort_unstable();
    let mut databases: Vec<u32> = Vec::new();
    for (_, database) in due {
        if !databases.contains(&database) {
            databases.push(database);
        }
    }
    for database in crate::uses::databases() {
        if !databases.contains(&database) {
            databases.push(database);
        }
    }
    databases
}

/// Whether `database` still exists and takes connections (a worker could
/// not connect to it, and would be started again and again).
fn accepts_connections(database: u32) -> bool {
    BackgroundWorker::transaction(|| unsafe {
        let tuple = pg_sys::SearchSysCache1(
            pg_sys::SysCacheIdentifier::DATABASEOID as _,
            pg_sys::Datum::from(database),
        );
        if tuple.is_null() {
            return false;
        }
        let allows =
            (*pg_sys::heap_tuple_get_struct::<pg_sys::FormData_pg_database>(tuple)).datallowconn;
        pg_sys::ReleaseSysCache(tuple);
        allows
    })
}

/// A database dropped, or closed to connections, since its entries were
/// queued: its sessions are gone, or out of reach until it opens again,
/// when a token presented again queues its family again.
fn drop_entries_of(database: u32) {
    crate::uses::forget(database);
    let dropped = {
        let mut queue = QUEUE.exclusive();
        let mut dropped = 0;
        for entry in queue.entries.iter_mut() {
            if entry.database == database && entry.drainer == 0 {
                *entry = FREE;
                dropped += 1;
            }
        }
        dropped
    };
    events::log_server_only(&format!(
        "database {database} is gone or takes no connections: {dropped} families' revocations \
         dropped (queued again when their tokens are presented again)"
    ));
}

/// Entries a drain worker took and did not finish (it was terminated, or
/// failed hard): due again.
fn release_entries_of_stopped_drainers() {
    let mut queue = QUEUE.exclusive();
    for entry in queue.entries.iter_mut() {
        if entry.drainer != 0 && unsafe { pg_sys::BackendPidGetProc(entry.drainer) }.is_null() {
            entry.drainer = 0;
        }
    }
}

/// A database's worker: revokes its families due, one at a time, and writes
/// its queued uses, a batch at a time. It stays while work keeps coming —
/// starting a worker costs more than a batch — and exits after IDLE_EXIT
/// with nothing to do, or after TURN when another database waits for a
/// worker slot (the launcher starts another when work comes).
#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn castle_sessions_drain(argument: pg_sys::Datum) {
    let database = argument.value() as u32;
    // SIGTERM (a fast shutdown, pg_terminate_backend) only sets a flag, read
    // between two pieces of work: never an exit from inside the signal
    // handler, and an attempt lasts at most about LOCK_WAIT
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGTERM);
    BackgroundWorker::connect_worker_to_spi_by_oid(Some(pg_sys::Oid::from(database)), None);
    families::settings_for_a_revocation(LOCK_WAIT);
    let me = unsafe { pg_sys::MyProcPid };
    let started = unsafe { pg_sys::GetCurrentTimestamp() };
    let mut busy_at = started;
    while !BackgroundWorker::sigterm_received() {
        let now = unsafe { pg_sys::GetCurrentTimestamp() };
        // checked on every pass: under steady work a worker is never idle
        if now - started > TURN && QUEUE.share().waiting {
            break;
        }
        // a batch that emptied the queue: let uses gather (after reporting it)
        let mut gather = false;
        if let Some((at, entry)) = take(database, me) {
            revoke(at, me, entry);
        } else {
            let uses = crate::uses::take(database);
            if uses.is_empty() {
                if now - busy_at > IDLE_EXIT {
                    break;
                }
                BackgroundWorker::wait_latch(Some(LAUNCHER_NAP));
                continue;
            }
            if !crate::uses::write_in_a_transaction(database, &uses) {
                // castle.sessions is locked by DDL: try again after a nap
                BackgroundWorker::wait_latch(Some(LAUNCHER_NAP));
            } else {
                gather = uses.len() < crate::uses::BATCH;
            }
        }
        // what this worker wrote, in pg_stat_user_tables now, not at its exit
        unsafe { pg_sys::pgstat_report_stat(true) };
        busy_at = now;
        if gather {
            BackgroundWorker::wait_latch(Some(FLUSH_NAP));
        }
    }
}

/// One attempt at the family of entry `at`: done, given up, or due again later.
fn revoke(at: usize, me: i32, entry: Entry) {
    let outcome = families::revoke_in_a_transaction(
        entry.family,
        entry.presented,
        entry.flags & LOG_EVENTS != 0,
        entry.flags & NOTIFY != 0,
    );
    match outcome {
        Ok(()) => finish(at, me),
        Err((code, cause)) if gone(code) || entry.attempts + 1 >= MOST_ATTEMPTS => {
            events::log_server_only(&format!(
                "reuse of a rotated token: family of session {} NOT revoked after {} \
                 attempts ({cause}); it is queued again when its token is presented again",
                entry.presented,
                entry.attempts + 1
            ));
            finish(at, me);
        }
        Err((_, cause)) => {
            let backoff = (100_000i64 << entry.attempts.min(10)).min(MOST_BACKOFF);
            events::log_server_only(&format!(
                "family of session {} not revoked yet (attempt {}): {cause}; retried in {} ms",
                entry.presented,
                entry.attempts + 1,
                backoff / 1000
            ));
            retry_later(at, me, backoff);
        }
    }
}

/// Errors no retry can mend: the extension or its table is gone. (Objects
/// older than the library are retried: ALTER EXTENSION … UPDATE mends them.)
fn gone(code: PgSqlErrorCode) -> bool {
    matches!(
        code,
        PgSqlErrorCode::ERRCODE_UNDEFINED_TABLE
            | PgSqlErrorCode::ERRCODE_INVALID_SCHEMA_NAME
            | PgSqlErrorCode::ERRCODE_UNDEFINED_FUNCTION
    )
}

/// The entry of `database` due that has waited longest (a new one before
/// one held back by its backoff), taken by drain worker `me`.
fn take(database: u32, me: i32) -> Option<(usize, Entry)> {
    let now = unsafe { pg_sys::GetCurrentTimestamp() };
    let mut queue = QUEUE.exclusive();
    let (at, entry) = queue
        .entries
        .iter_mut()
        .enumerate()
        .filter(|(_, e)| e.database == database && e.drainer == 0 && e.due <= now)
        .min_by_key(|(_, e)| e.due)?;
    entry.drainer = me;
    Some((at, *entry))
}

fn finish(at: usize, me: i32) {
    let mut queue = QUEUE.exclusive();
    if queue.entries[at].drainer == me {
        queue.entries[at] = FREE;
    }
}

fn retry_later(at: usize, me: i32, backoff: i64) {
    let now = unsafe { pg_sys::GetCurrentTimestamp() };
    let mut queue = QUEUE.exclusive();
    let entry = &mut queue.entries[at];
    if entry.drainer == me {
        entry.drainer = 0;
        entry.attempts = entry.attempts.saturating_add(1);
        entry.due = now + backoff;
    }
}
