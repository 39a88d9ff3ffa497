//! The repository suite against the sqlite backend.

annals_tests::repository_suite!(sqlite);
