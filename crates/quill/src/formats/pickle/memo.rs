//! The memo (PUT/GET): values are stored when memoized and resolved when consumed, so that a
//! container memoized while empty and filled afterwards is fetched complete. An entry is moved
//! out to its last consumer and copied for the others; copies are charged against a budget
//! proportional to the input length.

use super::{Item, MemoEntry, Meta, Unpickler};
use crate::error::Result;
use crate::formats::pyobj::PyValue;

impl Unpickler<'_> {
    pub(super) fn charge_copy(&mut self, m: Meta) -> Result<()> {
        if m.weight > self.copy_budget {
            return Err(self.err(
                "shared values are referenced more often than the file's size allows \
                 (memo expansion attack?)",
            ));
        }
        self.copy_budget -= m.weight;
        Ok(())
    }

    /// Resolves a stack item into an owned value (copying out of the memo when the entry is
    /// still needed later).
    pub(super) fn resolve(&mut self, item: Item) -> Result<(PyValue, Meta)> {
        let id = match item {
            Item::Val(v, m) => return Ok((v, m)),
            Item::Ref(id) => id,
        };
        let (uses_left, meta) = match self.memo.get(&id) {
            Some(e) => (e.uses_left, e.meta),
            None => {
                return Err(self.err(format!(
                    "memo key {id} is used more often than the pickle fetches it"
                )))
            }
        };
        if uses_left <= 1 {
            return match self.memo.remove(&id) {
                Some(e) => Ok((e.value, e.meta)),
                None => Err(self.err(format!("memo key {id} vanished"))),
            };
        }
        // Charge before copying, so an over-budget copy is never made.
        self.charge_copy(meta)?;
        match self.memo.get_mut(&id) {
            Some(e) => {
                e.uses_left -= 1;
                Ok((e.value.clone(), e.meta))
            }
            None => Err(self.err(format!("memo key {id} vanished"))),
        }
    }

    /// PUT/BINPUT/LONG_BINPUT/MEMOIZE: remember the top value under `id`.
    pub(super) fn memoize(&mut self, id: u64) -> Result<()> {
        self.memo_keys.insert(id);
        let fetched = self.gets.get(&id).copied().unwrap_or(0);
        if fetched == 0 {
            // Never fetched again: nothing to remember.
            if self.stack.is_empty() {
                return Err(self.err("stack is empty"));
            }
            return Ok(());
        }
        let Some(top) = self.stack.pop() else {
            return Err(self.err("stack is empty"));
        };
        let (value, meta) = match top {
            Item::Ref(j) if j == id => {
                self.stack.push(Item::Ref(j));
                return Ok(());
            }
            Item::Ref(j) => {
                // Keep the original slot; copy the value under the new key.
                let meta = match self.memo.get(&j) {
                    Some(e) => e.meta,
                    None => return Err(self.err(format!("memo key {j} vanished"))),
                };
                self.charge_copy(meta)?;
                let copy = match self.memo.get(&j) {
                    Some(e) => (e.value.clone(), e.meta),
                    None => return Err(self.err(format!("memo key {j} vanished"))),
                };
                self.stack.push(Item::Ref(j));
                copy
            }
            Item::Val(v, m) => {
                self.stack.push(Item::Ref(id));
                (v, m)
            }
        };
        self.memo.insert(
            id,
            MemoEntry {
                value,
                meta,
                uses_left: fetched.saturating_add(1),
            },
        );
        Ok(())
    }
}
