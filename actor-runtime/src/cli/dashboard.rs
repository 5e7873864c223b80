//! `dashboard`: serves the web dashboard (feature `dashboard`) over the broker the workers
//! use, with the job records when DATABASE_URL is set (feature `postgres`).

use std::net::SocketAddr;

use clap::Args;

use super::{env_var, Exit, Failure};
use crate::dashboard::{Auth, Dashboard};

#[derive(Debug, Args)]
pub(crate) struct DashboardArgs {
    /// Listen on this address; a non-loopback one needs DASHBOARD_TOKEN or
    /// DASHBOARD_USER/DASHBOARD_PASSWORD.
    #[arg(
        long,
        value_name = "ADDR",
        default_value = "127.0.0.1:9181",
        env = "DASHBOARD_ADDR"
    )]
    pub(crate) addr: SocketAddr,
    /// Pages only: no requeue, delete, pause or resume [env: DASHBOARD_READ_ONLY=1].
    #[arg(long)]
    pub(crate) read_only: bool,
}

pub(crate) fn run(args: DashboardArgs) -> Result<Exit, Failure> {
    let auth = Auth::from_env().map_err(Failure::usage)?;
    let read_only =
        args.read_only || env_var("DASHBOARD_READ_ONLY").is_some_and(|v| v == "1" || v == "true");
    if !args.addr.ip().is_loopback() && matches!(auth, Auth::None) {
        return Err(Failure::usage(format!(
            "refusing to serve the dashboard on {}, a non-loopback address, without \
             authentication: set DASHBOARD_TOKEN, or DASHBOARD_USER and DASHBOARD_PASSWORD",
            args.addr
        )));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Failure {
            exit: Exit::Killed,
            message: format!("cannot start the async runtime: {e}"),
        })?;
    runtime.block_on(async {
        let broker = super::broker()?;
        if broker.kind() == "stub" {
            return Err(Failure::usage(
                "the dashboard needs the broker your workers use: set REDIS_URL or RABBITMQ_URL \
                 (without it this program would only see its own, empty, in-memory stub broker)",
            ));
        }
        broker.ping().await.map_err(Failure::from)?;
        let dashboard = Dashboard::new(broker.clone())
            .auth(auth)
            .read_only(read_only);
        #[cfg(feature = "postgres")]
        let (dashboard, records) = if env_var("DATABASE_URL").is_some_and(|u| !u.is_empty()) {
            let records =
                super::ops::records::open(&super::ops::records::DatabaseArgs::default()).await?;
            (dashboard.records(records.clone()), Some(records))
        } else {
            (dashboard, None)
        };
        let served = dashboard.serve_until(args.addr, stopped()).await;
        #[cfg(feature = "postgres")]
        if let Some(records) = records {
            records.close().await;
        }
        broker.close().await;
        served.map_err(|err| Failure {
            exit: if err.kind() == std::io::ErrorKind::InvalidInput {
                Exit::Usage
            } else {
                Exit::Connection
            },
            message: format!("dashboard on {}: {err}", args.addr),
        })?;
        Ok(Exit::Ok)
    })
}

/// Completes on SIGINT or SIGTERM.
async fn stopped() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
