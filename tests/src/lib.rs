//! Guest integration tests live in tests/.
