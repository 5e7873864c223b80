//! Job pages: see below.
