//! Compile-time behaviour of the macros: every supported form compiles
//! (`ui/*/pass`), and every misuse fails with the reviewed diagnostic in its
//! `.stderr` (`ui/*/fail`). Regenerate after an intended change with
//! `TRYBUILD=overwrite cargo test -p annals-tests --test ui`, then review.

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.pass("ui/*/pass/*.rs");
    cases.compile_fail("ui/*/fail/*.rs");
}
