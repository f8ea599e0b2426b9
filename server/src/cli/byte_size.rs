//! Byte sizes on the command line: `268435456`, `256MiB`, `4GiB`, `512MB`.

/// Parses a byte count with an optional binary (KiB/MiB/GiB/TiB) or decimal
/// (KB/MB/GB/TB) suffix; a bare `K`/`M`/`G`/`T` is binary.
pub fn parse_byte_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let unit = unit.trim();
    let multiplier: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => {
            return Err(format!(
                "unknown size unit `{unit}` in `{s}` (use e.g. 268435456, 256MiB or 4GiB)"
            ))
        }
    };
    let value: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size (use e.g. 268435456, 256MiB or 4GiB)"))?;
    let bytes = value * multiplier as f64;
    if !bytes.is_finite() || bytes < 1.0 || bytes > u64::MAX as f64 {
        return Err(format!("`{s}` is not a usable size"));
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_suffixed_sizes() {
        assert_eq!(parse_byte_size("268435456"), Ok(268_435_456));
        assert_eq!(parse_byte_size("256MiB"), Ok(256 << 20));
        assert_eq!(parse_byte_size("256M"), Ok(256 << 20));
        assert_eq!(parse_byte_size("4GiB"), Ok(4 << 30));
        assert_eq!(parse_byte_size("1.5GiB"), Ok(3 << 29));
        assert_eq!(parse_byte_size("512MB"), Ok(512_000_000));
        assert_eq!(parse_byte_size(" 2 gib "), Ok(2 << 30));
    }

    #[test]
    fn refuses_nonsense() {
        for bad in ["", "abc", "12XB", "-5", "0", "MiB", "1e999"] {
            assert!(parse_byte_size(bad).is_err(), "{bad}");
        }
    }
}
