//! Memory sizes as users write them: `64M`, `1G`, `512MiB`, `8388608`.

use eremite_interface::layout::{LARGE_PAGE_SIZE, MAX_MEMORY, MIN_MEMORY};

/// A memory size that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    /// Not a number with an optional unit.
    #[error("`{0}` is not a size (write e.g. 64M, 1G or 512MiB)")]
    Syntax(String),
    /// Outside the supported range.
    #[error("{0} bytes is outside the supported {MIN_MEMORY}..={MAX_MEMORY} bytes (8M..=31G)")]
    Range(u64),
    /// Not a multiple of 2 MiB.
    #[error("{0} bytes is not a multiple of 2 MiB")]
    Alignment(u64),
}

/// Parse a memory size: a decimal number, optionally followed by `K`, `M`,
/// `G` (binary multiples; `KiB`, `MiB`, `GiB` and `KB`/`MB`/`GB` mean the
/// same), and check it is usable as guest memory.
pub fn parse_memory_size(text: &str) -> Result<u64, SizeError> {
    let syntax = || SizeError::Syntax(text.to_owned());
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let number: u64 = number.parse().map_err(|_| syntax())?;
    let shift = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        _ => return Err(syntax()),
    };
    let bytes = number
        .checked_mul(1 << shift)
        .ok_or(SizeError::Range(u64::MAX))?;
    check_memory_size(bytes)?;
    Ok(bytes)
}

pub(crate) fn check_memory_size(bytes: u64) -> Result<(), SizeError> {
    if !(MIN_MEMORY..=MAX_MEMORY).contains(&bytes) {
        return Err(SizeError::Range(bytes));
    }
    if !bytes.is_multiple_of(LARGE_PAGE_SIZE) {
        return Err(SizeError::Alignment(bytes));
    }
    Ok(())
}

const _: () = assert!(
    MIN_MEMORY == 8 << 20 && MAX_MEMORY == 31 << 30,
    "the message above"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_are_binary() {
        assert_eq!(parse_memory_size("64M"), Ok(64 << 20));
        assert_eq!(parse_memory_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_memory_size("1G"), Ok(1 << 30));
        assert_eq!(parse_memory_size("1gib"), Ok(1 << 30));
        assert_eq!(parse_memory_size("16384K"), Ok(16 << 20));
        assert_eq!(parse_memory_size("8388608"), Ok(8 << 20));
    }

    #[test]
    fn bad_sizes_are_refused_with_a_reason() {
        assert!(matches!(
            parse_memory_size("lots"),
            Err(SizeError::Syntax(_))
        ));
        assert!(matches!(
            parse_memory_size("64X"),
            Err(SizeError::Syntax(_))
        ));
        assert!(matches!(parse_memory_size(""), Err(SizeError::Syntax(_))));
        assert!(matches!(
            parse_memory_size("-1M"),
            Err(SizeError::Syntax(_))
        ));
        assert_eq!(parse_memory_size("4M"), Err(SizeError::Range(4 << 20)));
        assert_eq!(parse_memory_size("4G"), Ok(4 << 30));
        assert_eq!(parse_memory_size("31G"), Ok(MAX_MEMORY));
        assert_eq!(parse_memory_size("32G"), Err(SizeError::Range(32 << 30)));
        assert_eq!(
            parse_memory_size("99999999999999999999G").map_err(|_| ()),
            Err(())
        );
        assert_eq!(
            parse_memory_size("18446744073709551615G"),
            Err(SizeError::Range(u64::MAX))
        );
        assert_eq!(parse_memory_size("9M"), Err(SizeError::Alignment(9 << 20)));
    }
}
