//! Subscriptions against every backend.

mod memory {
    annals_tests::subscription_suite!(memory);
}

mod sqlite {
    annals_tests::subscription_suite!(sqlite);
}

mod postgres {
    annals_tests::subscription_suite!(postgres);
}
