//! Shared by the benchmarks.

/// Removes every key of a bench's Redis prefix, and its member of apalis' global queue list.
pub fn cleanup_redis(prefix: &str) {
    if let Ok(redis) = redis::Client::open("redis://127.0.0.1:6379")
        && let Ok(mut conn) = redis.get_connection()
    {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}:*"))
            .query(&mut conn)
            .unwrap_or_default();
        for chunk in keys.chunks(500) {
            let _: redis::RedisResult<()> = redis::cmd("DEL").arg(chunk).query(&mut conn);
        }
        let _: redis::RedisResult<()> = redis::cmd("ZREM")
            .arg(erp_sync::orders::queue::APALIS_QUEUES_LIST)
            .arg(erp_sync::orders::queue::QueueKeys::new(prefix).workers)
            .query(&mut conn);
    }
}

/// Creates `db_name` on the server of `master`; returns the admin connection (to drop the
/// database afterwards) and the new database's URL.
pub async fn create_database(master: &str, db_name: &str) -> (sqlx::PgConnection, String) {
    use sqlx::Connection as _;
    let db_url = format!("{}/{db_name}", master.rsplit_once('/').unwrap().0);
    let mut admin = sqlx::PgConnection::connect(master)
        .await
        .expect("Postgres answers");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db_name}")))
        .execute(&mut admin)
        .await
        .unwrap();
    (admin, db_url)
}

/// A free port on 127.0.0.1 for the service under test.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
