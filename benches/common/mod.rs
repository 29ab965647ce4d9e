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
