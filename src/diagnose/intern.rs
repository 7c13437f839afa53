//! Method names as `&'static str` metric labels, interned once each and bounded, so that a
//! client sending made-up paths can neither grow memory nor explode label cardinality.
//!
//! Only methods that answered (not `UNIMPLEMENTED`) or that held a worker long enough to be
//! blamed are interned; past [`MAX_METHODS`] distinct ones, the rest share the label `other`.

use std::{
    collections::HashMap,
    sync::{LazyLock, PoisonError, RwLock},
};

use super::identity::split_method;

/// Distinct methods labelled by name: far more than any one server has.
pub const MAX_METHODS: usize = 512;
/// The label of methods past [`MAX_METHODS`].
pub const OTHER: (&str, &str) = ("other", "other");

/// `(service, method)` labels, both `&'static`.
type Labels = (&'static str, &'static str);

static METHODS: LazyLock<RwLock<HashMap<Box<str>, Labels>>> =
    LazyLock::new(|| RwLock::new(HashMap::new()));

/// `(service, method)` of a full method path (`holdup.v1.Lab/Fast`), as static labels.
pub fn labels(full_method: &str) -> Labels {
    if let Some(found) = METHODS
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .get(full_method)
    {
        return *found;
    }
    let mut methods = METHODS.write().unwrap_or_else(PoisonError::into_inner);
    if let Some(found) = methods.get(full_method) {
        return *found;
    }
    if methods.len() >= MAX_METHODS {
        return OTHER;
    }
    // Leaked once per distinct method, at most MAX_METHODS times.
    let full: &'static str = Box::leak(full_method.to_owned().into_boxed_str());
    let parts = split_method(full);
    methods.insert(full.into(), parts);
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_method_gets_the_same_labels() {
        let a = labels("test.intern.Svc/Method");
        let b = labels("test.intern.Svc/Method");
        assert_eq!(a, ("test.intern.Svc", "Method"));
        assert!(std::ptr::eq(a.1, b.1));
    }
}
