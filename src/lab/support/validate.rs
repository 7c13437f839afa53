//! Request validation: every refusal names the field and its allowed range.

use std::fmt::Display;

use super::error::LabError;

/// `value` if it lies in `min..=max`; otherwise INVALID_ARGUMENT naming `field`, the range and,
/// where a flag can raise the cap, that flag.
///
/// # Errors
/// [`LabError::InvalidArgument`] when `value` is out of range.
pub fn in_range<T>(
    field: &'static str,
    value: T,
    min: T,
    max: T,
    cap_flag: Option<&str>,
) -> Result<T, LabError>
where
    T: PartialOrd + Display + Copy,
{
    if value >= min && value <= max {
        return Ok(value);
    }
    let hint = cap_flag.map_or(String::new(), |flag| {
        format!(" (the server's cap; {flag} raises it)")
    });
    Err(LabError::invalid(
        field,
        format!("must be in {min}..={max}{hint}, got {value}"),
    ))
}

/// A rate (probability) in 0.0..=1.0; NaN is refused too.
///
/// # Errors
/// [`LabError::InvalidArgument`] when `value` is not a number in 0..=1.
pub fn rate(field: &'static str, value: f64) -> Result<f64, LabError> {
    if (0.0..=1.0).contains(&value) {
        Ok(value)
    } else {
        Err(LabError::invalid(
            field,
            format!("must be in 0.0..=1.0, got {value}"),
        ))
    }
}

/// An enum field: the known, specified value, or INVALID_ARGUMENT listing the allowed names.
///
/// # Errors
/// [`LabError::InvalidArgument`] for an unknown or unspecified value.
pub fn choice<E>(field: &'static str, raw: i32, allowed: &[E]) -> Result<E, LabError>
where
    E: TryFrom<i32> + Copy + PartialEq + AsName,
{
    match E::try_from(raw) {
        Ok(value) if allowed.contains(&value) => Ok(value),
        _ => {
            let names: Vec<&str> = allowed.iter().map(|e| e.as_name()).collect();
            Err(LabError::invalid(
                field,
                format!("must be one of {}, got {raw}", names.join(", ")),
            ))
        }
    }
}

/// The proto name of an enum value (prost generates `as_str_name`).
pub trait AsName {
    fn as_name(&self) -> &'static str;
}

macro_rules! as_name {
    ($($ty:ty),*) => {$(
        impl AsName for $ty {
            fn as_name(&self) -> &'static str {
                self.as_str_name()
            }
        }
    )*};
}

as_name!(
    crate::proto::CpuMode,
    crate::proto::SleepMode,
    crate::proto::Query
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::SleepMode;

    #[test]
    fn out_of_range_names_field_range_and_flag() {
        let err = in_range("hold_ms", 20_000u32, 0, 10_000, Some("--max-hold-ms")).unwrap_err();
        let message = err.to_string();
        assert!(message.contains("hold_ms"), "{message}");
        assert!(message.contains("0..=10000"), "{message}");
        assert!(message.contains("--max-hold-ms"), "{message}");
    }

    #[test]
    fn rate_refuses_nan() {
        assert!(rate("error_rate", f64::NAN).is_err());
        assert!(rate("error_rate", 1.0).is_ok());
    }

    #[test]
    fn unspecified_enum_lists_allowed_names() {
        let allowed = [SleepMode::Async, SleepMode::Blocking];
        let err = choice("mode", 0, &allowed).unwrap_err().to_string();
        assert!(err.contains("ASYNC, BLOCKING"), "{err}");
        assert!(choice("mode", 99, &allowed).is_err());
        assert_eq!(choice("mode", 2, &allowed).unwrap(), SleepMode::Blocking);
    }
}
