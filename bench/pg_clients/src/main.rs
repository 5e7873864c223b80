//! tokio-postgres against sqlx for the job records' write: the same batched
//! `INSERT .. SELECT FROM UNNEST(..) ON CONFLICT DO UPDATE` of BATCH rows (18 array
//! parameters, as the recorder sends), ROUNDS batches each, alternating, one connection each
//! on a current-thread runtime. Prints the client's CPU per row (this process, all threads),
//! PostgreSQL's backend CPU per row and the wall time.
//!
//!   cd bench/pg_clients && cargo run --release -- [BATCH] [ROUNDS] [REPEATS]
//!
//! Needs PostgreSQL at $DATABASE_URL (default postgres://postgres@127.0.0.1:5432/test); works
//! in a schema of its own, dropped at the end.
use std::time::{Instant, SystemTime};

const SQL: &str = "INSERT INTO pgc.job_executions AS j (message_id, queue_name, actor_name, state, \
    state_order, attempt, max_retries, enqueued_at, eta, started_at, finished_at, duration_ms, \
    worker_id, last_error, errors, parent_id, group_id, args) \
    SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::int2[], $6::int4[], \
    $7::int4[], $8::timestamptz[], $9::timestamptz[], $10::timestamptz[], $11::timestamptz[], \
    $12::float8[], $13::text[], $14::text[], $15::jsonb[], $16::text[], $17::text[], $18::jsonb[]) \
    ON CONFLICT (message_id) DO UPDATE SET state = EXCLUDED.state, state_order = EXCLUDED.state_order";

const TABLE: &str = "DROP SCHEMA IF EXISTS pgc CASCADE; CREATE SCHEMA pgc; \
    CREATE TABLE pgc.job_executions (message_id text PRIMARY KEY, queue_name text NOT NULL, \
    actor_name text NOT NULL, state text NOT NULL, state_order smallint NOT NULL, attempt int NOT NULL, \
    max_retries int, enqueued_at timestamptz, eta timestamptz, started_at timestamptz, \
    finished_at timestamptz, duration_ms float8, worker_id text, last_error text, \
    errors jsonb NOT NULL DEFAULT '[]', parent_id text, group_id text, args jsonb)";

struct Rows {
    ids: Vec<String>,
    queues: Vec<String>,
    actors: Vec<String>,
    states: Vec<String>,
    orders: Vec<i16>,
    attempts: Vec<i32>,
    max_retries: Vec<Option<i32>>,
    times: Vec<Option<SystemTime>>,
    nones: Vec<Option<SystemTime>>,
    durations: Vec<Option<f64>>,
    workers: Vec<Option<String>>,
    null_text: Vec<Option<String>>,
    errors: Vec<serde_json::Value>,
    null_json: Vec<Option<serde_json::Value>>,
}

fn rows(n: usize) -> Rows {
    let now = SystemTime::now();
    Rows {
        ids: (0..n).map(|_| uuid::Uuid::new_v4().to_string()).collect(),
        queues: vec!["default".into(); n],
        actors: vec!["noop".into(); n],
        states: vec!["succeeded".into(); n],
        orders: vec![4; n],
        attempts: vec![1; n],
        max_retries: vec![Some(20); n],
        times: vec![Some(now); n],
        nones: vec![None; n],
        durations: vec![Some(0.05); n],
        workers: vec![Some("worker-1".into()); n],
        null_text: vec![None; n],
        errors: vec![serde_json::json!([]); n],
        null_json: vec![None; n],
    }
}

fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the `)`.
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

async fn tokio_postgres(url: &str, batches: &[Rows]) -> (f64, f64, f64) {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let pid: i32 = client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let stmt = client.prepare(SQL).await.unwrap();
    let (me0, pg0, t0) = (
        cpu_seconds("self"),
        cpu_seconds(&pid.to_string()),
        Instant::now(),
    );
    for r in batches {
        client
            .execute(
                &stmt,
                &[
                    &r.ids,
                    &r.queues,
                    &r.actors,
                    &r.states,
                    &r.orders,
                    &r.attempts,
                    &r.max_retries,
                    &r.times,
                    &r.nones,
                    &r.times,
                    &r.times,
                    &r.durations,
                    &r.workers,
                    &r.null_text,
                    &r.errors,
                    &r.null_text,
                    &r.null_text,
                    &r.null_json,
                ],
            )
            .await
            .unwrap();
    }
    (
        cpu_seconds("self") - me0,
        cpu_seconds(&pid.to_string()) - pg0,
        t0.elapsed().as_secs_f64(),
    )
}

async fn sqlx(url: &str, batches: &[Rows]) -> (f64, f64, f64) {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    let (me0, pg0, t0) = (
        cpu_seconds("self"),
        cpu_seconds(&pid.to_string()),
        Instant::now(),
    );
    for r in batches {
        let ts = |v: &Vec<Option<SystemTime>>| -> Vec<Option<sqlx::types::chrono::DateTime<sqlx::types::chrono::Utc>>> {
            v.iter().map(|t| t.map(Into::into)).collect()
        };
        sqlx::query(SQL)
            .bind(&r.ids)
            .bind(&r.queues)
            .bind(&r.actors)
            .bind(&r.states)
            .bind(&r.orders)
            .bind(&r.attempts)
            .bind(&r.max_retries)
            .bind(ts(&r.times))
            .bind(ts(&r.nones))
            .bind(ts(&r.times))
            .bind(ts(&r.times))
            .bind(&r.durations)
            .bind(&r.workers)
            .bind(&r.null_text)
            .bind(&r.errors)
            .bind(&r.null_text)
            .bind(&r.null_text)
            .bind(&r.null_json)
            .execute(&mut conn)
            .await
            .unwrap();
    }
    (
        cpu_seconds("self") - me0,
        cpu_seconds(&pid.to_string()) - pg0,
        t0.elapsed().as_secs_f64(),
    )
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().unwrap())
        .collect();
    let (batch, rounds, repeats) = (
        args.first().copied().unwrap_or(1000),
        args.get(1).copied().unwrap_or(100),
        args.get(2).copied().unwrap_or(3),
    );
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let (admin, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    println!("{batch} rows per statement, {rounds} statements per run; per row: client CPU us, PostgreSQL CPU us, wall us");
    for _ in 0..repeats {
        for client in ["tokio-postgres", "sqlx"] {
            admin.batch_execute(TABLE).await.unwrap();
            let batches: Vec<Rows> = (0..rounds).map(|_| rows(batch)).collect();
            let (me, pg, wall) = match client {
                "tokio-postgres" => tokio_postgres(&url, &batches).await,
                _ => sqlx(&url, &batches).await,
            };
            let n = (batch * rounds) as f64 / 1e6;
            println!(
                "{client:>15}: client {:5.2}  postgres {:5.2}  wall {:5.2}",
                me / n,
                pg / n,
                wall / n
            );
        }
    }
    admin
        .batch_execute("DROP SCHEMA pgc CASCADE")
        .await
        .unwrap();
}
