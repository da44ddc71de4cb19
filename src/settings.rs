//! Every `castle.*` setting, in one place. All are superuser-set (SUSET): the
//! application's roles call the functions, and a compromised application must
//! not be able to undo what the DBA set — bring back an old token prefix after
//! an incident, lift the limit or the idle timeout, shorten secrets, or turn
//! used_at writes into a write per request. A superuser's ALTER ROLE/DATABASE
//! … SET still applies to any role. All are read at
//! call time, so SET, ALTER ROLE/DATABASE … SET and postgresql.conf all apply
//! as PostgreSQL users expect; a bad value is refused when it is set, with PostgreSQL's own message.

use std::ffi::{CStr, CString};

use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use pgrx::pg_sys;

use crate::token::{MAX_SECRET_SIZE, MIN_SECRET_SIZE};

pub static MAX_SESSIONS: GucSetting<i32> = GucSetting::<i32>::new(3);
pub static TOKEN_PREFIX: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"oat_"));
pub static SECRET_SIZE: GucSetting<i32> = GucSetting::<i32>::new(64);
pub static INVALID_MESSAGE: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"Not a valid session"));
pub static DEFAULT_TTL: GucSetting<i32> = GucSetting::<i32>::new(0);
pub static TOUCH_INTERVAL: GucSetting<i32> = GucSetting::<i32>::new(60);
pub static IDLE_TIMEOUT: GucSetting<i32> = GucSetting::<i32>::new(0);
pub static ROTATE_GRACE: GucSetting<i32> = GucSetting::<i32>::new(10);
pub static LOG_EVENTS: GucSetting<bool> = GucSetting::<bool>::new(false);
pub static NOTIFY_REVOCATIONS: GucSetting<bool> = GucSetting::<bool>::new(false);

/// The longest prefix we accept; tokens stay well under an HTTP header's limits.
const MAX_PREFIX_LEN: usize = 64;

pub fn register() {
    GucRegistry::define_int_guc(
        c"castle.max_sessions",
        c"Most sessions one user may hold; the oldest are trimmed. 0 = unlimited.",
        c"",
        &MAX_SESSIONS,
        0,
        i32::MAX,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"castle.secret_size",
        c"Random characters in a new token's secret (6 bits each; at least 22 = 132 bits).",
        c"",
        &SECRET_SIZE,
        MIN_SECRET_SIZE as i32,
        MAX_SECRET_SIZE as i32,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"castle.default_ttl",
        c"Lifetime of a session created without a ttl. 0 = never expires.",
        c"",
        &DEFAULT_TTL,
        0,
        i32::MAX,
        GucContext::Suset,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"castle.touch_interval",
        c"How often a successful authenticate or verify writes used_at. 0 = every call, -1 = never.",
        c"",
        &TOUCH_INTERVAL,
        -1,
        i32::MAX,
        GucContext::Suset,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"castle.idle_timeout",
        c"Refuse a session unused for longer than this. 0 = no idle timeout.",
        c"",
        &IDLE_TIMEOUT,
        0,
        i32::MAX,
        GucContext::Suset,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"castle.rotate_grace",
        c"How long a token castle.rotate replaced keeps working, for requests in flight. After it, the token is a reuse.",
        c"0 = refused at once. A reuse revokes every session of the sign-in.",
        &ROTATE_GRACE,
        0,
        i32::MAX,
        GucContext::Suset,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_bool_guc(
        c"castle.log_events",
        c"Log each session created, rotated, revoked, trimmed or pruned, and each reuse: ids only, never a token.",
        c"",
        &LOG_EVENTS,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"castle.notify_revocations",
        c"NOTIFY castle_revocations, after commit, of every session revoked, rotated, trimmed or pruned.",
        c"",
        &NOTIFY_REVOCATIONS,
        GucContext::Suset,
        GucFlags::default(),
    );
    // SAFETY: the hooks below cannot panic: they only inspect a C string.
    unsafe {
        GucRegistry::define_string_guc_with_hooks(
            c"castle.token_prefix",
            c"Text every token starts with; up to 64 characters from [A-Za-z0-9_-].",
            c"",
            &TOKEN_PREFIX,
            GucContext::Suset,
            GucFlags::default(),
            Some(check_prefix),
            None,
            None,
        );
        GucRegistry::define_string_guc_with_hooks(
            c"castle.invalid_message",
            c"The one message every refused token gets (SQLSTATE 28000).",
            c"",
            &INVALID_MESSAGE,
            GucContext::Suset,
            GucFlags::default(),
            Some(check_message),
            None,
            None,
        );
    }
    // Refuse typos such as castle.max_session instead of keeping them as placeholders.
    unsafe { pg_sys::MarkGUCPrefixReserved(c"castle".as_ptr()) };
}

pub fn max_sessions() -> i64 {
    i64::from(MAX_SESSIONS.get())
}

pub fn secret_size() -> usize {
    SECRET_SIZE.get() as usize
}

pub fn default_ttl_seconds() -> i32 {
    DEFAULT_TTL.get()
}

pub fn touch_interval_seconds() -> i32 {
    TOUCH_INTERVAL.get()
}

pub fn idle_timeout_seconds() -> i32 {
    IDLE_TIMEOUT.get()
}

pub fn rotate_grace_seconds() -> i32 {
    ROTATE_GRACE.get()
}

pub fn log_events() -> bool {
    LOG_EVENTS.get()
}

pub fn notify_revocations() -> bool {
    NOTIFY_REVOCATIONS.get()
}

/// In the reuse worker: the setting the backend that started it had.
pub fn set_for_worker(name: &CStr, on: bool) {
    set_for_worker_value(name, if on { c"on" } else { c"off" });
}

/// In the reuse worker: a setting for the rest of its transaction.
pub fn set_for_worker_value(name: &CStr, value: &CStr) {
    unsafe {
        pg_sys::SetConfigOption(
            name.as_ptr(),
            value.as_ptr(),
            pg_sys::GucContext::PGC_SUSET,
            pg_sys::GucSource::PGC_S_SESSION,
        )
    };
}

/// castle.token_prefix, lent to `f` rather than copied: read on every check.
/// The check hook lets in only ASCII, so it is always valid UTF-8.
pub fn with_token_prefix<R>(f: impl FnOnce(&str) -> R) -> R {
    let raw = unsafe { *TOKEN_PREFIX.as_ptr() };
    let prefix = if raw.is_null() {
        ""
    } else {
        unsafe { CStr::from_ptr(raw) }.to_str().unwrap_or_default()
    };
    f(prefix)
}

pub fn invalid_message() -> String {
    string_setting(&INVALID_MESSAGE)
}

/// Whether `message` is the one a refusal is raised with: as
/// `invalid_message` gives it, without allocating unless the setting is
/// not UTF-8 (for the log hook, which runs while an error is reported).
pub fn is_invalid_message(message: &[u8]) -> bool {
    let raw = unsafe { *INVALID_MESSAGE.as_ptr() };
    !raw.is_null()
        && String::from_utf8_lossy(unsafe { CStr::from_ptr(raw) }.to_bytes()).as_bytes() == message
}

fn string_setting(setting: &GucSetting<Option<CString>>) -> String {
    setting
        .get()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

unsafe fn set_check_detail(detail: &CStr) {
    unsafe { pg_sys::GUC_check_errdetail_string = pg_sys::pstrdup(detail.as_ptr()) };
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn check_prefix(
    newval: *mut *mut std::ffi::c_char,
    _extra: *mut *mut std::ffi::c_void,
    _source: pg_sys::GucSource::Type,
) -> bool {
    let value = unsafe { (*newval).as_ref().map(|p| CStr::from_ptr(p).to_bytes()) };
    let ok = value.is_some_and(|v| {
        v.len() <= MAX_PREFIX_LEN
            && v.iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-')
    });
    if !ok {
        unsafe {
            set_check_detail(c"The prefix must be at most 64 characters from [A-Za-z0-9_-].")
        };
    }
    ok
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn check_message(
    newval: *mut *mut std::ffi::c_char,
    _extra: *mut *mut std::ffi::c_void,
    _source: pg_sys::GucSource::Type,
) -> bool {
    let ok = unsafe { (*newval).as_ref().is_some_and(|p| *p != 0) };
    if !ok {
        unsafe { set_check_detail(c"The message must not be empty.") };
    }
    ok
}
