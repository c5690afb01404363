//! `syncbase-util`: what every layer above the store shares (mirrors Go `server/util`).
//!
//! Key types: the [`Layer`] trait; [`keys`], the only place that builds or parses row and
//! metadata keys (an order-preserving, escape-based tuple encoding); typed put/get/delete with
//! postcard ([`get_typed`], [`put_typed`]); the [`HybridClock`]; and [`StoreLayout`], the on-disk
//! layout of a service (one set of stores: the service store plus one per database, and the
//! migration from the layout of one directory per store). It re-exports the
//! [`Clock`] and [`Rng`] seams from `syncbase-store`.
//!
//! It depends on `syncbase-store` only, and knows nothing about sync, rows' meaning or the wire.

mod clock;
mod error;
pub mod keys;
mod layout;
mod typed;

pub use clock::{CLOCK_DRIFT_MAX_NS, HybridClock, load_clock_floor, save_clock_floor};
pub use error::{Error, Result};
pub use layout::{
    GivenSetOpener, LAYOUT_FORMAT_VERSION, MemoryStoreSetOpener, StoreLayout, StoreSetOpener,
};
pub use syncbase_store::{Clock, EntropyRng, ManualClock, Rng, SeededRng, SystemClock};
pub use typed::{
    Layer, decode_typed, delete, get_layer_data, get_typed, put_layer_data, put_typed,
    put_typed_owned,
};
