//! The boundary guard: every `extern "C"` function runs its body through [`guard`], which turns
//! errors and panics into an `AceStatus` and records the thread-local last error.

use std::cell::RefCell;
use std::panic::{catch_unwind, AssertUnwindSafe};

use super::status::AceStatus;
use crate::error::Result;

thread_local! {
    static LAST_ERROR: RefCell<Option<(AceStatus, String)>> = const { RefCell::new(None) };
}

/// Runs `body`, catching panics. On success the thread's last error is cleared; on failure it is
/// set to the error's status and message.
pub(crate) fn guard<F>(body: F) -> AceStatus
where
    F: FnOnce() -> Result<()>,
{
    let outcome = catch_unwind(AssertUnwindSafe(body));
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
            (AceStatus::Panic, format!("internal error (panic caught at the ABI boundary): {what}"))
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
