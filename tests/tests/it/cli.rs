//! The worker CLI end to end, on the stub broker: exit codes, signals, the supervisor.
//! (`cli_redis` runs the same binary against Redis.)

use std::time::{Duration, Instant};

use crate::support::cli::{
    alive, http_get, kill, metrics_url, pid_of, ready_workers, Proc, WORKER,
};

const NO_ACTORS: &str = env!("CARGO_BIN_EXE_cli_no_actors");

#[tokio::test]
async fn sigterm_stops_a_single_process_worker_cleanly() {
    let mut worker = Proc::spawn(WORKER, &["--processes", "1"], &[]);
    worker.wait_message("worker started").await;
    let stopping = Instant::now();
    kill("TERM", worker.pid());
    let status = worker.exit().await;
    let took = stopping.elapsed();
    assert_eq!(status.code(), Some(0), "{}", worker.dump());
    assert!(
        worker.seen.iter().any(|l| l["message"] == "worker stopped"),
        "{}",
        worker.dump()
    );
    // The benchmark target is < 100 ms; allow a loaded CI machine some slack.
    assert!(took < Duration::from_secs(2), "stopping took {took:?}");
}

#[tokio::test]
async fn sighup_reexecutes_a_single_process_worker_in_place() {
    let mut worker = Proc::spawn(WORKER, &["-p", "1"], &[]);
    worker.wait_message("worker started").await;
    kill("HUP", worker.pid());
    worker.wait_message("restarting (SIGHUP)").await;
    let again = worker.wait_message("worker started").await;
    assert_eq!(again["pid"].as_u64(), Some(u64::from(worker.pid())));
    kill("TERM", worker.pid());
    assert_eq!(worker.exit().await.code(), Some(0));
}

#[tokio::test]
async fn a_bad_setting_exits_2_naming_it() {
    let mut worker = Proc::spawn(
        WORKER,
        &[],
        &[("WORKER_THREADS", "lots"), ("WORKER_PROCESSES", "0")],
    );
    let status = worker.exit().await;
    assert_eq!(status.code(), Some(2));
    let logs = worker.dump();
    assert!(
        logs.contains("WORKER_THREADS must be a whole number"),
        "{logs}"
    );
    assert!(
        logs.contains("WORKER_PROCESSES must be a whole number"),
        "{logs}"
    );
}

#[tokio::test]
async fn a_bad_flag_exits_2() {
    let mut worker = Proc::spawn(WORKER, &["--threads", "zero"], &[]);
    assert_eq!(worker.exit().await.code(), Some(2));
}

#[tokio::test]
async fn a_binary_without_actors_exits_2() {
    let mut worker = Proc::spawn(NO_ACTORS, &["-p", "1"], &[]);
    assert_eq!(worker.exit().await.code(), Some(2));
    assert!(
        worker.dump().contains("no actor is registered"),
        "{}",
        worker.dump()
    );
}

/// Waits until `worker` either consumes or refuses its pid file; true if it consumes.
async fn runs_with_pid_file(worker: &mut Proc) -> bool {
    let line = worker
        .wait_for("start-up or refusal", |l| {
            l["message"] == "worker started"
                || l["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("pid file"))
        })
        .await;
    line["message"] == "worker started"
}

#[tokio::test]
async fn a_redis_password_never_reaches_the_logs_whatever_the_url_form() {
    let secret = "Corr3ct";
    for url in [
        // Unescaped `/` and `#`: the URL does not parse, so it is not shown at all.
        "redis://:Corr3ct/Horse#Pw@127.0.0.1/0",
        // A socket that does not exist: connection errors name the URL.
        "redis+unix:///nonexistent/redis.sock?db=0&pass=Corr3ct",
        "redis://:Corr3ct@127.0.0.1:1/0",
    ] {
        let mut worker = Proc::spawn(WORKER, &["-p", "1"], &[("REDIS_URL", url)]);
        let status = worker.exit().await;
        assert!(
            matches!(status.code(), Some(2 | 3)),
            "{url}: {status:?}\n{}",
            worker.dump()
        );
        let logs = worker.dump();
        assert!(!logs.contains(secret), "{url} leaked:\n{logs}");
    }
}

#[tokio::test]
async fn one_of_two_workers_started_at_once_gets_the_pid_file_and_removes_it_at_exit() {
    let path = std::env::temp_dir().join(format!("cli-{}.pid", uuid::Uuid::new_v4().simple()));
    let path_arg = path.to_str().unwrap();
    let mut first = Proc::spawn(WORKER, &["-p", "1", "--pid-file", path_arg], &[]);
    let mut second = Proc::spawn(WORKER, &["-p", "1", "--pid-file", path_arg], &[]);
    let (first_runs, second_runs) = tokio::join!(
        runs_with_pid_file(&mut first),
        runs_with_pid_file(&mut second)
    );
    assert!(
        first_runs != second_runs,
        "exactly one may run:\n{}\n{}",
        first.dump(),
        second.dump()
    );
    let (mut worker, mut refused) = if first_runs {
        (first, second)
    } else {
        (second, first)
    };
    assert_eq!(refused.exit().await.code(), Some(4), "{}", refused.dump());
    assert_eq!(
        std::fs::read_to_string(&path).unwrap().trim(),
        worker.pid().to_string()
    );
    kill("TERM", worker.pid());
    assert_eq!(worker.exit().await.code(), Some(0));
    assert!(!path.exists(), "the pid file is removed at exit");
}

#[tokio::test]
async fn a_pid_file_that_is_a_symlink_is_refused_and_its_target_left_alone() {
    let dir = std::env::temp_dir();
    let target = dir.join(format!("cli-other-{}.pid", uuid::Uuid::new_v4().simple()));
    let link = dir.join(format!("cli-link-{}.pid", uuid::Uuid::new_v4().simple()));
    // Another program's pid file, its process gone: following the link would overwrite it.
    std::fs::write(&target, "2147483000\n").unwrap();
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let mut refused = Proc::spawn(
        WORKER,
        &["-p", "1", "--pid-file", link.to_str().unwrap()],
        &[],
    );
    assert_eq!(refused.exit().await.code(), Some(4), "{}", refused.dump());
    assert!(
        refused.dump().contains("is a symlink"),
        "{}",
        refused.dump()
    );
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "2147483000\n");
    std::fs::remove_file(&link).unwrap();
    std::fs::remove_file(&target).unwrap();
}

#[tokio::test]
async fn the_supervisor_restarts_a_killed_worker_and_stops_all_on_sigterm() {
    let mut supervisor = Proc::spawn(WORKER, &["--processes", "2"], &[]);
    let pids = ready_workers(&mut supervisor, 2).await;

    kill("KILL", pids[0]);
    let exited = supervisor
        .wait_message("worker process exited unexpectedly; restarting it")
        .await;
    assert_eq!(exited["worker"], 0);
    assert!(
        exited["status"].as_str().unwrap().contains("SIGKILL"),
        "{exited}"
    );
    let ready = supervisor.wait_message("worker process ready").await;
    assert_eq!(ready["worker"], 0);
    let new_pid = pid_of(&ready);
    assert_ne!(new_pid, pids[0]);

    kill("TERM", supervisor.pid());
    let status = supervisor.exit().await;
    assert_eq!(status.code(), Some(0), "{}", supervisor.dump());
    for pid in [new_pid, pids[1]] {
        assert!(!alive(pid), "worker {pid} outlived its supervisor");
    }
}

#[tokio::test]
async fn sighup_restarts_workers_one_at_a_time() {
    let mut supervisor = Proc::spawn(WORKER, &["-p", "2"], &[]);
    let old = ready_workers(&mut supervisor, 2).await;
    kill("HUP", supervisor.pid());
    let mut order = Vec::new();
    let mut new = [0u32; 2];
    while new.contains(&0) {
        let line = supervisor
            .wait_for("the rolling restart", |l| {
                l["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("rolling restart") || m == "worker process ready")
            })
            .await;
        let worker = line["worker"].as_u64().unwrap_or(99) as usize;
        if line["message"] == "worker process ready" {
            new[worker] = pid_of(&line);
            order.push(format!("ready {worker}"));
        } else {
            order.push(format!("stopped {worker}"));
        }
    }
    assert_eq!(
        order,
        ["stopped 0", "ready 0", "stopped 1", "ready 1"],
        "{}",
        supervisor.dump()
    );
    assert!(new[0] != old[0] && new[1] != old[1]);
    kill("TERM", supervisor.pid());
    assert_eq!(supervisor.exit().await.code(), Some(0));
}

#[tokio::test]
async fn a_worker_over_max_memory_is_recycled() {
    // Any process is over 1 MB resident, so the worker is recycled once ready.
    let mut supervisor = Proc::spawn(WORKER, &["-p", "1", "--max-memory", "1"], &[]);
    let first = pid_of(&supervisor.wait_message("worker process ready").await);
    let over = supervisor
        .wait_message("worker process is over --max-memory; recycling it")
        .await;
    assert_eq!(pid_of(&over), first);
    let next = pid_of(&supervisor.wait_message("worker process ready").await);
    assert_ne!(next, first);
    kill("TERM", supervisor.pid());
    assert_eq!(supervisor.exit().await.code(), Some(0));
}

#[tokio::test]
async fn a_second_signal_kills_the_workers() {
    let mut supervisor = Proc::spawn(WORKER, &["-p", "2"], &[]);
    let pids = ready_workers(&mut supervisor, 2).await;
    kill("TERM", supervisor.pid());
    kill("INT", supervisor.pid());
    let status = supervisor.exit().await;
    // Either the workers stopped before the second signal (0) or were killed (1).
    assert!(matches!(status.code(), Some(0 | 1)), "{status}");
    for pid in pids {
        assert!(!alive(pid));
    }
}

#[tokio::test]
async fn the_supervisor_serves_its_workers_metrics() {
    let mut supervisor = Proc::spawn(WORKER, &["-p", "2", "--metrics-addr", "127.0.0.1:0"], &[]);
    let url = metrics_url(&mut supervisor).await;
    ready_workers(&mut supervisor, 2).await;
    let body = http_get(&url).await;
    assert!(
        body.contains("# TYPE dramatiq_message_duration_milliseconds histogram"),
        "{body}"
    );
    kill("TERM", supervisor.pid());
    assert_eq!(supervisor.exit().await.code(), Some(0));
}
