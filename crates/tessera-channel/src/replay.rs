//! Sliding replay window over explicit frame counters.

/// Bits in the window: counters more than this far behind the highest accepted one are refused.
pub const WINDOW_BITS: u64 = 1024;
const WORDS: usize = (WINDOW_BITS / 64) as usize;

/// Remembers which counters of one (peer, epoch) were accepted. Lost and reordered frames are
/// fine: any counter not seen yet and within [`WINDOW_BITS`] of the highest one is accepted.
///
/// Use [`ReplayWindow::check`] before authenticating and [`ReplayWindow::commit`] only after
/// the frame authenticated, so a forged frame can never move the window.
#[derive(Clone, Debug, Default)]
pub struct ReplayWindow {
    /// Highest accepted counter plus one (0 = nothing accepted yet).
    top: u64,
    /// Bit `i` set = counter `top - 1 - i` accepted.
    bits: [u64; WORDS],
}

impl ReplayWindow {
    /// The one counter never accepted: the window's top is the highest accepted counter plus
    /// one, which must fit. (A sender reaches it after 2^64 - 1 records of one epoch, which
    /// rekeying prevents by a very wide margin.)
    pub const LAST: u64 = u64::MAX;

    /// Whether `counter` would be fresh.
    pub fn check(&self, counter: u64) -> bool {
        if counter == Self::LAST {
            return false;
        }
        if counter >= self.top {
            return true;
        }
        let behind = self.top - 1 - counter;
        if behind >= WINDOW_BITS {
            return false;
        }
        self.bits[(behind / 64) as usize] & (1 << (behind % 64)) == 0
    }

    /// Marks `counter` as accepted. Call only after [`check`](Self::check) said it was fresh and
    /// the frame authenticated.
    pub fn commit(&mut self, counter: u64) {
        if counter == Self::LAST {
            // Never fresh (see `check`): committing it would wrap the top to zero and make
            // every counter fresh again.
            return;
        }
        if counter >= self.top {
            let shift = counter - self.top + 1;
            self.shift(shift);
            self.top = counter + 1;
            self.bits[0] |= 1;
        } else {
            let behind = self.top - 1 - counter;
            if behind < WINDOW_BITS {
                self.bits[(behind / 64) as usize] |= 1 << (behind % 64);
            }
        }
    }

    fn shift(&mut self, by: u64) {
        if by >= WINDOW_BITS {
            self.bits = [0; WORDS];
            return;
        }
        let words = (by / 64) as usize;
        let bits = (by % 64) as u32;
        for i in (0..WORDS).rev() {
            let src = i.checked_sub(words);
            let hi = src.map_or(0, |s| self.bits[s]);
            let lo = src
                .and_then(|s| s.checked_sub(1))
                .map_or(0, |s| self.bits[s]);
            self.bits[i] = if bits == 0 {
                hi
            } else {
                (hi << bits) | (lo >> (64 - bits))
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    #[test]
    fn duplicates_refused_reordering_accepted() {
        let mut w = ReplayWindow::default();
        for c in [0, 2, 1, 5, 3] {
            assert!(w.check(c));
            w.commit(c);
            assert!(!w.check(c));
        }
        assert!(w.check(4));
        w.commit(2000);
        assert!(!w.check(5), "far behind the window is refused");
        assert!(w.check(1999));
        assert!(!w.check(2000));
    }

    #[test]
    fn the_last_counter_is_refused_and_cannot_reset_the_window() {
        let mut w = ReplayWindow::default();
        w.commit(u64::MAX - 1);
        assert!(!w.check(u64::MAX - 1));
        assert!(!w.check(u64::MAX), "the last counter is never fresh");
        w.commit(u64::MAX);
        assert!(!w.check(u64::MAX - 1), "the window did not wrap around");
        assert!(!w.check(0), "far behind the window is refused");
        assert!(w.check(u64::MAX - 2));
    }

    /// Counters anywhere in the 64-bit range, clustered so that the window's edges and the
    /// range's ends are hit: a random base, and offsets around it.
    fn counters() -> impl Strategy<Value = Vec<u64>> {
        let base = prop_oneof![Just(0u64), Just(u64::MAX - 2 * WINDOW_BITS), any::<u64>(),];
        (
            base,
            proptest::collection::vec((0u64..3 * WINDOW_BITS, any::<bool>(), any::<u64>()), 1..400),
        )
            .prop_map(|(base, ops)| {
                ops.into_iter()
                    .map(|(offset, far, anywhere)| {
                        if far && offset % 16 == 0 {
                            anywhere
                        } else {
                            base.saturating_add(offset)
                        }
                    })
                    .collect()
            })
    }

    proptest! {
        /// Over the whole counter range, the window agrees with a set-based model: a counter is
        /// fresh if it was not accepted before, is within the window of the highest accepted
        /// one, and is not the last counter.
        #[test]
        fn matches_model_over_the_whole_range(ops in counters()) {
            let mut w = ReplayWindow::default();
            let mut seen = BTreeSet::new();
            let mut top = 0u64;
            for c in ops {
                let in_window = c.saturating_add(WINDOW_BITS) >= top;
                let fresh = c != u64::MAX && !seen.contains(&c) && in_window;
                prop_assert_eq!(w.check(c), fresh, "counter {}", c);
                if fresh {
                    w.commit(c);
                    seen.insert(c);
                    top = top.max(c + 1);
                }
                // Committing without a check (or a replay) never un-sees a counter.
                w.commit(c);
                prop_assert!(!w.check(c));
            }
            for c in &seen {
                prop_assert!(!w.check(*c), "counter {} accepted twice", c);
            }
        }

        /// The window agrees with a set-based model on every counter within the window.
        #[test]
        fn matches_model(ops in proptest::collection::vec(0u64..3000, 1..400)) {
            let mut w = ReplayWindow::default();
            let mut seen = BTreeSet::new();
            let mut top = 0u64;
            for c in ops {
                let in_window = c + WINDOW_BITS >= top;
                let fresh = !seen.contains(&c) && in_window;
                prop_assert_eq!(w.check(c), fresh, "counter {}", c);
                if fresh {
                    w.commit(c);
                    seen.insert(c);
                    top = top.max(c + 1);
                }
            }
        }
    }
}
