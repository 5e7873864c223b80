//! The Python with Dramatiq 2.2.1 the interop tests run: `$DRAMATIQ_PYTHON`, else
//! `<workspace>/.venv/bin/python`; without either they fail, saying how to get one.

use std::path::{Path, PathBuf};

/// The workspace's root.
pub(crate) fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate sits in the workspace")
        .to_owned()
}

/// The Python side of the interop tests, `tests/python/`.
pub(crate) fn python_dir() -> PathBuf {
    workspace().join("tests").join("python")
}

/// The Python with Dramatiq 2.2.1, or a failure that says how to get one.
pub(crate) fn python() -> PathBuf {
    if let Some(path) = std::env::var_os("DRAMATIQ_PYTHON").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        assert!(
            path.exists(),
            "DRAMATIQ_PYTHON={} does not exist",
            path.display()
        );
        return path;
    }
    let venv = workspace().join(".venv").join("bin").join("python");
    assert!(
        venv.exists(),
        "the interop tests need Python Dramatiq 2.2.1: set DRAMATIQ_PYTHON to a python with \
         `dramatiq[redis,rabbitmq]==2.2.1`, or create {} (`.ci/run` does: python3 -m venv .venv && \
         .venv/bin/pip install 'dramatiq[redis,rabbitmq]==2.2.1')",
        venv.display()
    );
    venv
}
