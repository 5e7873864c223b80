//! Browser tests: see below.
