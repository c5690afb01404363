//! The secure channel: a Noise XX handshake (snow) over length-delimited frames (tokio-util),
//! then each side proves its identity by sending its certificate chain and a signature, made
//! with the chain's key, over the handshake hash and its own Noise static key. So the chain is
//! bound to the key that authenticated this very channel, and must end in a trusted root key.
//!
//! After the handshake, messages of up to [`MESSAGE_BYTES_MAX`] travel as one or more Noise
//! messages (each at most 65,535 bytes), so values up to the data model's limit fit.

use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use snow::StatelessTransportState;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::bytes::Bytes;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

use crate::error::{NetError, Result};
use crate::identity::{Certificate, Identity, VerifiedChain, verify_chain, verify_signature};

/// The Noise protocol every connection speaks.
pub const NOISE_PARAMS: &str = "Noise_XX_25519_ChaChaPoly_BLAKE2s";
/// The largest message after the handshake (a 16 MiB value plus its request, with room).
pub const MESSAGE_BYTES_MAX: usize = 17 * 1024 * 1024;
/// How long a peer may take to finish the whole handshake, however slowly its bytes arrive.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

const NOISE_MESSAGE_BYTES_MAX: usize = 65_535;
/// The largest Noise handshake message we accept (ours carry no payload: under 100 bytes), so
/// a connection that has not authenticated holds kilobytes, not a 64 KiB frame buffer.
const HANDSHAKE_MESSAGE_BYTES_MAX: usize = 1024;
/// A verdict holds a short reason.
const VERDICT_BYTES_MAX: usize = 4096;
/// How long a side that refused its peer waits for the peer's verdict before closing.
const VERDICT_DRAIN_TIMEOUT: Duration = Duration::from_secs(1);
const NOISE_TAG_BYTES: usize = 16;
/// Plaintext per Noise message: one flag byte (more to come or last) plus the chunk.
const CHUNK_BYTES_MAX: usize = NOISE_MESSAGE_BYTES_MAX - NOISE_TAG_BYTES - 1;
const CHUNK_MORE: u8 = 0;
const CHUNK_LAST: u8 = 1;
const BINDING_DOMAIN: &[u8] = b"syncbase channel binding v1\0";
/// A hello holds at most a full chain and a signature.
const HELLO_BYTES_MAX: usize = 64 * 1024;

/// The version of the call protocol (frames) this build speaks; both sides must agree.
/// Version 2 added the verdict that ends the handshake (a refused side is told why); 3 the log
/// status call; 4 the syncgroup calls and the calls between daemons' sync engines; 5 the
/// sync-now call; 6 a pull answered by a delta in parts, each a length-prefixed frame, applied
/// as they arrive.
pub const PROTOCOL_VERSION: u32 = 6;

/// A peer's proof of identity, sent first over the encrypted channel.
#[derive(Serialize, Deserialize)]
struct Hello {
    protocol: u32,
    chain: Vec<Certificate>,
    signature: Vec<u8>,
}

/// Each side's answer to the other's hello: the last message of the handshake, so a side that
/// is refused learns why instead of seeing the connection close.
#[derive(Serialize, Deserialize)]
enum Verdict {
    Accepted,
    Refused(String),
}

type Frames<T> = Framed<T, LengthDelimitedCodec>;

/// The sending half of a channel.
pub struct ChannelWriter<T> {
    sink: SplitSink<Frames<T>, Bytes>,
    transport: Arc<StatelessTransportState>,
    nonce: u64,
    /// Reused between messages rather than allocating 64 KiB per message.
    plain: Vec<u8>,
    cipher: Vec<u8>,
}

/// The receiving half of a channel.
pub struct ChannelReader<T> {
    stream: SplitStream<Frames<T>>,
    transport: Arc<StatelessTransportState>,
    nonce: u64,
    plain: Vec<u8>,
}

/// An authenticated, encrypted channel and who is at the other end.
pub struct Channel<T> {
    /// Sends messages.
    pub writer: ChannelWriter<T>,
    /// Receives messages.
    pub reader: ChannelReader<T>,
    /// The peer's verified name and key.
    pub peer: VerifiedChain,
}

fn protocol(message: impl Into<String>) -> NetError {
    NetError::Protocol(message.into())
}

fn noise(error: snow::Error) -> NetError {
    NetError::Authentication(format!("noise: {error}"))
}

fn binding_message(initiator: bool, handshake_hash: &[u8], noise_static: &[u8]) -> Vec<u8> {
    let mut message = BINDING_DOMAIN.to_vec();
    message.push(u8::from(initiator));
    message.extend_from_slice(handshake_hash);
    message.extend_from_slice(noise_static);
    message
}

async fn next_frame<T: AsyncRead + AsyncWrite + Unpin>(frames: &mut Frames<T>) -> Result<Vec<u8>> {
    match frames.next().await {
        Some(Ok(frame)) => Ok(frame.to_vec()),
        Some(Err(error)) => Err(protocol(format!("bad frame: {error}"))),
        None => Err(NetError::Io(std::io::ErrorKind::UnexpectedEof.into())),
    }
}

/// Runs the handshake on `io` as the initiator (the side that dialed) or the responder, and
/// authenticates the peer against `identity`'s trusted roots.
pub async fn handshake<T>(io: T, identity: &Identity, initiator: bool) -> Result<Channel<T>>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let (channel, ()) = handshake_admitting(io, identity, initiator, |_| Ok(())).await?;
    Ok(channel)
}

/// Like [`handshake`], and once the peer is authenticated, `admit` decides whether to accept
/// it (a daemon's per-principal connection cap, say): its error is the reason the peer is told.
/// What `admit` returns (a slot that frees when dropped, say) comes back with the channel.
#[allow(clippy::disallowed_methods)] // the handshake's deadline is the transport's own timer.
pub async fn handshake_admitting<T, G>(
    io: T,
    identity: &Identity,
    initiator: bool,
    admit: impl FnOnce(&VerifiedChain) -> std::result::Result<G, String>,
) -> Result<(Channel<T>, G)>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let presenting = Presenting {
        signer: identity,
        chain: identity.chain(),
        protocol: PROTOCOL_VERSION,
    };
    tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        handshake_inner(io, presenting, identity, initiator, admit),
    )
    .await
    .map_err(|_| {
        NetError::Authentication(format!(
            "the handshake did not finish within {} s",
            HANDSHAKE_TIMEOUT.as_secs()
        ))
    })?
}

/// What a side presents: a chain, the identity whose key signs the channel binding, and the
/// protocol version it speaks. Normally the chain is the signer's and the version this build's;
/// tests forge either to check the peer refuses it.
struct Presenting<'a> {
    signer: &'a Identity,
    chain: &'a [Certificate],
    protocol: u32,
}

/// Like [`handshake`], but presenting `chain` while signing the binding with `signer`'s key:
/// an honest peer must refuse it unless `chain` names `signer`'s key. For tests.
#[cfg(feature = "testing")]
pub async fn handshake_presenting<T>(
    io: T,
    signer: &Identity,
    chain: &[Certificate],
    verifier: &Identity,
    initiator: bool,
) -> Result<Channel<T>>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let presenting = Presenting {
        signer,
        chain,
        protocol: PROTOCOL_VERSION,
    };
    let (channel, ()) = handshake_inner(io, presenting, verifier, initiator, |_| Ok(())).await?;
    Ok(channel)
}

/// Like [`handshake`], but claiming to speak call protocol `protocol`: a build of another
/// version. For tests.
#[cfg(feature = "testing")]
pub async fn handshake_speaking<T>(
    io: T,
    identity: &Identity,
    initiator: bool,
    protocol: u32,
) -> Result<Channel<T>>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let presenting = Presenting {
        signer: identity,
        chain: identity.chain(),
        protocol,
    };
    let (channel, ()) = handshake_inner(io, presenting, identity, initiator, |_| Ok(())).await?;
    Ok(channel)
}

#[allow(clippy::disallowed_methods)] // the handshake's deadline is the transport's own timer.
async fn handshake_inner<T, G>(
    io: T,
    presenting: Presenting<'_>,
    identity: &Identity,
    initiator: bool,
    admit: impl FnOnce(&VerifiedChain) -> std::result::Result<G, String>,
) -> Result<(Channel<T>, G)>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let codec = LengthDelimitedCodec::builder()
        .max_frame_length(HANDSHAKE_MESSAGE_BYTES_MAX)
        .new_codec();
    let mut frames = Framed::new(io, codec);
    let params = NOISE_PARAMS
        .parse()
        .map_err(|error: snow::Error| protocol(format!("noise parameters: {error}")))?;
    let builder = snow::Builder::new(params);
    let keypair = builder.generate_keypair().map_err(noise)?;
    let builder = snow::Builder::new(
        NOISE_PARAMS
            .parse()
            .map_err(|error: snow::Error| protocol(format!("noise parameters: {error}")))?,
    )
    .local_private_key(&keypair.private)
    .map_err(noise)?;
    let mut state = if initiator {
        builder.build_initiator()
    } else {
        builder.build_responder()
    }
    .map_err(noise)?;
    let mut buffer = vec![0u8; HANDSHAKE_MESSAGE_BYTES_MAX];
    let mut payload = vec![0u8; HANDSHAKE_MESSAGE_BYTES_MAX];
    // XX: -> e; <- e, ee, s, es; -> s, se.
    for step in 0..3 {
        let writing = (step % 2 == 0) == initiator;
        if writing {
            let length = state.write_message(&[], &mut buffer).map_err(noise)?;
            frames
                .send(Bytes::copy_from_slice(&buffer[..length]))
                .await?;
        } else {
            let frame = next_frame(&mut frames).await?;
            state.read_message(&frame, &mut payload).map_err(noise)?;
        }
    }
    let remote_static = state
        .get_remote_static()
        .ok_or_else(|| NetError::Authentication("the peer sent no static key".into()))?
        .to_vec();
    let handshake_hash = state.get_handshake_hash().to_vec();
    let transport = Arc::new(state.into_stateless_transport_mode().map_err(noise)?);
    frames
        .codec_mut()
        .set_max_frame_length(NOISE_MESSAGE_BYTES_MAX);
    let (sink, stream) = frames.split();
    // Buffers grow with the messages that need them: a peer that stops here holds little.
    let mut writer = ChannelWriter {
        sink,
        transport: transport.clone(),
        nonce: 0,
        plain: Vec::new(),
        cipher: Vec::new(),
    };
    let mut reader = ChannelReader {
        stream,
        transport,
        nonce: 0,
        plain: Vec::new(),
    };
    let hello = Hello {
        protocol: presenting.protocol,
        chain: presenting.chain.to_vec(),
        signature: presenting
            .signer
            .sign(&binding_message(
                initiator,
                &handshake_hash,
                &keypair.public,
            ))
            .to_vec(),
    };
    let hello_bytes =
        postcard::to_stdvec(&hello).map_err(|error| protocol(format!("encode hello: {error}")))?;
    writer.send(&hello_bytes).await?;
    let peer_hello = reader
        .receive_at_most(HELLO_BYTES_MAX)
        .await?
        .ok_or_else(|| NetError::Authentication("the peer left during the handshake".into()))?;
    // Judge the peer, tell it the verdict, then learn its verdict on us.
    let judged = judge_hello(
        &peer_hello,
        identity,
        initiator,
        &handshake_hash,
        &remote_static,
    )
    .and_then(|peer| match admit(&peer) {
        Ok(admitted) => Ok((peer, admitted)),
        Err(reason) => Err(Judgement {
            local: NetError::Refused(format!("{:?} was not admitted: {reason}", peer.name)),
            told: reason,
        }),
    });
    let verdict = match &judged {
        Ok(_) => Verdict::Accepted,
        Err(judgement) => Verdict::Refused(judgement.told.clone()),
    };
    let verdict_bytes = postcard::to_stdvec(&verdict)
        .map_err(|error| protocol(format!("encode verdict: {error}")))?;
    // Both sides send their verdict before reading the other's, so neither waits on the other.
    let sent = writer.send(&verdict_bytes).await;
    let peer_verdict = reader.receive_at_most(VERDICT_BYTES_MAX);
    let (peer, admitted) = match judged {
        Ok(judged) => judged,
        Err(judgement) => {
            // Read the peer's verdict (it is on its way) before closing: closing with unread
            // bytes would reset the connection and could destroy ours before it is read.
            let _ = tokio::time::timeout(VERDICT_DRAIN_TIMEOUT, peer_verdict).await;
            return Err(judgement.local);
        }
    };
    // A peer that refused us may have closed already: its verdict can still be read.
    let peer_verdict = peer_verdict.await;
    let refused = |reason: String| {
        NetError::Refused(format!("{:?} refused this connection: {reason}", peer.name))
    };
    match peer_verdict {
        Ok(Some(bytes)) => match postcard::from_bytes(&bytes)
            .map_err(|error| protocol(format!("malformed verdict: {error}")))?
        {
            Verdict::Accepted => {}
            Verdict::Refused(reason) => return Err(refused(reason)),
        },
        Ok(None) => {
            sent?;
            return Err(NetError::Authentication(format!(
                "{:?} left during the handshake",
                peer.name
            )));
        }
        Err(error) => {
            sent?;
            return Err(error);
        }
    }
    sent?;
    Ok((
        Channel {
            writer,
            reader,
            peer,
        },
        admitted,
    ))
}

/// Why a side refused its peer: the error it reports itself, and what it tells the peer.
struct Judgement {
    local: NetError,
    told: String,
}

/// Checks the peer's hello: its protocol version, its chain against our trusted roots, and
/// that the chain is bound to the key that authenticated this channel.
fn judge_hello(
    hello: &[u8],
    identity: &Identity,
    initiator: bool,
    handshake_hash: &[u8],
    remote_static: &[u8],
) -> std::result::Result<VerifiedChain, Judgement> {
    let refuse = |local: NetError, told: String| Judgement { local, told };
    let hello: Hello = postcard::from_bytes(hello).map_err(|error| {
        refuse(
            protocol(format!("malformed hello: {error}")),
            "your hello was malformed".into(),
        )
    })?;
    if hello.protocol != PROTOCOL_VERSION {
        let why = format!(
            "one side speaks protocol version {}, the other {PROTOCOL_VERSION}: run the same syncbase version on both sides",
            hello.protocol
        );
        return Err(refuse(protocol(why.clone()), why));
    }
    let me = identity.name();
    let peer = verify_chain(&hello.chain, identity.trusted_roots()).map_err(|error| match error {
        NetError::UntrustedRoot { chain, root, key, .. } => {
            // Whoever is refused gets the steps that fix it, from its own side.
            let told = format!(
                "{me:?} does not trust the root {root:?} (key {key}) of your identity {chain:?}: export it with `sb identity export-root --out {root}.root` and, with {me:?}'s identity, run `sb identity trust {root}.root`"
            );
            let hint = if initiator {
                format!(
                    ": on its machine run `sb identity export-root --out {root}.root`, then here `sb identity trust {root}.root`"
                )
            } else {
                String::new()
            };
            refuse(NetError::UntrustedRoot { chain, root, key, hint }, told)
        }
        other => {
            let told = format!("{me:?} refused your identity: {other}");
            refuse(other, told)
        }
    })?;
    let bound = <[u8; 64]>::try_from(hello.signature.as_slice())
        .ok()
        .is_some_and(|signature| {
            verify_signature(
                &peer.public_key,
                &binding_message(!initiator, handshake_hash, remote_static),
                &signature,
            )
            .is_ok()
        });
    if !bound {
        let why = format!(
            "{:?} presented a chain not bound to the key that authenticated this channel",
            peer.name
        );
        return Err(refuse(NetError::Authentication(why.clone()), why));
    }
    Ok(peer)
}

impl<T: AsyncRead + AsyncWrite + Unpin> ChannelWriter<T> {
    /// Sends one message (at most [`MESSAGE_BYTES_MAX`] bytes).
    pub async fn send(&mut self, message: &[u8]) -> Result<()> {
        if message.len() > MESSAGE_BYTES_MAX {
            return Err(protocol(format!(
                "a message of {} bytes is larger than the limit of {MESSAGE_BYTES_MAX}",
                message.len()
            )));
        }
        let mut chunks = message.chunks(CHUNK_BYTES_MAX).peekable();
        let (plain, cipher) = (&mut self.plain, &mut self.cipher);
        let cipher_bytes = (message.len() + 1 + NOISE_TAG_BYTES).min(NOISE_MESSAGE_BYTES_MAX);
        if cipher.len() < cipher_bytes {
            cipher.resize(cipher_bytes, 0);
        }
        loop {
            let chunk = chunks.next().unwrap_or(&[]);
            let last = chunks.peek().is_none();
            plain.clear();
            plain.push(if last { CHUNK_LAST } else { CHUNK_MORE });
            plain.extend_from_slice(chunk);
            let length = self
                .transport
                .write_message(self.nonce, plain, cipher)
                .map_err(noise)?;
            self.nonce += 1;
            self.sink
                .feed(Bytes::copy_from_slice(&cipher[..length]))
                .await?;
            if last {
                break;
            }
        }
        self.sink.flush().await?;
        Ok(())
    }

    /// Closes the sending direction.
    pub async fn close(&mut self) -> Result<()> {
        Ok(self.sink.close().await?)
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> ChannelReader<T> {
    /// Receives one message; `None` when the peer closed the connection cleanly.
    pub async fn receive(&mut self) -> Result<Option<Vec<u8>>> {
        self.receive_at_most(MESSAGE_BYTES_MAX).await
    }

    /// Receives one message of at most `bytes_max` bytes (a larger one is a protocol error,
    /// found before it is buffered whole).
    pub async fn receive_at_most(&mut self, bytes_max: usize) -> Result<Option<Vec<u8>>> {
        let mut message = Vec::new();
        let plain = &mut self.plain;
        loop {
            let frame = match self.stream.next().await {
                Some(Ok(frame)) => frame,
                Some(Err(error)) => return Err(protocol(format!("bad frame: {error}"))),
                None if message.is_empty() => return Ok(None),
                None => return Err(protocol("the connection closed inside a message")),
            };
            if plain.len() < frame.len() {
                plain.resize(frame.len(), 0);
            }
            let length = self
                .transport
                .read_message(self.nonce, &frame, plain)
                .map_err(|_| protocol("a message failed to decrypt"))?;
            self.nonce += 1;
            let (flag, chunk) = plain[..length]
                .split_first()
                .ok_or_else(|| protocol("an empty chunk"))?;
            if message.len() + chunk.len() > bytes_max {
                return Err(protocol(format!(
                    "a message is larger than the limit of {bytes_max} bytes"
                )));
            }
            message.extend_from_slice(chunk);
            match *flag {
                CHUNK_LAST => return Ok(Some(message)),
                CHUNK_MORE => {}
                other => return Err(protocol(format!("bad chunk flag {other}"))),
            }
        }
    }
}
