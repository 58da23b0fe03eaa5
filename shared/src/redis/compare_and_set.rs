//! Compare and set on a string key: the value is replaced only if it is
//! still exactly the one read, so a writer never overwrites a change made
//! in between. One Lua script, run atomically by Redis, serves every such
//! write (subscription updates, re-sealing).

use redis::aio::ConnectionLike;

/// Replaces `KEYS[1]` with `ARGV[2]` only if it still holds `ARGV[1]`:
/// 1 stored, 0 changed meanwhile, -1 deleted meanwhile.
const SET_IF_UNCHANGED: &str = r#"
local current = redis.call('GET', KEYS[1])
if not current then return -1 end
if current ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
return 1
"#;

/// What a compare and set found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Swap {
    /// The key still held the expected value; the new one is stored.
    Stored,
    /// The key holds another value now; nothing was written.
    Changed,
    /// The key is gone; nothing was written.
    Missing,
}

impl Swap {
    /// The outcome the script's reply stands for.
    fn from_reply(reply: i64) -> Self {
        match reply {
            1 => Self::Stored,
            0 => Self::Changed,
            _ => Self::Missing,
        }
    }
}

/// The compare-and-set script (Redis keeps it by its hash after the first call).
#[derive(Clone)]
pub struct CompareAndSet {
    script: redis::Script,
}

impl Default for CompareAndSet {
    fn default() -> Self {
        Self {
            script: redis::Script::new(SET_IF_UNCHANGED),
        }
    }
}

impl std::fmt::Debug for CompareAndSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CompareAndSet")
    }
}

impl CompareAndSet {
    /// Sets `key` to `new` if it still holds `expected`.
    pub async fn swap<C: ConnectionLike>(
        &self,
        connection: &mut C,
        key: &str,
        expected: &str,
        new: &str,
    ) -> redis::RedisResult<Swap> {
        let reply: i64 = self
            .script
            .key(key)
            .arg(expected)
            .arg(new)
            .invoke_async(connection)
            .await?;
        Ok(Swap::from_reply(reply))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_reply_of_the_script_names_its_outcome() {
        assert_eq!(Swap::from_reply(1), Swap::Stored);
        assert_eq!(Swap::from_reply(0), Swap::Changed);
        assert_eq!(Swap::from_reply(-1), Swap::Missing);
    }
}
