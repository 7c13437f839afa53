//! Names only known at run time (a peer's `host:port`, a thread's name, a method path) as
//! `&'static str`, like the stage names and metric labels they stand beside: each leaked once,
//! in a bounded table, so that a service that sees ever new names (peers, made-up methods)
//! cannot grow memory without end.

use std::{
    collections::HashSet,
    sync::{LazyLock, PoisonError, RwLock},
};

/// A bounded table of leaked names.
#[derive(Debug)]
pub(crate) struct Table {
    names: RwLock<HashSet<&'static str>>,
    /// Longer names are never leaked.
    max_len: usize,
}

impl Table {
    pub(crate) fn new(max_len: usize) -> Self {
        Self {
            names: RwLock::default(),
            max_len,
        }
    }

    /// `name` as a `&'static str`, leaked the first time; `None` when it is longer than the
    /// table's limit, or new while the table already holds `room` names.
    pub(crate) fn get(&self, name: &str, room: usize) -> Option<&'static str> {
        if name.len() > self.max_len {
            return None;
        }
        if let Some(known) = self
            .names
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
        {
            return Some(known);
        }
        let mut names = self.names.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(known) = names.get(name) {
            return Some(known);
        }
        if names.len() >= room {
            return None;
        }
        // Leaked once per distinct name, at most `room` times per table.
        let leaked: &'static str = Box::leak(name.to_owned().into_boxed_str());
        names.insert(leaked);
        Some(leaked)
    }
}

/// Distinct wait names kept (peers, threads); past it, names are the fallback word.
pub const MAX_NAMES: usize = 256;

static NAMES: LazyLock<Table> = LazyLock::new(|| Table::new(128));

/// `name` as a `&'static str`, or `fallback` once [`MAX_NAMES`] are taken.
pub(crate) fn intern(name: &str, fallback: &'static str) -> &'static str {
    NAMES.get(name, MAX_NAMES).unwrap_or(fallback)
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
