//! The repository suite against the postgres backend.

annals_tests::repository_suite!(postgres);
