//! Tests of `syncbase-store` (one binary): the conformance suite and the watchable layer.

mod conformance;
mod watchable;
