//! What an endpoint record carries besides its configs: the opaque id, tags and
//! description given at creation, and edits of the record outside config updates: tags
//! (Databricks' `PATCH .../tags`) and fallback.

use super::{EndpointManager, ServingError};
use crate::registry::{unix_millis, EndpointRecord, EndpointTag};
use std::collections::HashSet;

/// Most tags on one endpoint (Databricks allows 20).
pub const MAX_TAGS: usize = 20;
/// Longest tag key, characters (Databricks': 255).
const MAX_KEY_CHARS: usize = 255;
/// Longest tag value, characters (Databricks': 255).
const MAX_VALUE_CHARS: usize = 255;

/// What a new endpoint carries besides its config.
#[derive(Debug, Clone, Default)]
pub struct EndpointMeta {
    /// Retry a request that fails with a 5xx once on another served entity.
    pub fallback_enabled: bool,
    /// Tags.
    pub tags: Vec<EndpointTag>,
    /// Free-text description.
    pub description: Option<String>,
}

/// A fresh opaque endpoint id: 32 hex digits.
pub fn new_id() -> String {
    let mut raw = [0u8; 16];
    // Only uniqueness matters here; a failing random source falls back to the clock.
    if getrandom::fill(&mut raw).is_err() {
        raw[..8].copy_from_slice(&unix_millis().to_le_bytes());
    }
    hex::encode(raw)
}

fn invalid(message: String) -> ServingError {
    ServingError::InvalidConfig(message)
}

/// Checks tags: keys non-empty, unique and bounded, values bounded, at most [`MAX_TAGS`].
pub fn checked_tags(tags: Vec<EndpointTag>) -> Result<Vec<EndpointTag>, ServingError> {
    if tags.len() > MAX_TAGS {
        return Err(invalid(format!("tags: at most {MAX_TAGS} tags")));
    }
    let mut keys = HashSet::new();
    for (i, tag) in tags.iter().enumerate() {
        if tag.key.trim().is_empty() || tag.key.chars().count() > MAX_KEY_CHARS {
            return Err(invalid(format!(
                "tags[{i}].key: give 1 to {MAX_KEY_CHARS} characters"
            )));
        }
        if tag
            .value
            .as_ref()
            .is_some_and(|v| v.chars().count() > MAX_VALUE_CHARS)
        {
            return Err(invalid(format!(
                "tags[{i}].value: at most {MAX_VALUE_CHARS} characters"
            )));
        }
        if !keys.insert(tag.key.as_str()) {
            return Err(invalid(format!(
                "tags[{i}].key: `{}` is given twice",
                tag.key
            )));
        }
    }
    Ok(tags)
}

/// `tags` with `delete` removed, then `add` set (a key already there gets the new value).
pub fn patched_tags(
    tags: &[EndpointTag],
    add: Vec<EndpointTag>,
    delete: &[String],
) -> Result<Vec<EndpointTag>, ServingError> {
    let add = checked_tags(add)?;
    let mut out: Vec<EndpointTag> = tags
        .iter()
        .filter(|t| !delete.contains(&t.key) && !add.iter().any(|a| a.key == t.key))
        .cloned()
        .collect();
    out.extend(add);
    checked_tags(out)
}

impl EndpointManager {
    /// Turns fallback on or off.
    pub fn set_fallback(
        &self,
        tenant: &str,
        name: &str,
        enabled: bool,
    ) -> Result<EndpointRecord, ServingError> {
        let _records = self.lock_records();
        let (record, ()) = self.change_record(tenant, name, |record| {
            record.fallback_enabled = enabled;
            record.last_updated_timestamp = unix_millis();
            Ok(())
        })?;
        self.live
            .modify(tenant, name, |active| active.with_fallback(enabled));
        Ok(record)
    }

    /// Adds and deletes tags in one change; returns the endpoint's tags after it.
    pub fn patch_tags(
        &self,
        tenant: &str,
        name: &str,
        add: Vec<EndpointTag>,
        delete: &[String],
    ) -> Result<Vec<EndpointTag>, ServingError> {
        let _records = self.lock_records();
        let (record, ()) = self.change_record(tenant, name, |record| {
            record.tags = patched_tags(&record.tags, add.clone(), delete)?;
            record.last_updated_timestamp = unix_millis();
            Ok(())
        })?;
        Ok(record.tags)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(key: &str, value: &str) -> EndpointTag {
        EndpointTag {
            key: key.into(),
            value: Some(value.into()),
        }
    }

    #[test]
    fn patching_deletes_then_adds_and_overwrites() {
        let tags = vec![tag("team", "a"), tag("env", "dev"), tag("old", "x")];
        let out = patched_tags(
            &tags,
            vec![tag("env", "prod"), tag("new", "y")],
            &["old".into()],
        )
        .expect("patched");
        assert_eq!(
            out,
            vec![tag("team", "a"), tag("env", "prod"), tag("new", "y")]
        );
    }

    #[test]
    fn bad_tags_are_refused_by_index() {
        let e = checked_tags(vec![tag("a", "1"), tag("a", "2")]).expect_err("dup");
        assert!(e.to_string().contains("tags[1].key"), "{e}");
        let e = checked_tags(vec![tag(" ", "1")]).expect_err("empty");
        assert!(e.to_string().contains("tags[0].key"), "{e}");
        let many: Vec<_> = (0..=MAX_TAGS).map(|i| tag(&i.to_string(), "v")).collect();
        assert!(checked_tags(many).is_err());
        assert!(new_id().len() == 32 && new_id() != new_id());
    }
}
