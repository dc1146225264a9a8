//! What one statement costs on a PostgreSQL session, waited for one at a
//! time (from another thread, as the store's sessions run, and on the
//! calling thread) and pipelined 100 at a time: why the store defers writes
//! (`PgTx::defer`). Figures are in docs/benchmarks.md.
//!
//!     MAILROBOT_TEST_DATABASE_URL=postgres://… cargo run --release -p mailrobot-store --example pg_round_trip

use std::time::Instant;

use tokio_postgres::NoTls;

const STATEMENTS: usize = 20_000;

fn main() {
    let url = std::env::var("MAILROBOT_TEST_DATABASE_URL").expect("MAILROBOT_TEST_DATABASE_URL");
    let config: tokio_postgres::Config = url.parse().expect("a PostgreSQL URL");
    let per_statement = |started: Instant| started.elapsed().as_secs_f64() * 1e6 / STATEMENTS as f64;

    let sessions = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let remote_config = config.clone();
    let client = futures::executor::block_on(sessions.spawn(async move {
        let (client, connection) = remote_config.connect(NoTls).await.unwrap();
        tokio::spawn(connection);
        client
    }))
    .unwrap();
    let statement = futures::executor::block_on(client.prepare("SELECT $1::int8")).unwrap();
    let started = Instant::now();
    for i in 0..STATEMENTS as i64 {
        futures::executor::block_on(client.query_one(&statement, &[&i])).unwrap();
    }
    println!("one at a time, session on another thread: {:.1} µs per statement", per_statement(started));

    let local = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let client = local.block_on(async {
        let (client, connection) = config.connect(NoTls).await.unwrap();
        tokio::spawn(connection);
        client
    });
    let statement = local.block_on(client.prepare("SELECT $1::int8")).unwrap();
    let started = Instant::now();
    for i in 0..STATEMENTS as i64 {
        local.block_on(client.query_one(&statement, &[&i])).unwrap();
    }
    println!("one at a time, session on this thread: {:.1} µs per statement", per_statement(started));

    let started = Instant::now();
    for chunk in 0..(STATEMENTS / 100) as i64 {
        local.block_on(futures::future::join_all((0..100).map(|i| {
            let (client, statement) = (&client, &statement);
            async move { client.query_one(statement, &[&(chunk * 100 + i)]).await.unwrap() }
        })));
    }
    println!("pipelined, 100 at a time: {:.1} µs per statement", per_statement(started));
}
