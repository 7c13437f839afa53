//! The verdict words are listed once, in `holdup_diagnose::Verdict`; the proto comment on
//! `Diagnostics.verdict` and the guide's verdict table (docs/diagnosis.md) must say exactly those
//! words.

use holdup::diagnose::Verdict;

/// The words between `from` and `to` in `text` that look like verdicts (lowercase words
/// with hyphens), in order.
fn words_between<'a>(text: &'a str, from: &str, to: &str) -> Vec<&'a str> {
    let start = text.find(from).expect("start marker") + from.len();
    let end = start + text[start..].find(to).expect("end marker");
    text[start..end]
        .split(|c: char| !(c.is_ascii_lowercase() || c == '-'))
        .filter(|w| Verdict::parse(w).is_some())
        .collect()
}

#[test]
fn the_proto_comment_lists_exactly_these_words() {
    let proto = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/proto/holdup/v1/lab.proto"
    ));
    let listed = words_between(proto, "in one word:", "string verdict = 7;");
    let all: Vec<&str> = Verdict::ALL.iter().map(|v| v.as_str()).collect();
    assert_eq!(listed, all);
}

#[test]
fn the_guide_table_lists_exactly_these_words() {
    let page = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/diagnosis.md"));
    let start = page
        .find("| verdict | the largest component is |")
        .expect("the verdict table");
    let table: Vec<&str> = page[start..]
        .lines()
        .skip(2)
        .take_while(|line| line.starts_with('|'))
        .filter_map(|row| row.split('`').nth(1))
        .collect();
    let all: Vec<&str> = Verdict::ALL.iter().map(|v| v.as_str()).collect();
    assert_eq!(table, all);
}
