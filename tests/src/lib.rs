//! End-to-end tests that cross crates live under tests/tests/.
