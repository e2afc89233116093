//! The boundary guard: every `extern "C"` function runs its body through [`guard`], which turns
//! errors and panics into an `AceStatus` and records the thread-local last error.

use std::cell::{Cell, RefCell};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Once;

use super::status::AceStatus;
use crate::error::Result;

thread_local! {
    static LAST_ERROR: RefCell<Option<(AceStatus, String)>> = const { RefCell::new(None) };
    /// How many guarded calls are running on this thread (a panic inside one is ours to report).
    static GUARD_DEPTH: Cell<u32> = const { Cell::new(0) };
    /// Where the last panic caught by the guard on this thread happened.
    static PANIC_LOCATION: RefCell<Option<String>> = const { RefCell::new(None) };
}

static QUIET_HOOK: Once = Once::new();

/// Wraps the process's panic hook once: a panic inside a guarded call is turned into a status and
/// message, so it must not also be printed (with a backtrace under `RUST_BACKTRACE`) to the host's
/// stderr; only its location is kept for the message. Panics anywhere else go to the previous hook.
fn install_quiet_hook() {
    QUIET_HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if GUARD_DEPTH.with(|d| d.get()) > 0 {
                let at = info.location().map(|l| format!("{}:{}", l.file(), l.line()));
                PANIC_LOCATION.with(|p| *p.borrow_mut() = at);
            } else {
                previous(info);
            }
        }));
    });
}

/// Marks this thread as inside a guarded call for as long as it lives (also when unwinding).
struct Depth;

impl Depth {
    fn enter() -> Self {
        GUARD_DEPTH.with(|d| d.set(d.get() + 1));
        Depth
    }
}

impl Drop for Depth {
    fn drop(&mut self) {
        GUARD_DEPTH.with(|d| d.set(d.get().saturating_sub(1)));
    }
}

/// Runs `body`, catching panics. On success the thread's last error is cleared; on failure it is
/// set to the error's status and message.
pub(crate) fn guard<F>(body: F) -> AceStatus
where
    F: FnOnce() -> Result<()>,
{
    install_quiet_hook();
    let outcome = {
        let _depth = Depth::enter();
        catch_unwind(AssertUnwindSafe(body))
    };
    let (status, message) = match outcome {
        Ok(Ok(())) => {
            set_last_error(None);
            return AceStatus::Ok;
        }
        Ok(Err(err)) => (AceStatus::from(err.kind), err.message),
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic payload".to_string());
            let at = PANIC_LOCATION.with(|p| p.borrow_mut().take());
            let at = at.map(|l| format!(" at {l}")).unwrap_or_default();
            (AceStatus::Panic, format!("internal error (panic caught at the ABI boundary{at}): {what}"))
        }
    };
    set_last_error(Some((status, message)));
    status
}

fn set_last_error(value: Option<(AceStatus, String)>) {
    LAST_ERROR.with(|slot| *slot.borrow_mut() = value);
}

/// The last error of this thread, if the most recent guarded call failed.
pub(crate) fn last_error() -> Option<(AceStatus, String)> {
    LAST_ERROR.with(|slot| slot.borrow().clone())
}

/// Runs `body` through the guard, for tests of the guard itself (not part of the C ABI).
#[doc(hidden)]
pub fn guard_for_tests(body: impl FnOnce() -> Result<()>) -> AceStatus {
    guard(body)
}
