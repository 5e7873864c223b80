//! Integration and UI tests of actor-runtime live in `tests/`; this library is empty.
