//! Where shards go: pure functions over node lists, no I/O.
//!
//! - [`choose_params`]: K and M for a put, given how many nodes can take shards. The
//!   defaults (K=4, M=2) shrink when fewer nodes are reachable, and the caller says so.
//! - [`segment_nodes`]: the K+M distinct nodes of one segment, rotating the start by the
//!   segment index so that every node gets a fair share.
//! - [`replacement`]: a node for a shard that must move (a failed upload or a repair),
//!   preferring nodes that hold no shard of the segment yet.

use super::nodes::NodeKey;

/// Default K.
pub const DATA_SHARDS_DEFAULT: u8 = 4;
/// Default M.
pub const PARITY_SHARDS_DEFAULT: u8 = 2;

/// K and M for a put and, when they differ from what was asked, why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Choice {
    /// K.
    pub data_shards: u8,
    /// M.
    pub parity_shards: u8,
    /// A plain sentence when the choice is not what was asked (or the defaults).
    pub note: Option<String>,
}

/// K and M for `nodes` usable nodes. Explicit values (`asked`) are kept when the nodes
/// suffice and refused otherwise (the user asked for that much redundancy); the defaults
/// shrink to fit, keeping about a third of the shards as parity, at least one.
pub fn choose_params(nodes: usize, asked_data: Option<u8>, asked_parity: Option<u8>) -> Result<Choice, String> {
    if nodes == 0 {
        return Err("no node can take shards".into());
    }
    let explicit = asked_data.is_some() || asked_parity.is_some();
    let k = asked_data.unwrap_or(DATA_SHARDS_DEFAULT);
    let m = asked_parity.unwrap_or(PARITY_SHARDS_DEFAULT);
    if k == 0 || m == 0 {
        return Err("--data and --parity must both be at least 1".into());
    }
    let total = usize::from(k) + usize::from(m);
    if total <= nodes {
        return Ok(Choice { data_shards: k, parity_shards: m, note: None });
    }
    if explicit {
        return Err(format!(
            "K={k} M={m} needs {total} distinct nodes but only {nodes} can take shards; \
             ask for fewer (K+M <= {nodes}) or add nodes"
        ));
    }
    if nodes == 1 {
        return Ok(Choice {
            data_shards: 1,
            parity_shards: 1,
            note: Some("only 1 node can take shards: using K=1 M=1 on that one node (no protection against losing it)".into()),
        });
    }
    // A third of the shards as parity, rounded, as the defaults have it.
    let m_fit = nodes.div_ceil(3).min(nodes - 1).max(1);
    let k_fit = nodes - m_fit;
    Ok(Choice {
        data_shards: k_fit as u8,
        parity_shards: m_fit as u8,
        note: Some(format!(
            "only {nodes} nodes can take shards: using K={k_fit} M={m_fit} instead of K={k} M={m} \
             (any {m_fit} of them may be lost)"
        )),
    })
}

/// The nodes of segment `index`: `total` entries from `nodes`, distinct when there are
/// enough, starting at `index mod len` so that segments spread over all nodes.
pub fn segment_nodes(nodes: &[NodeKey], index: u64, total: usize) -> Vec<NodeKey> {
    if nodes.is_empty() {
        return Vec::new();
    }
    let start = (index % nodes.len() as u64) as usize;
    (0..total).map(|i| nodes[(start + i) % nodes.len()]).collect()
}

/// A node for a shard of a segment whose shards sit on `holding` (one entry per shard that
/// has a home), avoiding `avoid` (nodes found down or that failed): the first node of
/// `nodes` holding none of the segment; else, when `allow_shared`, the one holding fewest.
/// Returns the node and whether it already holds a shard of the segment.
pub fn replacement(nodes: &[NodeKey], holding: &[NodeKey], avoid: &[NodeKey], allow_shared: bool) -> Option<(NodeKey, bool)> {
    let candidates = nodes.iter().filter(|n| !avoid.contains(n));
    let count = |n: &NodeKey| holding.iter().filter(|h| *h == n).count();
    if let Some(n) = candidates.clone().find(|n| count(n) == 0) {
        return Some((*n, false));
    }
    if !allow_shared {
        return None;
    }
    candidates.min_by_key(|n| count(n)).map(|n| (*n, true))
}

#[cfg(test)]
mod test {
    use super::*;

    fn keys(n: u8) -> Vec<NodeKey> {
        (0..n).map(|i| [i; 32]).collect()
    }

    #[test]
    fn defaults_fit_the_nodes_and_say_so() {
        assert_eq!(choose_params(8, None, None).unwrap(), Choice { data_shards: 4, parity_shards: 2, note: None });
        let c = choose_params(5, None, None).unwrap();
        assert_eq!((c.data_shards, c.parity_shards), (3, 2));
        assert!(c.note.unwrap().contains("only 5 nodes"));
        let c = choose_params(4, None, None).unwrap();
        assert_eq!((c.data_shards, c.parity_shards), (2, 2));
        let c = choose_params(3, None, None).unwrap();
        assert_eq!((c.data_shards, c.parity_shards), (2, 1));
        let c = choose_params(1, None, None).unwrap();
        assert_eq!((c.data_shards, c.parity_shards), (1, 1));
        assert!(choose_params(0, None, None).is_err());
    }

    #[test]
    fn explicit_params_are_kept_or_refused_never_shrunk() {
        assert_eq!(choose_params(5, Some(3), Some(2)).unwrap().note, None);
        let e = choose_params(4, Some(3), Some(2)).unwrap_err();
        assert!(e.contains("needs 5 distinct nodes"), "{e}");
        assert!(choose_params(9, Some(0), Some(2)).is_err());
    }

    #[test]
    fn segments_use_distinct_nodes_and_rotate() {
        let n = keys(5);
        for index in 0..20 {
            let s = segment_nodes(&n, index, 5);
            let mut sorted = s.clone();
            sorted.sort();
            sorted.dedup();
            assert_eq!(sorted.len(), 5, "segment {index}: {s:?}");
            assert_eq!(s[0], n[(index % 5) as usize]);
        }
        let load: Vec<usize> = (0..7).map(|i| (0..70).filter(|s| segment_nodes(&keys(7), *s, 3).contains(&[i; 32])).count()).collect();
        assert!(load.iter().all(|l| *l == 30), "{load:?}");
    }

    #[test]
    fn replacements_prefer_nodes_without_a_shard_of_the_segment() {
        let n = keys(4);
        let holding = [[0; 32], [1; 32], [2; 32]];
        assert_eq!(replacement(&n, &holding, &[], false), Some(([3; 32], false)));
        assert_eq!(replacement(&n, &holding, &[[3; 32]], false), None);
        assert_eq!(replacement(&n, &holding, &[[3; 32], [0; 32]], true), Some(([1; 32], true)));
        assert_eq!(replacement(&n, &holding, &n, true), None);
    }
}
