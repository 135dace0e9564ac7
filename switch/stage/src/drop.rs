//! Drop reasons, declared by the stage that owns them (as a VPP node declares its error
//! strings), and the counters they land in.
//!
//! A stage declares its reasons once with [`drop_reasons!`](crate::drop_reasons): an enum whose
//! variants carry a counter name and a sentence. Building the stage registers its set in a
//! process-wide table ([`ReasonSet::register`], a mutex taken once per set; a chain registers
//! the sets of its stages); from then on a reason is a compact [`DropReason`] (set and index in
//! a `u16`): a verdict stays small, turning a variant into a reason is one load with no call
//! on the hot path, and counting is an array index. A reason of a set never registered is
//! still counted, under `unregistered/unknown` (slot 0). No stage edits a central list to add
//! a reason.
//!
//! [`DropCounters`] has one relaxed atomic per possible reason: one writer (the worker that
//! owns it), any number of readers (the control thread).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

/// Most reason sets a process can declare.
pub const MAX_SETS: usize = 64;
/// Most reasons one set can declare.
pub const MAX_REASONS: usize = 32;

/// One reason: its counter name and what it means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReasonInfo {
    /// Counter name, as `xvsctl stats` prints it (unique within the stage).
    pub name: &'static str,
    /// A sentence saying what happened.
    pub description: &'static str,
    /// False for events that are counted without a frame being dropped (a MAC not learned,
    /// the frame still forwarded).
    pub drops_frame: bool,
}

/// A stage's reasons. Declared as a `static` by [`drop_reasons!`](crate::drop_reasons).
#[derive(Debug)]
pub struct ReasonSet {
    /// The stage that owns the reasons (`classify`, `l2`, `output`, ...).
    pub stage: &'static str,
    /// The reasons, in counter order.
    pub reasons: &'static [ReasonInfo],
    /// Registry slot (from 1; 0 until registered).
    slot: AtomicU16,
}

static SETS: [OnceLock<&'static ReasonSet>; MAX_SETS] = [const { OnceLock::new() }; MAX_SETS];
static NEXT_SLOT: Mutex<usize> = Mutex::new(0);

impl ReasonSet {
    /// A set of reasons owned by `stage`.
    pub const fn new(stage: &'static str, reasons: &'static [ReasonInfo]) -> ReasonSet {
        ReasonSet {
            stage,
            reasons,
            slot: AtomicU16::new(0),
        }
    }

    /// The set's slot in the registry: 0 (counted as `unregistered`) until
    /// [`ReasonSet::register`]. One load (acquire: whoever sees the slot sees the registry
    /// entry written before it; free on x86).
    #[inline]
    pub fn slot(&self) -> usize {
        usize::from(self.slot.load(Ordering::Acquire))
    }

    /// Registers the set (once; later calls return its slot), so its reasons count under its
    /// own names and `xvsctl stats` lists them. Done when a stage is built, never per frame.
    pub fn register(&'static self) -> usize {
        let mut next = NEXT_SLOT.lock().unwrap_or_else(|e| e.into_inner());
        let s = self.slot();
        if s != 0 {
            return s;
        }
        let slot = (*next).max(1);
        if slot >= MAX_SETS {
            debug_assert!(false, "more than {MAX_SETS} drop reason sets");
            return 0;
        }
        if SETS[slot].set(self).is_ok() {
            *next = slot + 1;
        }
        self.slot.store(slot as u16, Ordering::Release);
        slot
    }

    /// Every registered set, in registration order.
    pub fn registered() -> impl Iterator<Item = &'static ReasonSet> {
        SETS.iter().skip(1).map_while(|s| s.get().copied())
    }

    /// The set's reasons as [`DropReason`]s (registering the set).
    pub fn all(&'static self) -> impl Iterator<Item = DropReason> {
        let base = self.register() * MAX_REASONS;
        (0..self.reasons.len()).map(move |i| DropReason((base + i) as u16))
    }
}

/// Why the datapath dropped a frame (or counted an event): a registered set and an index.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DropReason(u16);

impl DropReason {
    /// Reason `index` of `set` (what [`drop_reasons!`](crate::drop_reasons) enums convert to).
    #[inline]
    pub fn new(set: &ReasonSet, index: u8) -> DropReason {
        debug_assert!(usize::from(index) < set.reasons.len());
        DropReason((set.slot() * MAX_REASONS + usize::from(index)) as u16)
    }

    /// Index into a flat counter array.
    #[inline]
    pub fn index(self) -> usize {
        usize::from(self.0)
    }

    /// The set the reason belongs to.
    pub fn set(self) -> Option<&'static ReasonSet> {
        SETS.get(self.index() / MAX_REASONS)?.get().copied()
    }

    fn info(self) -> Option<&'static ReasonInfo> {
        self.set()?.reasons.get(self.index() % MAX_REASONS)
    }

    /// The owning stage's name (`unregistered` for a set never registered).
    pub fn stage(self) -> &'static str {
        self.set().map_or("unregistered", |s| s.stage)
    }

    /// The counter's name.
    pub fn name(self) -> &'static str {
        self.info().map_or("unknown", |i| i.name)
    }

    /// A sentence saying what happened.
    pub fn describe(self) -> &'static str {
        self.info().map_or("unknown reason", |i| i.description)
    }

    /// False for events counted without a frame being dropped (true for a reason whose set
    /// was never registered: it came from a verdict, as far as anyone can tell).
    pub fn drops_frame(self) -> bool {
        self.info().is_none_or(|i| i.drops_frame)
    }
}

impl std::fmt::Debug for DropReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.stage(), self.name())
    }
}

/// Declares a stage's drop reasons: an enum whose variants convert into [`DropReason`].
///
/// ```
/// xvs_stage::drop_reasons! {
///     /// Why the example stage drops.
///     pub enum ExampleDrop in "example" {
///         TooBig => "too_big", "frame larger than the example allows";
///         Noted => "noted", "counted, frame still forwarded", event;
///     }
/// }
/// ExampleDrop::set().register(); // when the stage is built
/// let r: xvs_stage::drop::DropReason = ExampleDrop::TooBig.into();
/// assert_eq!((r.stage(), r.name(), r.drops_frame()), ("example", "too_big", true));
/// ```
#[macro_export]
macro_rules! drop_reasons {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident in $stage:literal {
            $( $variant:ident => $rname:literal, $desc:literal $(, $kind:ident)? ; )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u8)]
        $vis enum $name {
            $( #[doc = $desc] $variant, )*
        }

        impl $name {
            /// Every reason of the stage, in counter order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];

            /// The stage's reason set (registered on first use).
            pub fn set() -> &'static $crate::drop::ReasonSet {
                const _: () = assert!(
                    $name::ALL.len() <= $crate::drop::MAX_REASONS,
                    "too many reasons in one set"
                );
                static SET: $crate::drop::ReasonSet = $crate::drop::ReasonSet::new(
                    $stage,
                    &[$($crate::drop::ReasonInfo {
                        name: $rname,
                        description: $desc,
                        drops_frame: $crate::drop_reasons!(@drops $($kind)?),
                    },)*],
                );
                &SET
            }

            /// This reason as a datapath [`DropReason`]($crate::drop::DropReason).
            #[inline]
            pub fn reason(self) -> $crate::drop::DropReason {
                $crate::drop::DropReason::new(Self::set(), self as u8)
            }
        }

        impl From<$name> for $crate::drop::DropReason {
            #[inline]
            fn from(r: $name) -> $crate::drop::DropReason {
                r.reason()
            }
        }
    };
    (@drops) => { true };
    (@drops event) => { false };
}

/// One counter per possible reason.
#[derive(Debug)]
pub struct DropCounters {
    counts: Box<[AtomicU64]>,
}

impl Default for DropCounters {
    fn default() -> Self {
        DropCounters {
            counts: (0..MAX_SETS * MAX_REASONS)
                .map(|_| AtomicU64::new(0))
                .collect(),
        }
    }
}

impl DropCounters {
    /// Adds `n` to `reason`'s counter.
    #[inline]
    pub fn add(&self, reason: impl Into<DropReason>, n: u64) {
        if let Some(c) = self.counts.get(reason.into().index()) {
            c.fetch_add(n, Relaxed);
        }
    }

    /// Current value of `reason`'s counter.
    pub fn get(&self, reason: impl Into<DropReason>) -> u64 {
        self.counts
            .get(reason.into().index())
            .map_or(0, |c| c.load(Relaxed))
    }

    /// Every registered reason with its count, stage by stage (and, when any, drops of
    /// reasons whose set was never registered, as `unregistered/unknown`).
    pub fn snapshot(&self) -> Vec<(DropReason, u64)> {
        let unregistered: u64 = (0..MAX_REASONS)
            .map(|i| self.get(DropReason(i as u16)))
            .sum();
        ReasonSet::registered()
            .flat_map(ReasonSet::all)
            .map(|r| (r, self.get(r)))
            .chain((unregistered > 0).then_some((DropReason(0), unregistered)))
            .collect()
    }

    /// Frames dropped, over every reason that drops a frame.
    pub fn frames_dropped(&self) -> u64 {
        self.snapshot()
            .into_iter()
            .filter(|(r, _)| r.drops_frame())
            .map(|(_, n)| n)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::drop_reasons! {
        /// Test reasons.
        enum TestDrop in "test" {
            One => "one", "the first";
            Two => "two", "the second", event;
        }
    }

    crate::drop_reasons! {
        /// Another stage's reasons, with a name the first also uses.
        enum OtherDrop in "other" {
            Again => "one", "same name, other stage";
        }
    }

    #[test]
    fn reasons_carry_their_stage_name_and_kind() {
        TestDrop::set().register();
        OtherDrop::set().register();
        let one: DropReason = TestDrop::One.into();
        let two = TestDrop::Two.reason();
        let again: DropReason = OtherDrop::Again.into();
        assert_eq!(
            (one.stage(), one.name(), one.describe()),
            ("test", "one", "the first")
        );
        assert!(one.drops_frame() && !two.drops_frame());
        assert_ne!(one, again, "same name, different stages");
        assert_eq!(again.stage(), "other");
        assert_eq!(format!("{one:?}"), "test/one");
    }

    #[test]
    fn counters_add_up_per_reason_and_list_every_registered_reason() {
        TestDrop::set().register();
        OtherDrop::set().register();
        let c = DropCounters::default();
        c.add(TestDrop::One, 2);
        c.add(TestDrop::One, 3);
        c.add(TestDrop::Two, 7);
        c.add(OtherDrop::Again, 1);
        assert_eq!(c.get(TestDrop::One), 5);
        assert_eq!(c.get(OtherDrop::Again), 1);
        let snap = c.snapshot();
        assert!(snap.contains(&(TestDrop::Two.reason(), 7)));
        assert_eq!(c.frames_dropped(), 6, "events are not dropped frames");
    }

    crate::drop_reasons! {
        /// A set nobody registers.
        enum LostDrop in "lost" {
            Gone => "gone", "never registered";
        }
    }

    #[test]
    fn reasons_of_an_unregistered_set_are_still_counted() {
        let c = DropCounters::default();
        c.add(LostDrop::Gone, 3);
        let r = LostDrop::Gone.reason();
        assert_eq!((r.stage(), r.name()), ("unregistered", "unknown"));
        assert!(c.snapshot().contains(&(r, 3)));
        assert_eq!(
            c.frames_dropped(),
            3,
            "an unknown reason still counts as a dropped frame"
        );
    }
}
