//! The candidate set the sampler chain works on: (token id, logit) pairs. It starts as the full
//! vocabulary in id order; processors change logits (penalties, bias, temperature), mask tokens
//! (logit −∞) or drop them (top-k, top-p, ...). Dropping a token is the same as masking it:
//! both give it probability zero.

/// One candidate token.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    pub id: u32,
    pub logit: f32,
}

/// The candidates of one sampling step.
#[derive(Debug, Clone, Default)]
pub struct Candidates {
    items: Vec<Candidate>,
    /// Whether `items` is sorted by logit, descending, ties by ascending id. When false, `items`
    /// is the whole vocabulary in id order (so `items[id].id == id`).
    sorted: bool,
    /// Scratch for [`Self::keep_top`]'s selection (kept to reuse its allocation).
    heap: Vec<f32>,
}

impl Candidates {
    /// Fills the set with `logits` [vocab] in id order. NaN logits are masked.
    pub fn reset_from(&mut self, logits: &[f32]) {
        self.items.clear();
        self.items
            .extend(logits.iter().enumerate().map(|(i, &l)| Candidate {
                id: i as u32,
                logit: if l.is_nan() { f32::NEG_INFINITY } else { l },
            }));
        self.sorted = false;
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn items(&self) -> &[Candidate] {
        &self.items
    }

    pub fn is_sorted(&self) -> bool {
        self.sorted
    }

    /// Mutable access to a token's logit, if the token is still a candidate.
    pub fn logit_mut(&mut self, id: u32) -> Option<&mut f32> {
        if !self.sorted {
            return self.items.get_mut(id as usize).map(|c| &mut c.logit);
        }
        self.items
            .iter_mut()
            .find(|c| c.id == id)
            .map(|c| &mut c.logit)
    }

    /// Applies `f` to every logit.
    pub fn map_logits(&mut self, f: impl Fn(f32) -> f32) {
        for c in &mut self.items {
            c.logit = f(c.logit);
        }
    }

    /// Sorts by logit, descending; equal logits by ascending id (a total, deterministic order).
    pub fn sort(&mut self) {
        if self.sorted {
            return;
        }
        self.items.sort_unstable_by(Self::order);
        self.sorted = true;
    }

    /// Keeps the `k` highest candidates and every one tied with the k-th logit, sorted: the
    /// same set and order as sorting everything and keeping `i < k || logit >= kth`, but with
    /// the k-th logit found in one pass and only the survivors sorted.
    pub fn keep_top(&mut self, k: usize) {
        if k == 0 || k >= self.items.len() {
            return;
        }
        if !self.sorted {
            // The k highest are exactly those at or above the k-th logit (no NaN here: masked
            // at reset), and so are their ties.
            let kth = self.kth_logit(k);
            self.items.retain(|c| c.logit >= kth);
            self.items.sort_unstable_by(Self::order);
            self.sorted = true;
            return;
        }
        let kth = self.items[k - 1].logit;
        self.retain_sorted(|i, c| i < k || c.logit >= kth);
    }

    /// The `k`-th highest logit (`1 ≤ k ≤ len`, duplicates counted): one pass keeping the `k`
    /// highest seen so far in a min-heap. After the first few thousand candidates a new one
    /// rarely beats the heap's least, so this is one compare per candidate: top-k 200 over
    /// GPT-2's 50,257 logits, which partitioning all the candidates (`select_nth_unstable`) made a
    /// quarter of a millisecond per sequence and step, on the thread that every batch step waits
    /// for.
    fn kth_logit(&mut self, k: usize) -> f32 {
        let heap = &mut self.heap;
        heap.clear();
        heap.extend(self.items[..k].iter().map(|c| c.logit));
        for i in (0..k / 2).rev() {
            sift_down(heap, i);
        }
        for c in &self.items[k..] {
            if c.logit.total_cmp(&heap[0]).is_gt() {
                heap[0] = c.logit;
                sift_down(heap, 0);
            }
        }
        heap[0]
    }

    /// The sorted order: logit descending, then id ascending.
    fn order(a: &Candidate, b: &Candidate) -> std::cmp::Ordering {
        b.logit.total_cmp(&a.logit).then(a.id.cmp(&b.id))
    }

    /// Keeps only the first `n` candidates of the sorted order.
    pub fn truncate_sorted(&mut self, n: usize) {
        self.sort();
        self.items.truncate(n);
    }

    /// Removes masked (−∞) candidates.
    pub fn drop_masked(&mut self) {
        let sorted = self.sorted;
        if !sorted {
            // Dropping breaks the id-order invariant: move to the sorted representation.
            self.sort();
        }
        self.items.retain(|c| c.logit > f32::NEG_INFINITY);
    }

    /// Keeps candidates for which `keep(index_in_sorted_order, candidate)` holds.
    pub fn retain_sorted(&mut self, mut keep: impl FnMut(usize, &Candidate) -> bool) {
        self.sort();
        let mut i = 0;
        self.items.retain(|c| {
            let k = keep(i, c);
            i += 1;
            k
        });
    }

    /// Softmax probabilities of the candidates, in their current order, computed in f64.
    pub fn probs(&self, out: &mut Vec<f64>) {
        out.clear();
        let max = self
            .items
            .iter()
            .map(|c| c.logit)
            .fold(f32::NEG_INFINITY, f32::max);
        if max == f32::NEG_INFINITY {
            out.resize(self.items.len(), 0.0);
            return;
        }
        let mut total = 0.0f64;
        for c in &self.items {
            let e = ((c.logit - max) as f64).exp();
            total += e;
            out.push(e);
        }
        for p in out.iter_mut() {
            *p /= total;
        }
    }

    /// Whether every candidate is masked (or none is left).
    pub fn all_masked(&self) -> bool {
        self.items.iter().all(|c| c.logit == f32::NEG_INFINITY)
    }

    /// The highest-logit candidate; ties go to the lowest id.
    pub fn best(&self) -> Option<Candidate> {
        if self.sorted {
            return self.items.first().copied();
        }
        let mut best: Option<Candidate> = None;
        for c in &self.items {
            if best.is_none_or(|b| c.logit > b.logit) {
                best = Some(*c);
            }
        }
        best
    }
}

/// Restores the min-heap property (by `f32::total_cmp`) of `h` below `i`.
fn sift_down(h: &mut [f32], mut i: usize) {
    loop {
        let (l, r) = (2 * i + 1, 2 * i + 2);
        let mut m = i;
        if l < h.len() && h[l].total_cmp(&h[m]).is_lt() {
            m = l;
        }
        if r < h.len() && h[r].total_cmp(&h[m]).is_lt() {
            m = r;
        }
        if m == i {
            return;
        }
        h.swap(i, m);
        i = m;
    }
}
