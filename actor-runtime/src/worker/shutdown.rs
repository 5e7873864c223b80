//! Waiting for the signals that stop a worker.

use crate::error::{Error, Result};

/// Waits for SIGINT or SIGTERM (Ctrl-C elsewhere); returns the signal's name.
pub async fn wait_for_signal() -> Result<&'static str> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let listen = |kind| signal(kind).map_err(Error::Signals);
        let mut term = listen(SignalKind::terminate())?;
        let mut int = listen(SignalKind::interrupt())?;
        tokio::select! {
            _ = term.recv() => Ok("SIGTERM"),
            _ = int.recv() => Ok("SIGINT"),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await.map_err(Error::Signals)?;
        Ok("Ctrl-C")
    }
}
