//! Byte sizes on the command line (`--kv-cache-memory`, `--max-body-bytes`):
//! one parser for every `pagoda` command.
//!
//! The units follow vLLM's `human_readable_int` (vllm/engine/arg_utils.py,
//! the parser of `--kv-cache-memory-bytes`, `--max-num-batched-tokens` and
//! `--max-model-len`): a lowercase `k`/`m`/`g`/`t` is decimal (`1k` = 1000),
//! an uppercase `K`/`M`/`G`/`T` is binary (`1K` = 1024). A trailing `B` does
//! not change that (`512MB` = `512M` = 512 × 2²⁰, `512mb` = 512 × 10⁶), and
//! the IEC names `KiB`/`MiB`/`GiB`/`TiB` (any case) are always binary.

/// Parses a byte count: a number (decimals allowed) with an optional unit,
/// decimal or binary by the case of its letter (see the module docs).
pub fn parse_byte_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let unit = unit.trim();
    let multiplier = unit_multiplier(unit).ok_or_else(|| {
        format!("unknown size unit `{unit}` in `{s}` (use e.g. 268435456, 256MiB, 512m or 4G)")
    })?;
    let value: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size (use e.g. 268435456, 256MiB, 512m or 4G)"))?;
    let bytes = value * multiplier as f64;
    if !bytes.is_finite() || bytes < 1.0 || bytes > u64::MAX as f64 {
        return Err(format!("`{s}` is not a usable size"));
    }
    Ok(bytes as u64)
}

fn unit_multiplier(unit: &str) -> Option<u64> {
    if unit.is_empty() || unit == "B" || unit == "b" {
        return Some(1);
    }
    let mut chars = unit.chars();
    let letter = chars.next()?;
    let rest = chars.as_str();
    let power = match letter.to_ascii_lowercase() {
        'k' => 1,
        'm' => 2,
        'g' => 3,
        't' => 4,
        _ => return None,
    };
    let binary = match rest {
        "" | "B" | "b" => letter.is_ascii_uppercase(),
        _ if rest.eq_ignore_ascii_case("ib") => true,
        _ => return None,
    };
    let base: u64 = if binary { 1024 } else { 1000 };
    Some(base.pow(power))
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
        assert_eq!(parse_byte_size(" 2 gib "), Ok(2 << 30));
        assert_eq!(parse_byte_size("64K"), Ok(64 << 10));
        assert_eq!(parse_byte_size("1T"), Ok(1 << 40));
    }

    #[test]
    fn the_case_of_the_letter_decides_as_in_vllm() {
        // vLLM's human_readable_int: '1k' -> 1,000, '1K' -> 1,024.
        assert_eq!(parse_byte_size("1k"), Ok(1_000));
        assert_eq!(parse_byte_size("1K"), Ok(1_024));
        assert_eq!(parse_byte_size("25.6k"), Ok(25_600));
        assert_eq!(parse_byte_size("512m"), Ok(512_000_000));
        assert_eq!(parse_byte_size("512mb"), Ok(512_000_000));
        assert_eq!(parse_byte_size("512MB"), Ok(512 << 20));
        assert_eq!(parse_byte_size("512M"), Ok(512 << 20));
        assert_eq!(parse_byte_size("2g"), Ok(2_000_000_000));
        assert_eq!(parse_byte_size("2GB"), Ok(2 << 30));
    }

    #[test]
    fn refuses_nonsense() {
        for bad in [
            "", "abc", "12XB", "-5", "0", "MiB", "1e999", "3parsecs", "5Mi", "5kiBs",
        ] {
            assert!(parse_byte_size(bad).is_err(), "{bad}");
        }
    }
}
