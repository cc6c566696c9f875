//! End-to-end tests of the service across the crates; the tests are `feed.rs` and its neighbours, this library is empty.
