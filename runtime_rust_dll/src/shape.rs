//! Shapes of the flat float32 buffers the core works on.

use crate::error::{Error, Result};

/// Number of elements of a shape; a zero dimension or an overflowing product is an error naming
/// `what` (the buffer or argument the shape belongs to).
pub fn numel(dims: &[usize], what: &str) -> Result<usize> {
    let mut n: usize = 1;
    for (i, &d) in dims.iter().enumerate() {
        if d == 0 {
            return Err(Error::length_mismatch(format!("{what}: dimension {i} is zero")));
        }
        n = n
            .checked_mul(d)
            .ok_or_else(|| Error::length_mismatch(format!("{what}: shape {dims:?} overflows")))?;
    }
    Ok(n)
}
