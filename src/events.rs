//! What happens to sessions, told three ways: counted (`stats`), logged when
//! castle.log_events is on, and, for every session that stops working, sent
//! to caches as `NOTIFY castle_revocations` when castle.notify_revocations is
//! on. Session ids and user ids only: never a token, secret or hash.

use pgrx::pg_sys;
use pgrx::prelude::*;

use crate::settings;
use crate::stats::{self, Counter};

/// How sessions were revoked: the counters' kinds and the payload's event.
#[derive(Clone, Copy)]
pub enum Revocation {
    /// castle.revoke(token)
    Token,
    /// castle.revoke_session(id), castle.revoke_own_session(id)
    Id,
    /// castle.revoke_all, castle.revoke_other_sessions
    User,
    /// castle.revoke_sessions_trigger, when a user row is deleted
    Trigger,
}

impl Revocation {
    fn name(self) -> &'static str {
        match self {
            Revocation::Token => "revoke",
            Revocation::Id => "revoke_session",
            Revocation::User => "revoke_all",
            Revocation::Trigger => "trigger",
        }
    }
}

/// Most session ids one notification names; beyond them it says how many,
/// and a cache drops everything (a payload must stay under 8000 bytes, and
/// 100,000 revocations must not be 100,000 notifications).
pub const MOST_IDS_NOTIFIED: usize = 100;

pub fn created(id: i64, user_id: &[u8]) {
    stats::add(Counter::SessionsCreated, 1);
    log(|| format!("session {id} created for user {}", shown(user_id)));
}

pub fn rotated(old_id: i64, new_id: i64, user_id: &[u8]) {
    stats::add(Counter::Rotations, 1);
    log(|| {
        format!(
            "session {old_id} rotated to session {new_id} for user {}",
            shown(user_id)
        )
    });
    notify("rotate", None, &[old_id]);
}

/// Sessions revoked by a call; `user_id` when it revoked a user's sessions.
pub fn revoked(kind: Revocation, ids: &[i64], user_id: Option<&[u8]>) {
    let counter = match kind {
        Revocation::Token => Counter::RevokedByToken,
        Revocation::Id => Counter::RevokedById,
        Revocation::User => Counter::RevokedByUser,
        Revocation::Trigger => Counter::RevokedByTrigger,
    };
    stats::add(counter, ids.len() as u64);
    if ids.is_empty() {
        return;
    }
    match user_id {
        Some(user_id) => {
            log(|| {
                format!(
                    "{} sessions of user {} revoked ({}): {}",
                    ids.len(),
                    shown(user_id),
                    kind.name(),
                    listed(ids)
                )
            });
            notify(kind.name(), Some(user_id), ids);
        }
        None => {
            log(|| format!("sessions revoked ({}): {}", kind.name(), listed(ids)));
            notify(kind.name(), None, ids);
        }
    }
}

pub fn trimmed(ids: &[i64], user_id: &[u8]) {
    stats::add(Counter::Trimmed, ids.len() as u64);
    if !ids.is_empty() {
        log(|| {
            format!(
                "sessions of user {} trimmed: {}",
                shown(user_id),
                listed(ids)
            )
        });
        notify("trim", None, ids);
    }
}

pub fn pruned(ids: &[i64]) {
    stats::add(Counter::Pruned, ids.len() as u64);
    if !ids.is_empty() {
        log(|| format!("{} dead sessions pruned", ids.len()));
        notify("prune", None, ids);
    }
}

/// A rotated token came back after its grace and its family was revoked
/// (`ids` empty: an earlier presentation of it already had). Logged whatever
/// castle.log_events says: it is the sign of a stolen token.
pub fn reuse_revoked(presented: i64, ids: &[i64]) {
    if ids.is_empty() {
        return;
    }
    stats::add(Counter::ReusesDetected, 1);
    log_server_only(&format!(
        "reuse of a rotated token: family of session {presented} revoked"
    ));
    log(|| format!("sessions revoked (family): {}", listed(ids)));
    notify("family", None, ids);
}

/// castle.revoke_everything: counted with the revocations by user, logged
/// whatever castle.log_events says (it is an incident), and notified as
/// `{"event":"revoke_everything","count":N,"all":true}`: a cache drops all.
pub fn revoked_everything(count: i64) {
    stats::add(Counter::RevokedByUser, count as u64);
    log_server_only(&format!(
        "revoke_everything: {count} sessions revoked, every token issued before it refused"
    ));
    if settings::notify_revocations() && count > 0 {
        send(format!(r#"{{"event":"revoke_everything","count":{count},"all":true}}"#).as_bytes());
    }
}

fn log(message: impl FnOnce() -> String) {
    if settings::log_events() {
        log_server_only(&message());
    }
}

/// `castle_sessions: {message}` to the server log only, never the client,
/// whatever its client_min_messages.
pub fn log_server_only(message: &str) {
    without_context(|| {
        pgrx::pg_sys::panic::ErrorReport::new(
            PgSqlErrorCode::ERRCODE_SUCCESSFUL_COMPLETION,
            format!("castle_sessions: {message}"),
            "castle_sessions::events",
        )
        .report(PgLogLevel::LOG_SERVER_ONLY)
    });
}

/// Runs `report` — a message that returns, below ERROR — with no context
/// lines and no statement: the caller's portal would add its bound
/// parameters (log_parameter_max_length_on_error, which any role may set),
/// and one of them may be a token. Both are restored after.
pub fn without_context(report: impl FnOnce()) {
    unsafe {
        let context = pg_sys::error_context_stack;
        let statement = pg_sys::debug_query_string;
        pg_sys::error_context_stack = std::ptr::null_mut();
        pg_sys::debug_query_string = std::ptr::null();
        report();
        pg_sys::error_context_stack = context;
        pg_sys::debug_query_string = statement;
    }
}

/// A user id as logged: its text, in quotes, control characters escaped.
fn shown(user_id: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(user_id))
}

/// Ids as logged: the first MOST_IDS_NOTIFIED, and how many more.
fn listed(ids: &[i64]) -> String {
    let shown: Vec<String> = ids
        .iter()
        .take(MOST_IDS_NOTIFIED)
        .map(i64::to_string)
        .collect();
    match ids.len().saturating_sub(MOST_IDS_NOTIFIED) {
        0 => shown.join(", "),
        more => format!("{} and {more} more", shown.join(", ")),
    }
}

/// `{"event":…,"sessions":[…]}`, with `"user":"…"` when a user's sessions
/// were revoked (a cache may drop the user's entries, or the sessions
/// named); past MOST_IDS_NOTIFIED sessions, or for a user id too long for a
/// payload (then `"user":null`), `"count":N,"all":true` instead of the ids.
pub fn payload(event: &str, user_id: Option<&[u8]>, ids: &[i64]) -> Vec<u8> {
    let mut out = format!(r#"{{"event":"{event}""#).into_bytes();
    let mut all = ids.len() > MOST_IDS_NOTIFIED;
    if let Some(user_id) = user_id {
        let user = json_string(user_id);
        all |= user.len() > 1000;
        out.extend_from_slice(br#","user":"#);
        out.extend_from_slice(if user.len() > 1000 { b"null" } else { &user });
    }
    let rest = if all {
        format!(r#","count":{},"all":true}}"#, ids.len())
    } else {
        let ids: Vec<String> = ids.iter().map(i64::to_string).collect();
        format!(r#","sessions":[{}]}}"#, ids.join(","))
    };
    out.extend_from_slice(rest.as_bytes());
    out
}

/// A JSON string of text in the database's encoding: quote, backslash and
/// control bytes escaped, every other byte as it is (a non-ASCII byte is
/// never a quote or a backslash in any server encoding).
fn json_string(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + 2);
    out.push(b'"');
    for &b in text {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b if b < 0x20 => out.extend_from_slice(format!("\\u{b:04x}").as_bytes()),
            b => out.push(b),
        }
    }
    out.push(b'"');
    out
}

fn notify(event: &str, user_id: Option<&[u8]>, ids: &[i64]) {
    if settings::notify_revocations() && !ids.is_empty() {
        send(&payload(event, user_id, ids));
    }
}

/// pg_notify: PostgreSQL delivers it when the transaction commits, and
/// drops it when it aborts.
fn send(payload: &[u8]) {
    unsafe {
        pgrx::direct_function_call::<pg_sys::Datum>(
            pg_sys::pg_notify,
            &[
                crate::raw_text::text_datum(b"castle_revocations").into(),
                crate::raw_text::text_datum(payload).into(),
            ],
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_name_sessions_until_too_many() {
        assert_eq!(
            payload("trim", None, &[1, 2]),
            br#"{"event":"trim","sessions":[1,2]}"#
        );
        let many: Vec<i64> = (1..=101).collect();
        assert_eq!(
            payload("prune", None, &many),
            br#"{"event":"prune","count":101,"all":true}"#
        );
        assert_eq!(
            payload("revoke_all", Some(b"a\"b\\\n\xe9"), &[7]),
            b"{\"event\":\"revoke_all\",\"user\":\"a\\\"b\\\\\\u000a\xe9\",\"sessions\":[7]}"
        );
    }
}
