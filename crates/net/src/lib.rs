//! `syncbase-net`: who is talking, and the wire they talk over (used by both `server` and
//! `client`, so neither depends on the other).
//!
//! Key types: [`Identity`] (an Ed25519 key pair, the certificate chain naming it, the roots it
//! trusts, and their on-disk format); [`handshake`], which runs Noise XX over any
//! `AsyncRead + AsyncWrite` and binds each side's chain to the key that authenticated the channel;
//! and [`Connection`], multiplexed streaming calls in both directions over that channel,
//! implementing [`Handler`](syncbase_wire::Handler) for outgoing calls.
//!
//! It depends on `syncbase-wire` only among our crates.

mod channel;
pub mod default_paths;
mod error;
#[cfg(feature = "testing")]
pub mod flood;
mod identity;
mod rpc;

pub use channel::{
    Channel, ChannelReader, ChannelWriter, HANDSHAKE_TIMEOUT, MESSAGE_BYTES_MAX, NOISE_PARAMS,
    PROTOCOL_VERSION, handshake, handshake_admitting,
};
#[cfg(feature = "testing")]
pub use channel::{handshake_presenting, handshake_speaking};
pub use error::{NetError, Result};
pub use identity::{
    CHAIN_LINKS_MAX, Certificate, IDENTITY_FORMAT_VERSION, Identity, TrustedRoot, VerifiedChain,
    key_hex, verify_chain, verify_signature,
};
pub use rpc::{
    CALLS_PER_CONNECTION_MAX, Connection, ConnectionOptions, Frame, HandlerFactory,
    REFUSALS_UNWRITTEN_MAX, connect,
};
