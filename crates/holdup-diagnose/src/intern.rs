//! Method names as `&'static str` metric labels, interned once each and bounded, so that a
//! client sending made-up paths can neither grow memory nor explode label cardinality.
//!
//! Methods that answered (not `UNIMPLEMENTED`) may fill the table; methods only seen holding a
//! worker (a culprit, a long poll: the request may still be running, or be one a client made
//! up) only its first half, so that made-up names can never take the room of methods that
//! answer. Past the limit, or longer than [`MAX_METHOD_BYTES`], a method is labelled `other`.

use std::sync::LazyLock;

use super::{identity::split_method, names::Table};

/// Distinct methods labelled by name: far more than any one server has.
pub const MAX_METHODS: usize = 512;
/// Longest method path labelled by name. Real gRPC method paths are tens of bytes; a path of
/// kilobytes (HTTP/2 allows 16 KiB of headers) is made up, and would be copied into every
/// series and every scrape.
pub const MAX_METHOD_BYTES: usize = 256;
/// The label of methods past [`MAX_METHODS`].
pub const OTHER: (&str, &str) = ("other", "other");

/// `(service, method)` labels, both `&'static`.
type Labels = (&'static str, &'static str);

/// A table of interned methods (one per process; tests make their own).
#[derive(Debug)]
struct Interner {
    methods: Table,
}

impl Default for Interner {
    fn default() -> Self {
        Self {
            methods: Table::new(MAX_METHOD_BYTES),
        }
    }
}

impl Interner {
    /// The labels of `full_method`, interning it if the table has fewer than `room` entries.
    fn labels(&self, full_method: &str, room: usize) -> Labels {
        self.methods
            .get(full_method, room)
            .map_or(OTHER, split_method)
    }
}

static METHODS: LazyLock<Interner> = LazyLock::new(Interner::default);

/// `(service, method)` of a full method path (`holdup.v1.Lab/Fast`) that answered, as static
/// labels.
pub fn labels(full_method: &str) -> Labels {
    METHODS.labels(full_method, MAX_METHODS)
}

/// The same for a method only seen holding a worker, which may not exist: see the module docs.
pub fn unverified_labels(full_method: &str) -> Labels {
    METHODS.labels(full_method, MAX_METHODS / 2)
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

    #[test]
    fn made_up_methods_cannot_crowd_out_answered_ones() {
        let table = Interner::default();
        for i in 0..MAX_METHODS {
            table.labels(&format!("junk.Svc/M{i}"), MAX_METHODS / 2);
        }
        assert_eq!(table.labels("junk.Svc/Late", MAX_METHODS / 2), OTHER);
        assert_eq!(
            table.labels("real.Svc/Answered", MAX_METHODS),
            ("real.Svc", "Answered"),
            "half the table is kept for methods that answer"
        );
        assert_eq!(
            table.labels("junk.Svc/M0", MAX_METHODS / 2),
            ("junk.Svc", "M0"),
            "known already"
        );
        let long = format!("x.Svc/{}", "a".repeat(MAX_METHOD_BYTES));
        assert_eq!(table.labels(&long, MAX_METHODS), OTHER);
    }
}
