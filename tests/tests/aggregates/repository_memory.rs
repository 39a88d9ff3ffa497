//! The repository suite against the memory backend.

annals_tests::repository_suite!(memory);
