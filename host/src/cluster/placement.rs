//! Which nodes own an endpoint version: rendezvous (highest-random-weight) hashing. Every
//! node scores every live node for a key with the same hash and takes the `owners`
//! highest; no coordination is needed, all nodes that see the same live set agree, and
//! when a node leaves or joins only the keys it owned (or now owns) move: on a leave each
//! key that had it gains one replacement and keeps its other owners; on a join a key gains
//! the newcomer (and drops its lowest-scored owner) with probability `owners / n`.
//!
//! The weight is SHA-256 of the key and the node id (not `std`'s hasher, whose output may
//! change between Rust releases: nodes built by different releases, as in a rolling
//! upgrade, must agree).

use super::membership::NodeInfo;
use sha2::{Digest, Sha256};

/// Default number of owners of each endpoint version (`--owners`).
pub const DEFAULT_OWNERS: usize = 2;

/// The placement key of an endpoint's config version: the owners of an endpoint change
/// only when its config does (or nodes come and go).
pub fn endpoint_key(tenant: &str, endpoint: &str, config_version: u64) -> String {
    format!("endpoint:{tenant}/{endpoint}@{config_version}")
}

/// The placement key of a model version queried directly (KServe V2 by model name).
pub fn model_key(tenant: &str, model: &str, version: u64) -> String {
    format!("model:{tenant}/{model}@{version}")
}

/// The owner choice: how many owners each key has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    owners: usize,
}

impl Placement {
    /// Each key owned by `owners` nodes (at least one).
    pub fn new(owners: usize) -> Self {
        Self {
            owners: owners.max(1),
        }
    }

    /// How many owners each key has (fewer when fewer nodes are live).
    pub fn owners_per_key(&self) -> usize {
        self.owners
    }

    /// The owners of `key` among `nodes`, highest weight first (the first is the one a
    /// forwarding node tries first).
    pub fn owners<'a>(&self, key: &str, nodes: &'a [NodeInfo]) -> Vec<&'a NodeInfo> {
        let mut scored: Vec<(u64, &NodeInfo)> =
            nodes.iter().map(|n| (weight(key, &n.id), n)).collect();
        // Highest weight first; a tie (astronomically rare) is broken by id so every node
        // still agrees.
        scored.sort_unstable_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.id.cmp(&b.1.id)));
        scored.dedup_by(|a, b| a.1.id == b.1.id);
        scored
            .into_iter()
            .take(self.owners)
            .map(|(_, n)| n)
            .collect()
    }

    /// Whether the node `id` owns `key` among `nodes`.
    pub fn is_owner(&self, key: &str, id: &str, nodes: &[NodeInfo]) -> bool {
        self.owners(key, nodes).iter().any(|n| n.id == id)
    }
}

/// The weight of node `node` for `key`: the first 8 bytes of SHA-256 over both, each
/// length-prefixed (so `("ab", "c")` and `("a", "bc")` differ).
fn weight(key: &str, node: &str) -> u64 {
    let mut hash = Sha256::new();
    hash.update((key.len() as u64).to_le_bytes());
    hash.update(key.as_bytes());
    hash.update((node.len() as u64).to_le_bytes());
    hash.update(node.as_bytes());
    let digest = hash.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeSet, HashMap};

    fn nodes(ids: &[&str]) -> Vec<NodeInfo> {
        ids.iter()
            .map(|id| NodeInfo {
                id: (*id).to_string(),
                url: format!("http://{id}:8080"),
            })
            .collect()
    }

    fn keys(n: usize) -> Vec<String> {
        (0..n)
            .map(|i| format!("tenant{}/endpoint{i}@{}", i % 7, i % 3 + 1))
            .collect()
    }

    fn owner_set(p: Placement, key: &str, nodes: &[NodeInfo]) -> BTreeSet<String> {
        p.owners(key, nodes).iter().map(|n| n.id.clone()).collect()
    }

    #[test]
    fn owners_are_distinct_stable_and_k_of_them() {
        let p = Placement::new(2);
        let live = nodes(&["a", "b", "c", "d"]);
        for key in keys(200) {
            let first = owner_set(p, &key, &live);
            assert_eq!(first.len(), 2, "{key}");
            // Every node computes the same owners whatever order it lists the nodes in.
            let mut reversed = live.clone();
            reversed.reverse();
            assert_eq!(owner_set(p, &key, &reversed), first, "{key}");
        }
        // Fewer nodes than owners: all of them, once each.
        assert_eq!(owner_set(Placement::new(5), "k", &live).len(), 4);
        assert!(Placement::new(2).owners("k", &[]).is_empty());
        // Zero owners would mean nobody serves: it is one.
        assert_eq!(Placement::new(0).owners_per_key(), 1);
    }

    #[test]
    fn ownership_is_balanced() {
        let live = nodes(&["node-0", "node-1", "node-2", "node-3", "node-4"]);
        for k in [1, 2, 3] {
            let p = Placement::new(k);
            let mut count: HashMap<String, usize> = HashMap::new();
            let all = keys(10_000);
            for key in &all {
                for owner in p.owners(key, &live) {
                    *count.entry(owner.id.clone()).or_default() += 1;
                }
            }
            let expected = (all.len() * k) as f64 / live.len() as f64;
            for node in &live {
                let got = count.get(&node.id).copied().unwrap_or(0) as f64;
                let off = (got - expected).abs() / expected;
                assert!(
                    off < 0.05,
                    "k={k}: {} owns {got} keys, expected about {expected}",
                    node.id
                );
            }
        }
    }

    #[test]
    fn a_leaving_node_moves_only_its_keys() {
        let p = Placement::new(2);
        let before = nodes(&["a", "b", "c", "d", "e"]);
        let after = nodes(&["a", "b", "d", "e"]);
        let mut moved = 0;
        let all = keys(5_000);
        for key in &all {
            let old = owner_set(p, key, &before);
            let new = owner_set(p, key, &after);
            if old.contains("c") {
                // The other owner stays; exactly one replacement arrives.
                let kept: BTreeSet<_> = old.iter().filter(|id| *id != "c").cloned().collect();
                assert!(kept.is_subset(&new), "{key}: {old:?} -> {new:?}");
                assert_eq!(new.difference(&kept).count(), 1, "{key}");
                moved += 1;
            } else {
                assert_eq!(old, new, "{key}: owners changed though c did not own it");
            }
        }
        // c owned about 2/5 of the keys.
        let share = moved as f64 / all.len() as f64;
        assert!((0.35..0.45).contains(&share), "c owned {share} of the keys");
    }

    #[test]
    fn a_joining_node_takes_only_its_share() {
        let p = Placement::new(2);
        let before = nodes(&["a", "b", "c", "d"]);
        let after = nodes(&["a", "b", "c", "d", "e"]);
        let mut gained = 0;
        let all = keys(5_000);
        for key in &all {
            let old = owner_set(p, key, &before);
            let new = owner_set(p, key, &after);
            if new.contains("e") {
                // The newcomer replaces exactly one owner.
                assert_eq!(
                    old.intersection(&new).count(),
                    1,
                    "{key}: {old:?} -> {new:?}"
                );
                gained += 1;
            } else {
                assert_eq!(old, new, "{key}: owners changed though e does not own it");
            }
        }
        // About owners / n = 2/5 of the keys move to the newcomer, and no more.
        let share = gained as f64 / all.len() as f64;
        assert!((0.35..0.45).contains(&share), "e took {share} of the keys");
    }

    #[test]
    fn weights_separate_key_and_node() {
        assert_ne!(weight("ab", "c"), weight("a", "bc"));
        assert_eq!(weight("k", "n"), weight("k", "n"));
    }
}
