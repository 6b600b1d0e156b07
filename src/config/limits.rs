//! The allowed range of every numeric option, in one place: the command line's parsers and
//! [`super::RunConfig::validate`] both check values here, so a bad value fails before anything is
//! written, with the option, the value and the range named.
use crate::error::{Error, Result};

/// A range a number must lie in.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Range {
    /// A finite number above 0.
    Positive,
    /// A finite number of at least 0.
    NonNegative,
    /// A fraction in [0, 1].
    Unit,
    /// A fraction in [0, 1).
    Dropout,
    /// A fraction strictly between 0 and 1.
    OpenUnit,
    /// A whole number of at least this.
    AtLeast(u64),
    /// A whole number in [lo, hi].
    Between(u64, u64),
}

impl Range {
    pub fn describe(self) -> String {
        match self {
            Range::Positive => "a finite number above 0".into(),
            Range::NonNegative => "a finite number of at least 0".into(),
            Range::Unit => "a number in [0, 1]".into(),
            Range::Dropout => "a number in [0, 1)".into(),
            Range::OpenUnit => "a number strictly between 0 and 1".into(),
            Range::AtLeast(n) => format!("a whole number of at least {n}"),
            Range::Between(lo, hi) => format!("a whole number from {lo} to {hi}"),
        }
    }

    pub fn holds_f64(self, v: f64) -> bool {
        v.is_finite()
            && match self {
                Range::Positive => v > 0.0,
                Range::NonNegative => v >= 0.0,
                Range::Unit => (0.0..=1.0).contains(&v),
                Range::Dropout => (0.0..1.0).contains(&v),
                Range::OpenUnit => v > 0.0 && v < 1.0,
                Range::AtLeast(n) => v >= n as f64 && v.fract() == 0.0,
                Range::Between(lo, hi) => v >= lo as f64 && v <= hi as f64 && v.fract() == 0.0,
            }
    }
}

/// The range of a numeric option (by its long name, `--lr` or `lr`), if it has one.
pub fn range_of(option: &str) -> Option<Range> {
    let name = option.trim_start_matches("--").replace('_', "-");
    Some(match name.as_str() {
        "lr" | "alpha-lr" | "clip-norm" | "beta" | "lora-alpha" | "max-minutes" | "cells-end-by" => {
            Range::Positive
        }
        "weight-decay" => Range::NonNegative,
        "warmup-ratio" => Range::Unit,
        "lora-dropout" => Range::Dropout,
        "budget" => Range::OpenUnit,
        "epochs" | "retrain-epochs" | "search-epochs" => Range::Between(1, 1_000_000),
        "max-steps" | "steps" => Range::Between(1, 1_000_000_000),
        "batch-size" | "eval-batch-size" | "search-batch-size" | "seq-len" => Range::Between(1, 1 << 24),
        "lora-r" => Range::Between(1, 1 << 16),
        "pad-to-multiple" => Range::Between(1, 1 << 16),
        "eval-every" | "checkpoint-every" | "max-train-examples" | "max-eval-examples" | "budget-params"
        | "parallel" => Range::AtLeast(1),
        "threads" => Range::Between(1, 4096),
        "max-length" => Range::Between(2, 1 << 20),
        "length-buckets" | "warmup" | "seed" => Range::AtLeast(0),
        "order" => Range::Between(1, 2),
        "nproc" | "nnodes" => Range::Between(1, 4096),
        "node-rank" => Range::Between(0, 4095),
        "master-port" => Range::Between(1, 65535),
        _ => return None,
    })
}

/// The error for `value` of `option` outside `range`.
pub fn out_of_range(option: &str, value: &str, range: Range) -> Error {
    let name = option.trim_start_matches("--").replace('_', "-");
    Error::config(format!("--{name}"), format!("`{value}` is out of range: it must be {}", range.describe()))
}

/// Checks a float option.
pub fn check_f64(option: &str, v: f64) -> Result<f64> {
    match range_of(option) {
        Some(r) if !r.holds_f64(v) => Err(out_of_range(option, &v.to_string(), r)),
        _ => Ok(v),
    }
}

/// Checks a whole-number option.
pub fn check_u64(option: &str, v: u64) -> Result<u64> {
    match range_of(option) {
        Some(r) if !r.holds_f64(v as f64) => Err(out_of_range(option, &v.to_string(), r)),
        _ => Ok(v),
    }
}

/// Parses and checks `text` as the value of `option` (what the command line's parsers call): a float
/// for float ranges, a whole number otherwise.
pub fn parse_number(option: &str, text: &str) -> Result<f64> {
    let range = range_of(option);
    let whole = matches!(range, Some(Range::AtLeast(_) | Range::Between(..)));
    let v: f64 = if whole {
        text.trim()
            .parse::<u64>()
            .map(|v| v as f64)
            .map_err(|_| out_of_range(option, text, range.unwrap_or(Range::AtLeast(0))))?
    } else {
        text.trim()
            .parse::<f64>()
            .map_err(|_| out_of_range(option, text, range.unwrap_or(Range::Positive)))?
    };
    match range {
        Some(r) if !r.holds_f64(v) => Err(out_of_range(option, text, r)),
        _ => Ok(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_refuse_nan_infinities_zero_and_negatives() {
        for bad in ["nan", "inf", "-inf", "0", "-1", "abc"] {
            assert!(parse_number("--lr", bad).is_err(), "lr {bad}");
        }
        assert!(parse_number("--lr", "1e30").is_ok(), "a huge learning rate is for the guard to stop");
        for bad in ["0", "-1", "1.5", "nan", "x", "18446744073709551616"] {
            assert!(parse_number("--batch-size", bad).is_err(), "batch-size {bad}");
        }
        assert!(parse_number("--weight-decay", "0").is_ok());
        assert!(parse_number("--warmup-ratio", "1.5").is_err());
        assert!(parse_number("--budget", "1").is_err());
        assert!(parse_number("--max-length", "1").is_err());
        let e = parse_number("--lr", "nan").unwrap_err().to_string();
        assert!(e.contains("--lr") && e.contains("nan") && e.contains("above 0"), "{e}");
    }
}
