//! Identities, the authenticated channel, and calls over it.

// Transport tests use tokio's clock for deadlines and idle timeouts.
#![allow(clippy::disallowed_methods)]

use std::sync::Arc;

use proptest::prelude::*;
use syncbase_net::{
    Connection, ConnectionOptions, HandlerFactory, Identity, TrustedRoot, VerifiedChain, handshake,
    handshake_admitting, handshake_presenting, verify_chain,
};
use syncbase_wire::{Handler, Request, Response, Responses, WireError, codes};
use tokio::io::AsyncWriteExt;

#[test]
fn identities_chain_names_and_survive_a_round_trip_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let alice = Identity::new_root("alice").unwrap();
    let laptop = alice.bless("laptop").unwrap();
    assert_eq!(laptop.name(), "alice:laptop");
    assert_eq!(laptop.root_name(), "alice");
    let verified = verify_chain(laptop.chain(), alice.trusted_roots()).unwrap();
    assert_eq!(verified.name, "alice:laptop");
    assert_eq!(verified.public_key, laptop.public_key());

    assert!(laptop.create_new(dir.path()).unwrap());
    assert!(
        !alice.create_new(dir.path()).unwrap(),
        "create_new must not overwrite"
    );
    let loaded = Identity::load(dir.path()).unwrap();
    assert_eq!(loaded.name(), "alice:laptop");
    assert_eq!(loaded.public_key(), laptop.public_key());

    let line = alice.root().to_line();
    assert_eq!(TrustedRoot::from_line(&line).unwrap(), alice.root());
    assert!(TrustedRoot::from_line("syncbase-root alice zz").is_err());
    std::fs::write(dir.path().join("identity"), b"garbage").unwrap();
    assert_eq!(
        Identity::load(dir.path()).err().unwrap().code(),
        "net.identity"
    );
    assert!(Identity::new_root("al:ice").is_err());
}

#[test]
fn new_root_names_and_extensions_refuse_dot_names_and_bidirectional_controls() {
    let alice = Identity::new_root("alice").unwrap();
    for bad in [
        ".",
        "..",
        "evil\u{202e}txt",
        "\u{2066}x",
        "x\u{200f}",
        "a$b",
        "a:b",
    ] {
        let root = Identity::new_root(bad).err().unwrap();
        let blessed = alice.bless(bad).err().unwrap();
        for error in [root, blessed] {
            assert_eq!(error.code(), "net.identity", "{bad:?}");
            assert!(error.to_string().contains("invalid name"), "{error}");
        }
    }
    assert!(
        Identity::new_root("..")
            .err()
            .unwrap()
            .to_string()
            .contains("reserved")
    );
    assert!(
        alice
            .bless("a\u{202e}b")
            .err()
            .unwrap()
            .to_string()
            .contains("bidirectional")
    );
    alice.bless("...").unwrap();
    // A root named before the rule still verifies, and its root file still parses.
    let dotted = Identity::new_root("old").unwrap().forge_root_named(".");
    let mut daemon = Identity::new_root("daemon").unwrap();
    daemon
        .trust(TrustedRoot::from_line(&dotted.root().to_line()).unwrap())
        .unwrap();
    assert_eq!(
        verify_chain(dotted.chain(), daemon.trusted_roots())
            .unwrap()
            .name,
        "."
    );
}

#[test]
fn untrust_removes_every_root_of_a_name_but_not_the_own_root() {
    let mut alice = Identity::new_root("alice").unwrap();
    let bob = Identity::new_root("bob").unwrap();
    let carol = Identity::new_root("carol").unwrap();
    alice.trust(bob.root()).unwrap();
    alice.trust(carol.root()).unwrap();
    assert_eq!(alice.untrust("bob").unwrap(), 1);
    let names: Vec<&str> = alice
        .trusted_roots()
        .iter()
        .map(|root| root.name.as_str())
        .collect();
    assert_eq!(names, ["alice", "carol"]);
    assert!(verify_chain(bob.chain(), alice.trusted_roots()).is_err());
    let missing = alice.untrust("bob").unwrap_err();
    assert!(missing.to_string().contains("no trusted root"), "{missing}");
    let own = alice.untrust("alice").unwrap_err();
    assert!(own.to_string().contains("own root"), "{own}");
    let mut laptop = alice.bless("laptop").unwrap();
    assert!(laptop.untrust("alice").is_err());
    assert_eq!(laptop.untrust("carol").unwrap(), 1);
}

#[test]
fn a_trusted_root_cannot_claim_another_name() {
    let alice = Identity::new_root("alice").unwrap();
    let mut daemon = Identity::new_root("alice").unwrap();
    let bob = Identity::new_root("bob").unwrap();
    daemon.trust(bob.root()).unwrap();
    // bob's key, trusted as "bob", signs itself a root certificate named "alice".
    let renamed = syncbase_net::TrustedRoot {
        name: "alice".into(),
        public_key: bob.public_key(),
    };
    assert!(daemon.trust(renamed).is_err());
    assert!(
        daemon.trust(alice.root()).is_err(),
        "a second key for an already trusted name"
    );
    let forged = bob.forge_root_named("alice");
    verify_chain(bob.chain(), daemon.trusted_roots()).unwrap();
    let error = verify_chain(forged.chain(), daemon.trusted_roots()).unwrap_err();
    assert_eq!(error.code(), "net.untrusted_root");
}

#[test]
fn chains_with_untrusted_roots_or_bad_signatures_are_refused() {
    let alice = Identity::new_root("alice").unwrap();
    let impostor = Identity::new_root("alice").unwrap();
    let error = verify_chain(impostor.chain(), alice.trusted_roots()).unwrap_err();
    assert_eq!(error.code(), "net.untrusted_root");
    let mut tampered = alice.bless("phone").unwrap().chain().to_vec();
    tampered[1].extension = "tablet".into();
    assert!(verify_chain(&tampered, alice.trusted_roots()).is_err());
    assert!(verify_chain(&[], alice.trusted_roots()).is_err());
}

fn pair() -> (Identity, Identity) {
    let alice = Identity::new_root("alice").unwrap();
    let mut bob = Identity::new_root("bob").unwrap().bless("x").unwrap();
    bob.trust(alice.root()).unwrap();
    let mut alice = alice;
    alice.trust(bob.root()).unwrap();
    (alice, bob)
}

#[tokio::test]
async fn a_handshake_authenticates_both_sides() {
    let (alice, bob) = pair();
    let (left, right) = tokio::io::duplex(1 << 16);
    let (a, b) = tokio::join!(handshake(left, &alice, true), handshake(right, &bob, false));
    assert_eq!(a.unwrap().peer.name, "bob:x");
    assert_eq!(b.unwrap().peer.name, "alice");
}

#[tokio::test]
async fn a_root_with_a_trusted_name_but_another_key_is_refused() {
    let (alice, _) = pair();
    let impostor = Identity::new_root("bob").unwrap();
    let (left, right) = tokio::io::duplex(1 << 16);
    let (a, _) = tokio::join!(
        handshake(left, &alice, true),
        handshake(right, &impostor, false)
    );
    let error = a.err().unwrap();
    assert_eq!(error.code(), "net.untrusted_root", "{error}");
    // The dialer's own message names the root and the command that fixes it.
    let message = error.to_string();
    assert!(message.contains(r#"rooted in "bob""#), "{message}");
    assert!(message.contains("sb identity trust bob.root"), "{message}");
}

#[tokio::test]
async fn a_refused_dialer_is_told_why_and_how_to_fix_it() {
    let (alice, _) = pair();
    // carol trusts alice's daemon, but the daemon does not trust carol.
    let mut carol = Identity::new_root("carol").unwrap();
    carol.trust(alice.root()).unwrap();
    let (left, right) = tokio::io::duplex(1 << 16);
    let (client, server) = tokio::join!(
        handshake(left, &carol, true),
        handshake(right, &alice, false)
    );
    assert_eq!(server.err().unwrap().code(), "net.untrusted_root");
    let error = client.err().unwrap();
    assert_eq!(error.code(), "net.refused", "{error}");
    let message = error.to_string();
    assert!(
        message.contains(r#""alice" refused this connection"#)
            && message.contains(r#"does not trust the root "carol""#)
            && message.contains("sb identity export-root --out carol.root")
            && message.contains("sb identity trust carol.root"),
        "{message}"
    );
}

#[tokio::test]
async fn a_peer_that_is_not_admitted_is_told_why() {
    let (alice, bob) = pair();
    let (left, right) = tokio::io::duplex(1 << 16);
    let (client, server) = tokio::join!(
        handshake(left, &alice, true),
        handshake_admitting(right, &bob, false, |peer| {
            Err::<(), _>(format!("{} has too many connections", peer.name))
        })
    );
    assert_eq!(server.err().unwrap().code(), "net.refused");
    let error = client.err().unwrap();
    assert_eq!(error.code(), "net.refused");
    assert!(
        error.to_string().contains("alice has too many connections"),
        "{error}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_handshake_has_a_total_deadline_however_slowly_bytes_arrive() {
    let (_, bob) = pair();
    let (mut left, right) = tokio::io::duplex(1 << 16);
    // A dribbler: a length prefix, then one byte every second, never a whole message.
    let dribbler = tokio::spawn(async move {
        let _ = left.write_all(&32u32.to_be_bytes()).await;
        for _ in 0..60 {
            if left.write_all(&[0]).await.is_err() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
    });
    let started = tokio::time::Instant::now();
    let error = handshake(right, &bob, false).await.err().unwrap();
    assert!(error.to_string().contains("did not finish"), "{error}");
    assert!(
        started.elapsed() <= syncbase_net::HANDSHAKE_TIMEOUT + std::time::Duration::from_millis(10)
    );
    assert!(syncbase_net::HANDSHAKE_TIMEOUT <= std::time::Duration::from_secs(5));
    dribbler.abort();
}

#[tokio::test]
async fn a_chain_not_bound_to_the_channel_key_is_refused() {
    let (alice, bob) = pair();
    let thief = Identity::new_root("mallory").unwrap();
    let (left, right) = tokio::io::duplex(1 << 16);
    // The thief presents bob's (public) chain but can only sign with its own key.
    let (a, _) = tokio::join!(
        handshake(left, &alice, true),
        handshake_presenting(right, &thief, bob.chain(), &bob, false)
    );
    let error = a.err().unwrap();
    assert!(error.to_string().contains("not bound"), "{error}");
}

/// Answers Get with a value of the requested size, Scan with three messages (or, for a row
/// prefix listing sizes, one `Bytes` message of each size), and Watch with an endless stream.
struct Echo;

#[async_trait::async_trait]
impl Handler for Echo {
    async fn call(&self, request: Request) -> Result<Responses, WireError> {
        match request {
            Request::Get { key, .. } => {
                let size: usize = key.parse().unwrap_or(0);
                Ok(Responses::single(Ok(Response::Value(vec![7; size]))))
            }
            Request::Scan {
                range: syncbase_wire::RowRange::Prefix(sizes),
                ..
            } if !sizes.is_empty() => {
                let (sender, responses) = Responses::channel();
                tokio::spawn(async move {
                    for size in sizes.split(',') {
                        let size: usize = size.parse().unwrap_or(0);
                        sender.send(Ok(Response::Bytes(vec![7; size]))).await;
                    }
                });
                Ok(responses)
            }
            Request::Scan { .. } => {
                let (sender, responses) = Responses::channel();
                tokio::spawn(async move {
                    for index in 0..3 {
                        sender
                            .send(Ok(Response::Names(vec![index.to_string()])))
                            .await;
                    }
                });
                Ok(responses)
            }
            Request::Watch { start, .. } => {
                // An endless stream, as a watch is; from a marker N, N messages and then a
                // quiet stream that never ends (a watch with nothing new).
                let quiet_after = match start {
                    syncbase_wire::WatchStart::From(marker) => marker.parse::<u64>().ok(),
                    _ => None,
                };
                let (sender, responses) = Responses::channel();
                tokio::spawn(async move {
                    let mut index = 0u64;
                    while quiet_after.is_none_or(|quiet| index < quiet)
                        && sender
                            .send(Ok(Response::Names(vec![index.to_string()])))
                            .await
                    {
                        index += 1;
                    }
                    sender.closed().await;
                });
                Ok(responses)
            }
            _ => Err(WireError::new(codes::NO_EXIST, "nothing here")),
        }
    }
}

struct EchoFactory;

impl HandlerFactory for EchoFactory {
    fn handler_for(&self, _peer: &VerifiedChain) -> Arc<dyn Handler> {
        Arc::new(Echo)
    }
}

async fn connected() -> Connection {
    let (alice, bob) = pair();
    let (left, right) = tokio::io::duplex(1 << 20);
    let (client, server) =
        tokio::join!(handshake(left, &alice, true), handshake(right, &bob, false));
    Connection::start(server.unwrap(), Some(Arc::new(EchoFactory)));
    Connection::start(client.unwrap(), None)
}

fn watch_request() -> Request {
    Request::Watch {
        database: syncbase_wire::DatabasePath {
            app: "a".into(),
            database: "d".into(),
        },
        start: syncbase_wire::WatchStart::Now,
    }
}

fn get(size: usize) -> Request {
    Request::Get {
        collection: syncbase_wire::CollectionPath {
            app: "a".into(),
            database: "d".into(),
            collection: "c".into(),
        },
        key: size.to_string(),
        batch: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_multiplex_stream_carry_large_values_and_return_errors() {
    let connection = connected().await;
    assert_eq!(connection.peer().name, "bob:x");
    let big = 16 * 1024 * 1024;
    let calls = (0..8).map(|index| {
        let connection = connection.clone();
        async move {
            connection
                .call(get(if index == 0 { big } else { index }))
                .await
                .unwrap()
                .one()
                .await
                .unwrap()
        }
    });
    let results = futures_join_all(calls).await;
    assert_eq!(results[0], Response::Value(vec![7; big]));
    assert_eq!(results[3], Response::Value(vec![7; 3]));
    let scan = Request::Scan {
        collection: syncbase_wire::CollectionPath {
            app: "a".into(),
            database: "d".into(),
            collection: "c".into(),
        },
        range: syncbase_wire::RowRange::Prefix(String::new()),
        batch: None,
    };
    let mut stream = connection.call(scan).await.unwrap();
    let mut names = Vec::new();
    while let Some(item) = stream.next().await {
        let Response::Names(mut chunk) = item.unwrap() else {
            panic!()
        };
        names.append(&mut chunk);
    }
    assert_eq!(names, vec!["0", "1", "2"]);
    let error = connection.call(Request::ListApps).await.err().unwrap();
    assert_eq!(error.code, codes::NO_EXIST);
}

/// A stream of messages as large as the byte window, after a small one its consumer took
/// without granting credit yet (credit is granted by halves of the window), still flows: the
/// server sends while less than half the window is in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_sized_messages_after_small_ones_never_stall() {
    let connection = connected().await;
    let window = 4 * 1024 * 1024;
    let sizes = [window, 1_000_000, window, 1_000, window, 2_000_000, window];
    let scan = Request::Scan {
        collection: syncbase_wire::CollectionPath {
            app: "a".into(),
            database: "d".into(),
            collection: "c".into(),
        },
        range: syncbase_wire::RowRange::Prefix(sizes.map(|size| size.to_string()).join(",")),
        batch: None,
    };
    let mut stream = connection.call(scan).await.unwrap();
    let mut received = Vec::new();
    while let Some(item) = tokio::time::timeout(std::time::Duration::from_secs(20), stream.next())
        .await
        .expect("the stream stalled")
    {
        let Response::Bytes(bytes) = item.unwrap() else {
            panic!()
        };
        received.push(bytes.len());
    }
    assert_eq!(received, sizes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_stream_early_cancels_it_and_keeps_the_connection() {
    let connection = connected().await;
    let watch = watch_request;
    for _ in 0..5 {
        let mut stream = connection.call(watch()).await.unwrap();
        assert!(stream.next().await.unwrap().is_ok());
        drop(stream);
        // Responses already in flight for the dropped stream must not break other calls.
        let value = connection.call(get(5)).await.unwrap().one().await.unwrap();
        assert_eq!(value, Response::Value(vec![7; 5]));
    }
    assert!(connection.closed_reason().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_nobody_reads_does_not_stall_other_calls() {
    let connection = connected().await;
    let watch = watch_request();
    let mut endless = connection.call(watch).await.unwrap();
    // Nobody reads the endless stream, yet calls on the same connection still get answers
    // (without flow control the connection's reader would block on the full stream: a hang,
    // which the timeout turns into a failure).
    let others = async {
        for size in 0..200 {
            let value = connection
                .call(get(size))
                .await
                .unwrap()
                .one()
                .await
                .unwrap();
            assert_eq!(value, Response::Value(vec![7; size]));
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(60), others)
        .await
        .expect("calls stalled behind an unread stream");
    // And the stream resumes as it is read, well past its window.
    for expected in 0..500u64 {
        let Response::Names(names) = endless.next().await.unwrap().unwrap() else {
            panic!()
        };
        assert_eq!(names, vec![expected.to_string()]);
    }
}

#[tokio::test]
async fn a_stream_cut_by_a_dead_connection_ends_in_an_error() {
    let (alice, bob) = pair();
    let (left, right) = tokio::io::duplex(1 << 16);
    let (client, server) =
        tokio::join!(handshake(left, &alice, true), handshake(right, &bob, false));
    let connection = Connection::start(client.unwrap(), None);
    let mut server = server.unwrap();
    let peer = tokio::spawn(async move {
        // Answer the call with one stream item, then die without ending the stream.
        let bytes = server.reader.receive().await.unwrap().unwrap();
        let syncbase_net::Frame::Call { id, .. } = postcard::from_bytes(&bytes).unwrap() else {
            panic!("expected a call")
        };
        let item = syncbase_net::Frame::Item {
            id,
            item: Ok(Response::Names(vec!["first".into()])),
        };
        server
            .writer
            .send(&postcard::to_stdvec(&item).unwrap())
            .await
            .unwrap();
    });
    let watch = watch_request();
    let mut stream = connection.call(watch).await.unwrap();
    assert_eq!(
        stream.next().await.unwrap().unwrap(),
        Response::Names(vec!["first".into()])
    );
    peer.await.unwrap();
    let cut = stream.next().await.expect("a cut stream must not just end");
    assert_eq!(cut.unwrap_err().code, "net.closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_dropped_after_their_window_arrived_are_cancelled() {
    let connection = connected().await;
    // More dropped streams than a connection may run calls at once: unless each drop cancels
    // its call, the server's tasks pile up waiting for credit and new calls are refused.
    for _ in 0..syncbase_net::CALLS_PER_CONNECTION_MAX + 8 {
        // The server sends one window's worth and then nothing: once all of it has arrived,
        // no later response can reveal the drop; only the cancel can end the call.
        let quiet_after = 32u64;
        let mut stream = connection
            .call(Request::Watch {
                database: syncbase_wire::DatabasePath {
                    app: "a".into(),
                    database: "d".into(),
                },
                start: syncbase_wire::WatchStart::From(quiet_after.to_string()),
            })
            .await
            .unwrap();
        for _ in 0..quiet_after {
            assert!(stream.next().await.unwrap().is_ok());
        }
        drop(stream);
    }
    let value = connection.call(get(3)).await.unwrap().one().await.unwrap();
    assert_eq!(value, Response::Value(vec![7; 3]));
}

async fn futures_join_all<F>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::new();
    for handle in handles {
        out.push(handle.await.unwrap());
    }
    out
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    /// Whatever bytes arrive before or instead of a handshake, the responder fails cleanly.
    #[test]
    fn garbage_never_panics_the_responder(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        runtime().block_on(async {
            let (_, bob) = pair();
            let (mut left, right) = tokio::io::duplex(1 << 16);
            left.write_all(&bytes).await.unwrap();
            drop(left);
            assert!(handshake(right, &bob, false).await.is_err());
        });
    }

    /// Arbitrary frames after authentication never panic the serving side: one that does not
    /// decode closes that connection with a reason, and a second connection to the same
    /// handler keeps answering.
    #[test]
    fn garbage_frames_close_that_connection_and_nothing_else(
        bytes in proptest::collection::vec(any::<u8>(), 0..512)
    ) {
        runtime().block_on(async {
            let (alice, bob) = pair();
            let (left, right) = tokio::io::duplex(1 << 16);
            let (client, server) =
                tokio::join!(handshake(left, &alice, true), handshake(right, &bob, false));
            let server = Connection::start(server.unwrap(), Some(Arc::new(EchoFactory)));
            let syncbase_net::Channel { mut writer, reader: _kept, .. } = client.unwrap();
            let _ = writer.send(&bytes).await;
            if postcard::from_bytes::<syncbase_net::Frame>(&bytes).is_err() {
                tokio::time::timeout(std::time::Duration::from_secs(60), server.closed())
                    .await
                    .expect("a malformed frame must close the connection");
                let reason = server.closed_reason().unwrap();
                assert!(reason.contains("malformed"), "{reason}");
            }
            let other = connected().await;
            let value = other.call(get(3)).await.unwrap().one().await.unwrap();
            assert_eq!(value, Response::Value(vec![7; 3]));
        });
    }
}

#[tokio::test]
async fn an_oversize_frame_is_refused() {
    let (_, bob) = pair();
    let (mut left, right) = tokio::io::duplex(1 << 16);
    // A length prefix announcing 1 GiB.
    left.write_all(&(1u32 << 30).to_be_bytes()).await.unwrap();
    let error = handshake(right, &bob, false).await.err().unwrap();
    assert_eq!(error.code(), "net.protocol", "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversize_value_is_refused_before_sending_and_the_connection_lives() {
    let connection = connected().await;
    for size in [
        syncbase_wire::limits::VALUE_BYTES_MAX + 1,
        syncbase_net::MESSAGE_BYTES_MAX + 1,
    ] {
        let put = Request::Put {
            collection: syncbase_wire::CollectionPath {
                app: "a".into(),
                database: "d".into(),
                collection: "c".into(),
            },
            key: "k".into(),
            value: vec![1; size],
            batch: None,
        };
        let error = connection.call(put).await.err().unwrap();
        assert_eq!(error.code, codes::VALUE_TOO_LARGE, "{error}");
    }
    let value = connection.call(get(3)).await.unwrap().one().await.unwrap();
    assert_eq!(value, Response::Value(vec![7; 3]));
    assert!(connection.closed_reason().is_none());
}

async fn connected_with(
    options: ConnectionOptions,
    factory: Arc<dyn HandlerFactory>,
) -> (Connection, Connection) {
    let (alice, bob) = pair();
    let (left, right) = tokio::io::duplex(1 << 16);
    let (client, server) =
        tokio::join!(handshake(left, &alice, true), handshake(right, &bob, false));
    let server = Connection::start_with(server.unwrap(), Some(factory), options);
    (Connection::start(client.unwrap(), None), server)
}

#[tokio::test(start_paused = true)]
async fn an_idle_connection_is_closed_but_not_one_with_a_running_call() {
    let idle_timeout = std::time::Duration::from_secs(30);
    let options = ConnectionOptions {
        idle_timeout: Some(idle_timeout),
    };
    let (client, server) = connected_with(options.clone(), Arc::new(EchoFactory)).await;
    // A call now and then keeps it open.
    for _ in 0..3 {
        tokio::time::sleep(idle_timeout / 2).await;
        client.call(get(1)).await.unwrap().one().await.unwrap();
    }
    assert!(server.closed_reason().is_none());
    tokio::time::sleep(idle_timeout * 2).await;
    let reason = server
        .closed_reason()
        .expect("an idle connection must close");
    assert!(reason.contains("idle"), "{reason}");
    client.closed().await;
    // A watch that has nothing to say for a long time is a running call, not idleness.
    let (client, server) = connected_with(options, Arc::new(SilentFactory)).await;
    let _watch = client.call(watch_request()).await.unwrap();
    tokio::time::sleep(idle_timeout * 4).await;
    assert!(server.closed_reason().is_none());
    assert!(client.closed_reason().is_none());
}

/// Serves watches that send one response and then nothing (and never end), like a quiet
/// database.
struct SilentFactory;

impl HandlerFactory for SilentFactory {
    fn handler_for(&self, _peer: &VerifiedChain) -> Arc<dyn Handler> {
        Arc::new(Silent)
    }
}

struct Silent;

#[async_trait::async_trait]
impl Handler for Silent {
    async fn call(&self, _request: Request) -> Result<Responses, WireError> {
        let (sender, responses) = Responses::channel();
        tokio::spawn(async move {
            sender.send(Ok(Response::Done)).await;
            sender.closed().await;
        });
        Ok(responses)
    }
}

/// Streams 1 MiB messages forever, each leased from `budget` before it is made.
struct Leasing {
    budget: syncbase_wire::ByteBudget,
    made: Arc<std::sync::atomic::AtomicUsize>,
}

const LEASED_MESSAGE_BYTES: usize = 64 << 10;

impl HandlerFactory for Leasing {
    fn handler_for(&self, _peer: &VerifiedChain) -> Arc<dyn Handler> {
        Arc::new(Leasing {
            budget: self.budget.clone(),
            made: self.made.clone(),
        })
    }
}

#[async_trait::async_trait]
impl Handler for Leasing {
    async fn call(&self, _request: Request) -> Result<Responses, WireError> {
        let (sender, responses) = Responses::channel();
        let (budget, made) = (self.budget.clone(), self.made.clone());
        tokio::spawn(async move {
            loop {
                let lease = budget.lease(LEASED_MESSAGE_BYTES).await;
                made.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let message = Response::Value(vec![1; LEASED_MESSAGE_BYTES - 64]);
                if !sender.send_leased(Ok(message), lease).await {
                    return;
                }
            }
        });
        Ok(responses)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_bytes_stay_leased_until_written_so_a_slow_reader_holds_back_its_producer() {
    let budget = syncbase_wire::ByteBudget::new(4 * LEASED_MESSAGE_BYTES);
    let made = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let factory = Arc::new(Leasing {
        budget: budget.clone(),
        made: made.clone(),
    });
    let (client, _server) = connected_with(ConnectionOptions::default(), factory).await;
    let mut stream = client.call(watch_request()).await.unwrap();
    // The reader takes one message and stops. What the serving side buffers anywhere (the
    // stream, the send queue, the writer) is leased, so production stops at the budget plus
    // what the transport wrote out into the reader's window (32 messages); without leases
    // it would also fill the stream's buffer of 64.
    stream.next().await.unwrap().unwrap();
    let settled = settle(&made).await;
    assert!(settled <= 4 + 1 + 32 + 1, "made {settled}");
    // Bytes the transport wrote out (into the client's window) are given back; reading on
    // lets production go on.
    for _ in 0..100 {
        stream.next().await.unwrap().unwrap();
    }
    assert!(made.load(std::sync::atomic::Ordering::SeqCst) >= 100);
}

/// Waits until a counter stops moving (unchanged for a second), and returns it; after a
/// minute of movement it returns what it has, so a producer that never stops fails the
/// caller's bound instead of hanging the test.
async fn settle(counter: &std::sync::atomic::AtomicUsize) -> usize {
    let mut last = usize::MAX;
    for _ in 0..60 {
        let now = counter.load(std::sync::atomic::Ordering::SeqCst);
        if now == last {
            return now;
        }
        last = now;
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
    counter.load(std::sync::atomic::Ordering::SeqCst)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_connection_closes_when_its_last_handle_and_stream_are_dropped() {
    let (client, server) =
        connected_with(ConnectionOptions::default(), Arc::new(EchoFactory)).await;
    let mut endless = client.clone().call(watch_request()).await.unwrap();
    drop(client);
    // The open stream keeps the connection: it still delivers.
    for _ in 0..100 {
        endless.next().await.unwrap().unwrap();
    }
    assert!(server.closed_reason().is_none());
    drop(endless);
    tokio::time::timeout(std::time::Duration::from_secs(60), server.closed())
        .await
        .expect("a connection nobody holds must close");
}

#[tokio::test]
async fn a_peer_of_the_previous_protocol_version_is_refused_with_a_clear_message() {
    let (alice, bob) = pair();
    let (left, right) = tokio::io::duplex(1 << 16);
    let previous = syncbase_net::PROTOCOL_VERSION - 1;
    let (old, new) = tokio::join!(
        syncbase_net::handshake_speaking(left, &alice, true, previous),
        handshake(right, &bob, false)
    );
    let new = new.err().unwrap();
    assert_eq!(new.code(), "net.protocol", "{new}");
    let expected = format!(
        "one side speaks protocol version {previous}, the other {}",
        syncbase_net::PROTOCOL_VERSION
    );
    assert!(new.to_string().contains(&expected), "{new}");
    assert!(
        new.to_string().contains("run the same syncbase version"),
        "{new}"
    );
    // The older side is told the same, not just that the connection closed.
    let old = old.err().unwrap();
    assert!(old.to_string().contains(&expected), "{old}");
}

#[test]
fn every_net_error_has_its_own_registered_code() {
    use syncbase_net::NetError;
    let errors = [
        NetError::Identity(String::new()),
        NetError::Authentication(String::new()),
        NetError::UntrustedRoot {
            chain: String::new(),
            root: String::new(),
            key: String::new(),
            hint: String::new(),
        },
        NetError::Refused(String::new()),
        NetError::Protocol(String::new()),
        NetError::Io(std::io::Error::other("x")),
    ];
    let mut seen = std::collections::BTreeSet::new();
    for error in &errors {
        let entry = syncbase_error_code::lookup(error.code())
            .unwrap_or_else(|| panic!("{} is not registered", error.code()));
        assert_eq!(entry.layer, "net");
        assert!(seen.insert(error.code()), "{} maps twice", error.code());
    }
    let remote = NetError::Remote(WireError::new(codes::NO_EXIST, "gone"));
    assert_eq!(remote.code(), codes::NO_EXIST);
}

/// Calls a flooding peer sends at most, so the test ends even if nothing stops the flood.
const FLOOD_CALLS: u64 = 100_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_flooding_calls_past_the_limit_without_reading_is_closed_with_a_reason() {
    let (alice, bob) = pair();
    let (left, right) = tokio::io::duplex(1 << 16);
    let (client, server) =
        tokio::join!(handshake(left, &alice, true), handshake(right, &bob, false));
    // Calls that never finish, so every call past the limit is refused.
    let server = Connection::start(server.unwrap(), Some(Arc::new(SilentFactory)));
    let syncbase_net::Channel {
        mut writer,
        reader: _unread,
        ..
    } = client.unwrap();
    // The flooder calls and calls and never reads a refusal (nor anything else).
    let flood = tokio::spawn(async move {
        for id in 1..=FLOOD_CALLS {
            let call = syncbase_net::Frame::Call {
                id,
                request: watch_request(),
            };
            if writer
                .send(&postcard::to_stdvec(&call).unwrap())
                .await
                .is_err()
            {
                return id - 1;
            }
        }
        FLOOD_CALLS
    });
    // Without a bound the daemon reads every call, holding a refusal (and, before the bound, a
    // task) for each; with it, the connection closes after a bounded number and the flooder's
    // next write fails.
    let sent = tokio::time::timeout(std::time::Duration::from_secs(60), flood)
        .await
        .expect("the flooder hung")
        .unwrap();
    assert!(sent < FLOOD_CALLS / 4, "the daemon took {sent} calls");
    assert!(
        sent > (syncbase_net::CALLS_PER_CONNECTION_MAX + syncbase_net::REFUSALS_UNWRITTEN_MAX)
            as u64,
        "closed after only {sent} calls"
    );
    tokio::time::timeout(std::time::Duration::from_secs(60), server.closed())
        .await
        .expect("a flooded connection must close");
    let reason = server.closed_reason().unwrap();
    assert!(
        reason.contains("kept calling past the limit")
            && reason.contains("without reading the refusals"),
        "{reason}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_past_the_limit_are_refused_but_a_peer_that_reads_keeps_its_connection() {
    let (client, server) =
        connected_with(ConnectionOptions::default(), Arc::new(SilentFactory)).await;
    let mut running = Vec::new();
    for _ in 0..syncbase_net::CALLS_PER_CONNECTION_MAX {
        running.push(client.call(watch_request()).await.unwrap());
    }
    // Many calls past the limit at once (fewer than may wait unwritten, so however the tasks
    // run, the refusals cannot pile up to the bound): each is refused, and nothing closes.
    let extra = syncbase_net::REFUSALS_UNWRITTEN_MAX / 2;
    let refused = futures_join_all((0..extra).map(|_| {
        let client = client.clone();
        async move { client.call(watch_request()).await.err() }
    }));
    let refused = tokio::time::timeout(std::time::Duration::from_secs(60), refused)
        .await
        .expect("refusals never arrived");
    for error in refused {
        let error = error.expect("a call past the limit must be refused");
        assert_eq!(error.code, codes::BAD_MESSAGE, "{error}");
        assert!(error.message.contains("calls at once"), "{error}");
    }
    assert!(server.closed_reason().is_none());
    // Cancels still flow: a dropped stream makes room for a new call.
    drop(running.pop());
    let value = tokio::time::timeout(std::time::Duration::from_secs(60), async {
        loop {
            match client.call(get(3)).await {
                Ok(responses) => break responses.one().await.unwrap(),
                // The cancel may not have reached the server yet.
                Err(error) if error.message.contains("calls at once") => {
                    tokio::task::yield_now().await
                }
                Err(error) => panic!("{error}"),
            }
        }
    })
    .await
    .expect("a cancelled call never made room");
    assert_eq!(value, Response::Done);
    assert!(server.closed_reason().is_none());
    assert!(client.closed_reason().is_none());
}
