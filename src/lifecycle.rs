//! A session's life after sign-in: sign-out, sign-out everywhere, the device
//! list, rotation and pruning.

use pgrx::datum::Interval;
use pgrx::datum::TimestampWithTimeZone;
use pgrx::iter::SetOfIterator;
use pgrx::pg_sys;
use pgrx::prelude::*;

use crate::auth;
use crate::context;
use crate::events::{self, Revocation};
use crate::families;
use crate::issue::{self, refuse_on_standby, user_key};
use crate::plans::{self, Statement, INT4, INT8, TEXT, TIMESTAMPTZ};
use crate::raw_jsonb::RawJsonb;
use crate::raw_text::{self, RawText};
use crate::settings;
use crate::store;
use crate::token::{self, Refusal};

static ROTATE_SESSION: Statement = Statement {
    sql: include_str!("queries/rotate_session.sql"),
    args: &[INT8, TIMESTAMPTZ],
    mutating: true,
};
static DELETE_USER_SESSIONS: Statement = Statement {
    sql: include_str!("queries/delete_user_sessions.sql"),
    args: &[TEXT, INT8],
    mutating: true,
};
static END_GRACES: Statement = Statement {
    sql: include_str!("queries/end_graces.sql"),
    args: &[INT8, TEXT],
    mutating: true,
};
static LIVE_SESSIONS: Statement = Statement {
    sql: include_str!("queries/live_sessions.sql"),
    args: &[TEXT, INT4, TIMESTAMPTZ],
    mutating: false,
};
static LOCK_OUT_WRITERS: Statement = Statement {
    sql: "LOCK TABLE castle.sessions IN SHARE ROW EXCLUSIVE MODE",
    args: &[],
    mutating: true,
};
static REVOKE_EVERYTHING: Statement = Statement {
    sql: include_str!("queries/revoke_everything.sql"),
    args: &[TIMESTAMPTZ],
    mutating: true,
};
static PRUNE_SESSIONS: Statement = Statement {
    sql: include_str!("queries/prune_sessions.sql"),
    args: &[INT4, INT4],
    mutating: true,
};

/// Sign out: deletes the session, with its family, only if the token fully
/// verifies. False for any bad token, with no hint of why.
#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn revoke(token: Option<RawText>) -> bool {
    refuse_on_standby("revoke");
    match auth::find(raw_text::bytes(&token)) {
        Ok(found) => delete_family(found.id, None, Revocation::Token),
        Err(why) => {
            auth::note_refusal(why);
            false
        }
    }
}

/// "Sign out that device", by the id a device list shows: the session and
/// its family (the sessions rotated away from, or alongside, it).
#[pg_extern(volatile, strict, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn revoke_session(session_id: i64) -> bool {
    refuse_on_standby("revoke_session");
    delete_family(session_id, None, Revocation::Id)
}

/// "Sign out that device" from a request: deletes session `session_id` and
/// its family only if it belongs to the user castle.login bound in this
/// transaction. False for anyone else's session, as for one that does not
/// exist.
#[pg_extern(volatile, strict, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn revoke_own_session(session_id: i64) -> bool {
    refuse_on_standby("revoke_own_session");
    let user_id = context::logged_in_user();
    delete_family(session_id, Some(&user_id), Revocation::Id)
}

/// revoke_own_session with the user given: what a router (docs/sharding.md)
/// calls for the user its own castle.login bound. An administrator's
/// function, granted by grant_router_role only.
#[pg_extern(volatile, strict, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn revoke_session_of(user_id: RawText, session_id: i64) -> bool {
    refuse_on_standby("revoke_session_of");
    delete_family(session_id, Some(user_id.bytes()), Revocation::Id)
}

/// "Sign out everywhere else" from a request: every session of the logged-in
/// user but the one castle.login bound. Returns how many it deleted.
#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn revoke_other_sessions() -> i64 {
    let user_id = context::logged_in_user();
    revoke_all(user_id, context::logged_in_session(), Revocation::User)
}

/// The logged-in user's live sessions: the request's "active devices" page.
#[pg_extern(name = "sessions_of", stable, parallel_restricted, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn sessions_of_logged_in(
) -> SetOfIterator<'static, pgrx::composite_type!('static, "castle.session")> {
    sessions_of(context::logged_in_user())
}

#[pg_extern(name = "revoke_all", volatile, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn revoke_all_bigint(user_id: Option<i64>, except_session: default!(Option<i64>, "NULL")) -> i64 {
    revoke_all(issue::key_of(user_id), except_session, Revocation::User)
}

#[pg_extern(name = "revoke_all", volatile, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn revoke_all_uuid(
    user_id: Option<pgrx::Uuid>,
    except_session: default!(Option<i64>, "NULL"),
) -> i64 {
    revoke_all(issue::key_of(user_id), except_session, Revocation::User)
}

#[pg_extern(name = "revoke_all", volatile, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn revoke_all_text(user_id: Option<RawText>, except_session: default!(Option<i64>, "NULL")) -> i64 {
    revoke_all(
        user_key(user_id.map(|id| id.bytes().to_vec())),
        except_session,
        Revocation::User,
    )
}

/// What castle.revoke_sessions_trigger calls for a deleted user: revoke_all,
/// counted and logged as the trigger's.
#[pg_extern(volatile, strict, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn revoke_deleted_user(user_id: RawText) -> i64 {
    revoke_all(
        user_key(Some(user_id.bytes().to_vec())),
        None,
        Revocation::Trigger,
    )
}

#[pg_extern(name = "sessions_of", stable, parallel_restricted, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn sessions_of_bigint(
    user_id: Option<i64>,
) -> SetOfIterator<'static, pgrx::composite_type!('static, "castle.session")> {
    sessions_of(issue::key_of(user_id))
}

#[pg_extern(name = "sessions_of", stable, parallel_restricted, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn sessions_of_uuid(
    user_id: Option<pgrx::Uuid>,
) -> SetOfIterator<'static, pgrx::composite_type!('static, "castle.session")> {
    sessions_of(issue::key_of(user_id))
}

#[pg_extern(name = "sessions_of", stable, parallel_restricted, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn sessions_of_text(
    user_id: Option<RawText>,
) -> SetOfIterator<'static, pgrx::composite_type!('static, "castle.session")> {
    sessions_of(user_key(user_id.map(|id| id.bytes().to_vec())))
}

/// A new token for the same user and data, of the same family. The old
/// token keeps working for castle.rotate_grace (it stands for the new
/// session), so requests in flight succeed; after that it is a reuse. The
/// new session expires when the old one would have, or after `ttl` if that
/// is sooner: a rotation never extends a session's life. Rotating the old
/// token again within its grace hands back the same successor (or, if that
/// was rotated on, the family's newest): two tabs refreshing at once get one
/// token, and a copy of the old token never starts a branch of its own.
/// A bad token is refused exactly as authenticate refuses it.
#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn rotate(token: Option<RawText>, ttl: default!(Option<Interval>, "NULL")) -> String {
    refuse_on_standby("rotate");
    let presented_token = raw_text::bytes(&token);
    let found = auth::find(presented_token).unwrap_or_else(|why| auth::refuse(why));
    // found, so it decodes
    let (_, secret) = presented_token
        .and_then(|bytes| settings::with_token_prefix(|prefix| token::id_and_secret(prefix, bytes)))
        .unwrap_or_else(|| auth::refuse(Refusal::Malformed));
    let user_id = found.session.user_id();
    let expires_at = match issue::checked_ttl(ttl) {
        Some(ttl) => {
            let wanted = issue::expiry(found.now, ttl);
            Some(found.expires_at.map_or(wanted, |old| old.min(wanted)))
        }
        None => found.expires_at,
    };
    let (data, family, successor) = Spi::connect_mut(|client| {
        crate::user_lock::lock_user(&user_id);
        let rotate = plans::kept(client, &ROTATE_SESSION);
        let args = [found.presented.into(), plans::timestamptz(found.now)];
        let rotated = plans::or_raise(client.update(rotate, Some(1), &args));
        if rotated.is_empty() {
            // revoked by another transaction since we read it
            auth::refuse(Refusal::UnknownId);
        }
        let row = rotated.first();
        let rotated_at = plans::or_raise(row.get::<TimestampWithTimeZone>(3))
            .map_or(found.now, |at| at.into_inner());
        let family = plans::or_raise(row.get::<i64>(2)).unwrap_or(found.presented);
        // rotated before this call: already when we read it, or by another
        // request while we waited for the lock
        let rotated_before = !plans::or_raise(row.get::<bool>(4)).unwrap_or(false);
        if rotated_before {
            // past the grace: refused; a reuse only if the token was already
            // rotated away when we read it (else two requests raced)
            if !families::within_grace(rotated_at, found.now) {
                if found.presented == found.id {
                    auth::refuse(Refusal::UnknownId);
                }
                families::reuse(family, found.presented);
                auth::refuse(Refusal::Reuse);
            }
            // within it: the successor that rotation made, handed back
            let Some((id, secret)) =
                families::follow_successors(client, family, found.presented, secret, rotated_at)
            else {
                auth::refuse(Refusal::UnknownId)
            };
            return (None, family, Err((id, secret)));
        }
        let data = plans::or_raise(row.get::<RawJsonb>(1));
        if !families::remember_rotations(client, family, found.now) {
            // refreshed faster than clients do: a thief flushing a copy
            events::log_server_only(&format!(
                "family of session {family} rotated more than {} times within an hour: \
                 taken for an attempt to flush a copy out of its memory, and revoked",
                families::MOST_REMEMBERED
            ));
            families::reuse(family, found.presented);
            auth::refuse(Refusal::Reuse);
        }
        let key = families::rotation_key(client, rotated_at, true)
            .unwrap_or_else(|| error!("castle_sessions: no rotation key could be made"));
        let successor =
            token::successor_secret(&key, found.presented, &secret, settings::secret_size());
        (data, family, Ok(successor))
    });
    let successor = match successor {
        Ok(successor) => successor,
        Err((id, secret)) => {
            return settings::with_token_prefix(|prefix| token::encode(prefix, id, &secret));
        }
    };
    let (id, token) = issue::create_with_secret(
        &user_id,
        found.now,
        expires_at,
        data,
        Some(family),
        successor,
    );
    events::rotated(found.presented, id, &user_id);
    token
}

/// Deletes one batch of dead sessions (expired, or idle past castle.idle_timeout)
/// and returns how many. Rows in use elsewhere are skipped, not waited for; for
/// a large backlog, `CALL castle.prune_all()` commits between batches.
#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn prune(batch_size: default!(i32, 10000)) -> i64 {
    refuse_on_standby("prune");
    if batch_size <= 0 {
        ereport!(
            ERROR,
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            "batch_size must be positive"
        );
    }
    Spi::connect_mut(|client| {
        let prune = plans::kept(client, &PRUNE_SESSIONS);
        let deleted = plans::returned_ids(plans::or_raise(client.update(
            prune,
            None,
            &[batch_size.into(), settings::idle_timeout_seconds().into()],
        )));
        events::pruned(&deleted);
        deleted.len() as i64
    })
}

/// The incident switch: revokes every session whose token was issued before
/// `issued_before` (NULL, the default: every session), at once, and returns
/// how many. Not SECURITY DEFINER: it runs with the caller's rights, so only
/// the table's owner or a superuser can, and no application role can undo
/// it (a deleted session has no way back). It first takes castle.sessions in
/// SHARE ROW EXCLUSIVE mode, which waits for every sign-in, rotation and
/// `used_at` batch in flight, so that no token being issued escapes, and
/// holds new ones back until the caller commits; requests that only read go
/// on. Set lock_timeout to bound the wait.
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn revoke_everything(issued_before: default!(Option<TimestampWithTimeZone>, "NULL")) -> i64 {
    refuse_on_standby("revoke_everything");
    if unsafe { pg_sys::XactIsoLevel } >= pg_sys::XACT_REPEATABLE_READ as i32 {
        // its snapshot would predate the lock, and miss what committed meanwhile
        ereport!(
            ERROR,
            PgSqlErrorCode::ERRCODE_INVALID_TRANSACTION_STATE,
            "castle.revoke_everything must run at READ COMMITTED",
            "A snapshot taken before it waited for sign-ins in flight would miss their sessions."
        );
    }
    let count = Spi::connect_mut(|client| {
        let lock = plans::kept(client, &LOCK_OUT_WRITERS);
        plans::or_raise(client.update(lock, None, &[]));
        let revoke = plans::kept(client, &REVOKE_EVERYTHING);
        let rows = plans::or_raise(client.update(revoke, Some(1), &[issued_before.into()]));
        // nothing rotated before it derives a token after it
        families::forget_all_keys(client);
        plans::or_raise(rows.first().get::<i64>(1)).unwrap_or(0)
    });
    events::revoked_everything(count);
    count
}

/// Deletes session `id` and its family, if it belongs to `only_user` (when
/// given), under the user's lock (`families::delete`).
fn delete_family(id: i64, only_user: Option<&[u8]>, kind: Revocation) -> bool {
    let deleted = Spi::connect_mut(|client| families::delete(client, id, only_user));
    events::revoked(kind, &deleted, None);
    !deleted.is_empty()
}

fn revoke_all(user_id: Vec<u8>, except_session: Option<i64>, kind: Revocation) -> i64 {
    refuse_on_standby("revoke_all");
    let deleted = Spi::connect_mut(|client| {
        // after any sign-in of the user in progress, so that it is revoked too
        crate::user_lock::lock_user(&user_id);
        let delete = plans::kept(client, &DELETE_USER_SESSIONS);
        let deleted = plans::returned_ids(plans::or_raise(client.update(
            delete,
            None,
            &[plans::text(&user_id), except_session.into()],
        )));
        if let Some(spared) = except_session {
            let end = plans::kept(client, &END_GRACES);
            plans::or_raise(client.update(end, None, &[spared.into(), plans::text(&user_id)]));
        }
        deleted
    });
    events::revoked(kind, &deleted, Some(&user_id));
    deleted.len() as i64
}

/// A castle.session row as SPI hands it over (the device list is not a hot path).
type Session = pgrx::composite_type!('static, "castle.session");

fn sessions_of(user_id: Vec<u8>) -> SetOfIterator<'static, Session> {
    let sessions: Vec<Session> = Spi::connect(|client| {
        let live = plans::kept(client, &LIVE_SESSIONS);
        let rows = plans::or_raise(client.select(
            live,
            None,
            &[
                plans::text(&user_id),
                settings::idle_timeout_seconds().into(),
                plans::timestamptz(store::call_time()),
            ],
        ));
        rows.filter_map(|row| plans::or_raise(row.get::<Session>(1)))
            .collect()
    });
    SetOfIterator::new(sessions)
}
