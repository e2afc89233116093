//! Logit masking primitives. "Disallowed" means the logit is set to −inf; allowed logits keep
//! their values. Sets that are large (the audio codes) are stored as sorted id ranges so a mask
//! costs one pass of `fill` over the gaps.

/// A set of token ids stored as sorted, disjoint, half-open ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdRanges {
    ranges: Vec<(u32, u32)>,
}

impl IdRanges {
    pub fn from_ids(mut ids: Vec<u32>) -> Self {
        ids.sort_unstable();
        ids.dedup();
        let mut ranges: Vec<(u32, u32)> = Vec::new();
        for id in ids {
            match ranges.last_mut() {
                Some((_, end)) if *end == id => *end += 1,
                _ => ranges.push((id, id + 1)),
            }
        }
        Self { ranges }
    }

    pub fn len(&self) -> usize {
        self.ranges.iter().map(|(a, b)| (b - a) as usize).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    pub fn contains(&self, id: u32) -> bool {
        let i = self.ranges.partition_point(|&(_, end)| end <= id);
        i < self.ranges.len() && self.ranges[i].0 <= id
    }

    /// Sets every id in the set to −inf.
    pub fn ban(&self, logits: &mut [f32]) {
        for &(a, b) in &self.ranges {
            let (a, b) = (a as usize, (b as usize).min(logits.len()));
            if a < b {
                logits[a..b].fill(f32::NEG_INFINITY);
            }
        }
    }

    /// Sets every id outside the set to −inf.
    pub fn keep_only(&self, logits: &mut [f32]) {
        let mut start = 0usize;
        for &(a, b) in &self.ranges {
            let a = (a as usize).min(logits.len());
            logits[start..a].fill(f32::NEG_INFINITY);
            start = (b as usize).min(logits.len()).max(start);
        }
        logits[start..].fill(f32::NEG_INFINITY);
    }
}

/// Keeps only `allowed` (small list); an empty list disallows everything.
pub fn whitelist(logits: &mut [f32], allowed: &[u32]) {
    let saved: Vec<(usize, f32)> = allowed
        .iter()
        .map(|&t| t as usize)
        .filter(|&t| t < logits.len())
        .map(|t| (t, logits[t]))
        .collect();
    logits.fill(f32::NEG_INFINITY);
    for (t, v) in saved {
        logits[t] = v;
    }
}

/// Index of the first maximum (torch.argmax semantics for finite inputs).
pub fn argmax(logits: &[f32]) -> usize {
    let mut best = 0usize;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] {
            best = i;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_mask_exactly_their_ids() {
        let set = IdRanges::from_ids(vec![5, 3, 4, 9, 10, 0]);
        assert_eq!(set.len(), 6);
        for id in 0..12 {
            assert_eq!(set.contains(id), [0, 3, 4, 5, 9, 10].contains(&id), "id {id}");
        }
        let base: Vec<f32> = (0..12).map(|i| i as f32).collect();
        let mut kept = base.clone();
        set.keep_only(&mut kept);
        let mut banned = base.clone();
        set.ban(&mut banned);
        for i in 0..12 {
            let inside = set.contains(i as u32);
            assert_eq!(kept[i], if inside { base[i] } else { f32::NEG_INFINITY });
            assert_eq!(banned[i], if inside { f32::NEG_INFINITY } else { base[i] });
        }
    }

    #[test]
    fn whitelist_keeps_values_and_argmax_takes_first() {
        let mut l = vec![1.0, 5.0, 3.0, 5.0];
        assert_eq!(argmax(&l), 1);
        whitelist(&mut l, &[2, 3, 99]);
        assert_eq!(l, vec![f32::NEG_INFINITY, f32::NEG_INFINITY, 3.0, 5.0]);
        whitelist(&mut l, &[]);
        assert!(l.iter().all(|v| *v == f32::NEG_INFINITY));
    }
}
