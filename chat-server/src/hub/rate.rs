//! Per-user send rate limits (token buckets).

use std::time::{Duration, Instant};

use chat_proto::ids::UserId;

use super::Hub;

#[derive(Clone, Copy, Debug)]
pub(super) struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Hub {
    /// Takes one send from the user's budget (`rate` per second, `burst` at once);
    /// `Err(wait)` when it is exhausted.
    pub fn take_send_token(
        &self,
        user: UserId,
        rate: u32,
        burst: u32,
        now: Instant,
    ) -> Result<(), Duration> {
        let mut map = self.send_limits.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() > 100_000 {
            map.retain(|_, b| now.duration_since(b.at) < Duration::from_secs(60));
        }
        let rate = f64::from(rate.max(1));
        let burst = f64::from(burst.max(1));
        let bucket = map.entry(user).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let elapsed = now.duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / rate))
        }
    }
}
