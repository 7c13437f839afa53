//! Names of waits that are only known at run time (a peer's `host:port`, a thread's name) as
//! `&'static str`, like the stage names they stand beside, interned once each and bounded:
//! a service that connects to ever new peers must not grow memory without end.

use std::{
    collections::HashSet,
    sync::{LazyLock, Mutex, PoisonError},
};

/// Distinct names kept; past it, names are the fallback word.
pub const MAX_NAMES: usize = 256;

static NAMES: LazyLock<Mutex<HashSet<&'static str>>> = LazyLock::new(Mutex::default);

/// `name` as a `&'static str`, or `fallback` once [`MAX_NAMES`] are taken.
pub(crate) fn intern(name: &str, fallback: &'static str) -> &'static str {
    let mut names = NAMES.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(known) = names.get(name) {
        return known;
    }
    if names.len() >= MAX_NAMES || name.len() > 128 {
        return fallback;
    }
    let leaked: &'static str = Box::leak(name.to_owned().into_boxed_str());
    names.insert(leaked);
    leaked
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_same_name_is_interned_once() {
        let a = super::intern("127.0.0.1:5432", "peer");
        let b = super::intern(&String::from("127.0.0.1:5432"), "peer");
        assert!(std::ptr::eq(a, b));
        assert_eq!(super::intern(&"x".repeat(200), "peer"), "peer");
    }
}
