//! Rotation families. Every session descends from one sign-in, its family
//! (family_id: the first session's id, NULL on that one). castle.rotate
//! keeps the session it replaces, marked rotated_at: for castle.rotate_grace
//! its token stands for the family's newest session, so requests in flight
//! during a rotation succeed; after that the token is a reuse — a copy of it
//! is being replayed — and the whole family is revoked.
//!
//! A family keeps its newest ROTATED_KEPT tokens rotated away; older ones
//! are forgotten at the next rotation (then refused as unknown), so a
//! session rotated every few minutes for months keeps a few rows.
//!
//! A reuse is always refused, and authenticate refuses by raising, which
//! rolls back the caller's transaction and with it any revocation made
//! there. So the family is revoked by a background worker, in a transaction
//! of its own, started here and not waited for; the caller sees the same
//! refusal, in the same time, as for any bad token. Without a free worker
//! slot, the caller's transaction revokes it (kept if that commits) and the
//! server log says so.

use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, SignalWakeFlags};
use pgrx::pg_sys;
use pgrx::prelude::*;

use crate::events;
use crate::plans::{self, Statement, INT4, INT8, TEXT};
use crate::{settings, store};

pub static DELETE_FAMILY: Statement = Statement {
    sql: include_str!("queries/delete_family.sql"),
    args: &[INT8, TEXT],
    mutating: true,
};

/// How many tokens rotated away a family keeps for reuse detection.
pub const ROTATED_KEPT: i32 = 8;

static FORGET_ROTATED: Statement = Statement {
    sql: include_str!("queries/forget_rotated.sql"),
    args: &[INT8, INT4],
    mutating: true,
};

/// After a rotation in `family`: forgets its oldest tokens rotated away.
pub fn forget_old_rotations(client: &mut pgrx::spi::SpiClient<'_>, family: i64) {
    let forget = plans::kept(client, &FORGET_ROTATED);
    plans::or_raise(client.update(forget, None, &[family.into(), ROTATED_KEPT.into()]));
}

/// Whether a token rotated away at `rotated_at` still stands for its
/// successor at `now` (PostgreSQL's microseconds).
pub fn within_grace(rotated_at: i64, now: i64) -> bool {
    now < rotated_at.saturating_add(i64::from(settings::rotate_grace_seconds()) * 1_000_000)
}

/// A rotated token came back after its grace: revoke every session of its
/// family (`presented` is the session the token names). On a standby
/// nothing can be written: the token is refused there, and its family is
/// revoked when the token next reaches the primary.
pub fn reuse(presented: i64) {
    if unsafe { pg_sys::RecoveryInProgress() } {
        events::log_always(&format!(
            "reuse of a rotated token on a standby: family of session {presented} \
             is revoked when the token next reaches the primary"
        ));
        return;
    }
    let worker = BackgroundWorkerBuilder::new("castle_sessions reuse")
        .set_type("castle_sessions reuse")
        .set_library("castle_sessions")
        .set_function("castle_sessions_revoke_family")
        .set_argument(Some(pg_sys::Datum::from(presented)))
        .set_extra(&format!(
            "{} {} {}",
            unsafe { pg_sys::MyDatabaseId }.to_u32(),
            u8::from(settings::log_events()),
            u8::from(settings::notify_revocations())
        ))
        .enable_spi_access()
        .set_restart_time(None)
        .load_dynamic();
    if worker.is_err() {
        events::log_always(&format!(
            "no background worker free (max_worker_processes): family of session {presented} \
             revoked in the caller's transaction, kept only if it commits"
        ));
        revoke_family(presented);
    }
}

/// Deletes every session of `presented`'s family, as the table's owner.
fn revoke_family(presented: i64) {
    let ids: Vec<i64> = plans::as_owner(store::table_owner(), || {
        Spi::connect_mut(|client| {
            let delete = plans::kept(client, &DELETE_FAMILY);
            let args = [presented.into(), plans::null_text()];
            plans::or_raise(client.update(delete, None, &args))
                .map(|row| plans::or_raise(row.get::<i64>(1)).unwrap_or_default())
                .collect()
        })
    });
    events::reuse_revoked(presented, &ids);
}

/// The background worker: connects to the caller's database as the
/// bootstrap superuser (the table's owner may not be allowed to log in),
/// revokes the family as the table's owner, with the caller's log and
/// notify settings, and exits.
#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn castle_sessions_revoke_family(argument: pg_sys::Datum) {
    let presented = argument.value() as i64;
    let extra: Vec<u32> = BackgroundWorker::get_extra()
        .split(' ')
        .filter_map(|field| field.parse().ok())
        .collect();
    let [database, log_events, notify] = extra[..] else {
        error!("castle_sessions reuse worker: bad arguments");
    };
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGTERM);
    BackgroundWorker::connect_worker_to_spi_by_oid(Some(pg_sys::Oid::from(database)), None);
    BackgroundWorker::transaction(|| {
        settings::set_for_worker(c"castle.log_events", log_events == 1);
        settings::set_for_worker(c"castle.notify_revocations", notify == 1);
        revoke_family(presented);
    });
}
