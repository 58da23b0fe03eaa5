//! Redis commands executed during a measurement, by command, from
//! `INFO commandstats`. The counters are server-wide: tests running at the
//! same time inflate them, which the report says next to the numbers.

use redis::aio::ConnectionManager;
use std::collections::BTreeMap;

/// Calls per command name at one instant.
#[derive(Debug, Clone, Default)]
pub struct CommandCounts(BTreeMap<String, u64>);

impl CommandCounts {
    /// Reads the server's counters (empty when Redis does not answer).
    pub async fn read(redis: &mut ConnectionManager) -> Self {
        let info: Result<String, _> = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(redis)
            .await;
        Self(info.map(|text| parse(&text)).unwrap_or_default())
    }

    /// Calls per command between `self` and `later`, leaving out commands
    /// that did not run and the bench's own `INFO`.
    pub fn until(&self, later: &CommandCounts) -> BTreeMap<String, u64> {
        later
            .0
            .iter()
            .filter(|(name, _)| name.as_str() != "info")
            .filter_map(|(name, &after)| {
                let delta = after.saturating_sub(self.0.get(name).copied().unwrap_or(0));
                (delta > 0).then(|| (name.clone(), delta))
            })
            .collect()
    }
}

fn parse(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|line| {
            let (name, rest) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest
                .split(',')
                .find_map(|field| field.strip_prefix("calls="))?
                .parse()
                .ok()?;
            Some((name.to_string(), calls))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_commandstats() {
        let text = "# Commandstats\r\ncmdstat_exists:calls=12,usec=30,usec_per_call=2.5,rejected_calls=0,failed_calls=0\r\ncmdstat_set:calls=3,usec=9\r\n";
        let counts = super::parse(text);
        assert_eq!(counts.get("exists"), Some(&12));
        assert_eq!(counts.get("set"), Some(&3));
    }
}
