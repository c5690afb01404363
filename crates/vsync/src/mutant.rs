//! Planted bugs for the simulator to catch (test-only). Built only with the `mutants` feature,
//! where the environment variable `SYNCBASE_MUTANT` names the one that is on; without the
//! feature [`on`] is a constant `false` and the compiler removes every planted branch.
//!
//! Each mutant changes only the behaviour it names; the simulator and its invariant checks never
//! read which one is on (the `cargo xtask sim --mutant NAME` driver sets the variable).

/// A planted bug.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mutant {
    /// The initiator applies a delta in two commits, so a batch can arrive in halves.
    SplitBatch,
    /// The watcher records what sync applied as this device's own changes (echo).
    Echo,
    /// Last-writer-wins breaks timestamp ties in favour of the receiving device's side.
    ReceiverTiebreak,
    /// A delta sent in parts is cut every so many records, through objects and batches.
    PartAnywhere,
}

impl Mutant {
    /// Every mutant, by the name `SYNCBASE_MUTANT` and `cargo xtask sim --mutant` use.
    pub const ALL: [(&'static str, Mutant); 4] = [
        ("split-batch", Mutant::SplitBatch),
        ("echo", Mutant::Echo),
        ("receiver-tiebreak", Mutant::ReceiverTiebreak),
        ("part-anywhere", Mutant::PartAnywhere),
    ];
}

/// Whether `mutant` is planted in this process.
#[cfg(feature = "mutants")]
pub fn on(mutant: Mutant) -> bool {
    use std::sync::OnceLock;
    static PLANTED: OnceLock<Option<Mutant>> = OnceLock::new();
    let planted = PLANTED.get_or_init(|| {
        let name = std::env::var("SYNCBASE_MUTANT").ok()?;
        Mutant::ALL
            .iter()
            .find(|(known, _)| *known == name)
            .map(|(_, mutant)| *mutant)
    });
    *planted == Some(mutant)
}

/// Whether `mutant` is planted in this process: never, in a build without the `mutants` feature.
#[cfg(not(feature = "mutants"))]
#[inline(always)]
pub fn on(_mutant: Mutant) -> bool {
    false
}
