//! The sync engine's tests: the version DAG scenarios of `testdata/dag/` (the Go DAG replay
//! tests, restated as data files), knowledge, conflict resolution, the watcher and the responder.

/// Gives `store` a syncgroup sharing collection `c` and starts the watcher at the log's start.
fn share_collection_c<S: syncbase_store::Store + 'static>(store: &syncbase_store::Watchable<S>) {
    let syncgroup = syncbase_vsync::syncgroup::Syncgroup {
        name: "sg".into(),
        collections: vec!["c".into()],
        members: Vec::new(),
        ..Default::default()
    };
    syncbase_vsync::syncgroup::put_syncgroup(store, &syncgroup).unwrap();
    syncbase_vsync::watcher::start(store, 1).unwrap();
}

mod dag {
    use std::collections::BTreeSet;
    use std::path::Path;

    use syncbase_store::{MemStore, Store, StoreReader, Transaction, Version, open_memstore};
    use syncbase_vsync::dag::{self, Graft, LogRecordId, NewNode, Outcome};

    /// One scenario being run: its store, the current sync round and what pruning did.
    struct Run {
        store: MemStore,
        graft: Graft,
        last_prune: Option<(bool, BTreeSet<Version>)>,
        logs_removed: BTreeSet<LogRecordId>,
    }

    fn version(token: &str) -> Version {
        Version(
            token
                .parse()
                .unwrap_or_else(|_| panic!("{token:?} is not a version")),
        )
    }

    fn log_record(token: &str) -> LogRecordId {
        let (device, generation) = token.split_once(':').expect("DEV:GEN");
        LogRecordId {
            device: device.parse().unwrap(),
            generation: generation.parse().unwrap(),
        }
    }

    fn versions(tokens: &[&str]) -> Vec<Version> {
        tokens.iter().map(|token| version(token)).collect()
    }

    /// `V [P..] [log=..] [batch=..] [deleted]` of a `local` or `remote` line.
    fn new_node(tokens: &[&str]) -> (Version, NewNode) {
        let mut new = NewNode::default();
        for token in &tokens[1..] {
            if let Some(log) = token.strip_prefix("log=") {
                new.log_record = Some(log_record(log));
            } else if let Some(batch) = token.strip_prefix("batch=") {
                new.batch_id = batch.parse().unwrap();
            } else if *token == "deleted" {
                new.deleted = true;
            } else {
                new.parents.push(version(token));
            }
        }
        (version(tokens[0]), new)
    }

    fn head_name(head: Option<Version>) -> String {
        head.map_or("none".into(), |version| version.0.to_string())
    }

    impl Run {
        fn new() -> Self {
            Self {
                store: open_memstore(),
                graft: Graft::new(),
                last_prune: None,
                logs_removed: BTreeSet::new(),
            }
        }

        /// Runs a change in one transaction: committed when it succeeds, aborted when not.
        fn change(&mut self, words: &[&str]) -> Result<(), syncbase_vsync::Error> {
            let transaction = self.store.transaction().unwrap();
            let result = self.apply(transaction.as_ref(), words);
            match &result {
                Ok(()) => transaction.commit().unwrap(),
                Err(_) => transaction.abort().unwrap(),
            }
            result
        }

        fn apply(
            &mut self,
            transaction: &dyn Transaction,
            words: &[&str],
        ) -> Result<(), syncbase_vsync::Error> {
            let object = words[1].as_bytes();
            match words[0] {
                "local" => {
                    let (version, new) = new_node(&words[2..]);
                    dag::add_node(transaction, object, version, &new, None)?;
                    dag::move_head(transaction, object, version)
                }
                "remote" => {
                    let (version, new) = new_node(&words[2..]);
                    dag::add_node(transaction, object, version, &new, Some(&mut self.graft))
                }
                "link-local" | "link-remote" => {
                    let graft = (words[0] == "link-remote").then_some(&mut self.graft);
                    dag::add_parent(
                        transaction,
                        object,
                        version(words[2]),
                        version(words[3]),
                        graft,
                    )
                }
                "head" => dag::move_head(transaction, object, version(words[2])),
                "prune" => {
                    let failing = words.get(3).and_then(|w| w.strip_prefix("fail-log="));
                    let failing = failing.map(log_record);
                    let mut removed = Vec::new();
                    let result =
                        dag::prune(transaction, object, version(words[2]), &mut |record| {
                            if Some(record) == failing {
                                return Err(syncbase_vsync::Error::DagInvalid {
                                    object: "log".into(),
                                    reason: "planted failure".into(),
                                });
                            }
                            removed.push(record);
                            Ok(())
                        });
                    self.logs_removed.extend(removed);
                    // Pruning goes on past a failed log removal: the nodes it removed stay
                    // removed (`expect-nodes` shows them), and it reports the error.
                    self.last_prune = Some(match result {
                        Ok(pruned) => (false, pruned),
                        Err(_) => (true, BTreeSet::new()),
                    });
                    Ok(())
                }
                other => panic!("unknown change {other:?}"),
            }
        }

        fn check(&mut self, file: &str, words: &[&str]) {
            let object = words.get(1).map(|word| word.as_bytes()).unwrap_or_default();
            let snapshot = self.store.snapshot().unwrap();
            let reader: &dyn StoreReader = snapshot.as_ref();
            match words[0] {
                "expect-head" => {
                    let head = dag::head(reader, object).unwrap();
                    assert_eq!(head_name(head), words[2], "{file}: {words:?}");
                }
                "expect-parents" => {
                    let node = dag::node(reader, object, version(words[2]))
                        .unwrap()
                        .unwrap();
                    assert_eq!(node.parents, versions(&words[3..]), "{file}: {words:?}");
                }
                "expect-level" => {
                    let node = dag::node(reader, object, version(words[2]))
                        .unwrap()
                        .unwrap();
                    assert_eq!(node.level.to_string(), words[3], "{file}: {words:?}");
                }
                "expect-deleted" => {
                    let node = dag::node(reader, object, version(words[2]))
                        .unwrap()
                        .unwrap();
                    assert_eq!(node.deleted.to_string(), words[3], "{file}: {words:?}");
                }
                "expect-nodes" => {
                    let present: Vec<Version> = (0..=64)
                        .map(Version)
                        .filter(|v| dag::node(reader, object, *v).unwrap().is_some())
                        .collect();
                    assert_eq!(present, versions(&words[2..]), "{file}: {words:?}");
                }
                "expect-ancestors" => {
                    let start = version(words[2]);
                    assert_eq!(words[3], ":", "{file}: {words:?}");
                    let found = dag::ancestors(reader, object, &[start]).unwrap();
                    let expected: BTreeSet<Version> = versions(&words[4..]).into_iter().collect();
                    assert_eq!(found, expected, "{file}: {words:?}");
                }
                "expect-outcome" => {
                    let outcome = dag::has_conflict(reader, object, &self.graft).unwrap();
                    let found = match outcome {
                        Outcome::Unchanged { head } => format!("unchanged {}", head_name(head)),
                        Outcome::FastForward { head } => format!("fast-forward {}", head.0),
                        Outcome::Conflict {
                            local,
                            remote,
                            ancestor,
                        } => format!("conflict {} {} {}", local.0, remote.0, head_name(ancestor)),
                    };
                    assert_eq!(found, words[2..].join(" "), "{file}: {words:?}");
                }
                "expect-grafts" => {
                    let grafts = self.graft.graft_points(object);
                    assert_eq!(grafts, versions(&words[2..]), "{file}: {words:?}");
                }
                "expect-pruned" => {
                    let (failed, pruned) = self.last_prune.clone().expect("a prune before");
                    let (expect_error, expected) = match words.get(1) {
                        Some(&"error") => (true, versions(&words[2..])),
                        _ => (false, versions(&words[1..])),
                    };
                    assert_eq!(failed, expect_error, "{file}: {words:?}");
                    let pruned: Vec<Version> = pruned.into_iter().collect();
                    if !failed {
                        assert_eq!(pruned, expected, "{file}: {words:?}");
                    }
                    // A failed prune's removals are checked with `expect-nodes`.
                }
                "expect-batch" | "expect-no-batch" => {
                    let batch_id: u64 = words[1].parse().unwrap();
                    let info = dag::batch(reader, batch_id).unwrap();
                    if words[0] == "expect-no-batch" {
                        assert_eq!(info, None, "{file}: {words:?}");
                        return;
                    }
                    let found: Vec<String> = info
                        .expect("the batch exists")
                        .objects
                        .iter()
                        .map(|(object, v)| format!("{}:{}", String::from_utf8_lossy(object), v.0))
                        .collect();
                    assert_eq!(found, words[2..], "{file}: {words:?}");
                }
                "expect-log-removed" => {
                    let expected: BTreeSet<LogRecordId> =
                        words[1..].iter().map(|w| log_record(w)).collect();
                    assert_eq!(self.logs_removed, expected, "{file}: {words:?}");
                }
                other => panic!("{file}: unknown command {other:?}"),
            }
        }

        /// Runs `file`'s lines; `checks` false runs only its changes (for `after`).
        fn run_file(&mut self, dir: &Path, file: &str, checks: bool) {
            let text = std::fs::read_to_string(dir.join(file)).unwrap();
            for line in text.lines() {
                let line = line.split('#').next().unwrap().trim();
                if line.is_empty() {
                    continue;
                }
                let words: Vec<&str> = line.split_whitespace().collect();
                match words[0] {
                    "after" => self.run_file(dir, words[1], false),
                    "round" => self.graft = Graft::new(),
                    "refused" => {
                        let error = self.change(&words[1..]).err();
                        let code = error.as_ref().map(|e| e.code());
                        assert_eq!(code, Some("sync.dag_invalid"), "{file}: {line}: {error:?}");
                    }
                    word if word.starts_with("expect-") => {
                        if checks {
                            self.check(file, &words);
                        }
                    }
                    _ => self
                        .change(&words)
                        .unwrap_or_else(|error| panic!("{file}: {line}: {error}")),
                }
            }
        }
    }

    /// Every scenario file under `testdata/dag` holds (and there are as many as the Go suite
    /// had scenarios to port).
    #[test]
    fn every_scenario_file_holds() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/dag");
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .filter(|name| name.ends_with(".dag"))
            .collect();
        files.sort();
        assert!(files.len() >= 16, "{files:?}");
        for file in files {
            Run::new().run_file(&dir, &file, true);
        }
    }

    /// A batch is named by its nodes alone (no index key per write); pruning removes the index
    /// keys earlier builds wrote, with the nodes they named.
    #[test]
    fn batches_are_read_from_nodes_and_pruning_removes_the_old_index_keys() {
        use syncbase_util::keys::{self, Prefix};
        let store = open_memstore();
        let transaction = store.transaction().unwrap();
        let node = |parents: Vec<Version>, batch_id| NewNode {
            parents,
            log_record: None,
            batch_id,
            deleted: false,
        };
        dag::add_node(
            transaction.as_ref(),
            b"x",
            Version(1),
            &node(vec![], 7),
            None,
        )
        .unwrap();
        dag::add_node(
            transaction.as_ref(),
            b"y",
            Version(5),
            &node(vec![], 7),
            None,
        )
        .unwrap();
        dag::add_node(
            transaction.as_ref(),
            b"x",
            Version(2),
            &node(vec![Version(1)], 8),
            None,
        )
        .unwrap();
        // What an earlier build wrote beside node 1 of x.
        let legacy = keys::key(Prefix::Sync, &[b"b", &7u64.to_be_bytes(), b"x"]);
        syncbase_util::put_typed(transaction.as_ref(), &legacy, &Version(1)).unwrap();
        let seven = dag::batch(transaction.as_ref(), 7).unwrap().unwrap();
        let objects: Vec<(&[u8], Version)> = seven
            .objects
            .iter()
            .map(|(object, version)| (object.as_slice(), *version))
            .collect();
        assert_eq!(objects, [(&b"x"[..], Version(1)), (&b"y"[..], Version(5))]);
        dag::prune(transaction.as_ref(), b"x", Version(2), &mut |_| Ok(())).unwrap();
        assert_eq!(transaction.get(&legacy).unwrap(), None);
        let seven = dag::batch(transaction.as_ref(), 7).unwrap().unwrap();
        assert_eq!(seven.objects.len(), 1);
        assert!(dag::batch(transaction.as_ref(), 9).unwrap().is_none());
    }

    /// The keys under the sync prefix whose first component is `tag` (`n`: nodes kept apart
    /// from their head; `h`: heads).
    fn keys_tagged(reader: &dyn StoreReader, tag: &[u8]) -> Vec<Vec<u8>> {
        use syncbase_util::keys::{self, Prefix};
        let (start, limit) = keys::prefix_range(&keys::key_prefix(Prefix::Sync, &[tag], b""));
        reader
            .scan(&start, &limit)
            .unwrap()
            .map(|entry| entry.unwrap().0)
            .collect()
    }

    /// A node lives in one place: an object with one version has its head key and nothing
    /// else; when the head moves, the old head's node moves under its own key, and a link on
    /// the head is written into the head.
    #[test]
    fn the_head_keeps_its_node_and_only_older_nodes_have_keys_of_their_own() {
        let store = open_memstore();
        let node = |parents: Vec<Version>| NewNode {
            parents,
            log_record: Some(LogRecordId {
                device: 1,
                generation: 1,
            }),
            batch_id: 0,
            deleted: false,
        };
        let transaction = store.transaction().unwrap();
        dag::add_head(transaction.as_ref(), b"x", Version(1), &node(vec![])).unwrap();
        dag::insert_first_node(transaction.as_ref(), b"y", Version(7), &node(vec![])).unwrap();
        transaction.commit().unwrap();
        assert_eq!(keys_tagged(&store, b"n"), Vec::<Vec<u8>>::new());
        assert_eq!(keys_tagged(&store, b"h").len(), 2);
        assert_eq!(
            dag::node(&store, b"x", Version(1)).unwrap().unwrap().level,
            0
        );

        let transaction = store.transaction().unwrap();
        dag::add_head(
            transaction.as_ref(),
            b"x",
            Version(2),
            &node(vec![Version(1)]),
        )
        .unwrap();
        transaction.commit().unwrap();
        assert_eq!(keys_tagged(&store, b"n").len(), 1);
        assert_eq!(dag::head(&store, b"x").unwrap(), Some(Version(2)));
        assert_eq!(
            dag::node(&store, b"x", Version(2)).unwrap().unwrap().level,
            1
        );
        assert_eq!(
            dag::node(&store, b"x", Version(1))
                .unwrap()
                .unwrap()
                .parents,
            []
        );

        // A remote node, then a link on the head (the local side won): the head value holds it.
        let transaction = store.transaction().unwrap();
        dag::add_node(
            transaction.as_ref(),
            b"x",
            Version(3),
            &node(vec![Version(1)]),
            None,
        )
        .unwrap();
        dag::add_parent(transaction.as_ref(), b"x", Version(2), Version(3), None).unwrap();
        transaction.commit().unwrap();
        assert_eq!(keys_tagged(&store, b"n").len(), 2);
        assert_eq!(
            dag::node(&store, b"x", Version(2))
                .unwrap()
                .unwrap()
                .parents,
            [Version(1), Version(3)]
        );
        // Back to 3: its node moves into the head, 2's out.
        let transaction = store.transaction().unwrap();
        dag::move_head(transaction.as_ref(), b"x", Version(3)).unwrap();
        transaction.commit().unwrap();
        assert_eq!(keys_tagged(&store, b"n").len(), 2);
        assert_eq!(
            dag::ancestors(&store, b"x", &[Version(2)]).unwrap(),
            [Version(1), Version(2), Version(3)].into_iter().collect()
        );
        assert_eq!(
            dag::batch(&store, 0).unwrap().unwrap().objects.len(),
            2,
            "the batch is read from heads too"
        );
    }

    /// A DAG of format 1 (every node under its own key, heads holding a version alone) reads as
    /// it did, and `migrate` moves each head's node into the head in commits of 10,000, stamps
    /// the format last, and does nothing the second time; a newer format is refused.
    #[test]
    fn a_dag_of_format_1_reads_alike_and_migrates() {
        use syncbase_util::keys::{self, Prefix};
        let store = open_memstore();
        let objects = 10_050u64;
        let object = |index: u64| format!("o{index:06}").into_bytes();
        let transaction = store.transaction().unwrap();
        // Format 1, as earlier builds wrote it: `n OID VERSION` → node, `h OID` → version.
        let put_node = |object: &[u8], version: u64, node: &dag::DagNode| {
            let key = keys::key(Prefix::Sync, &[b"n", object, &version.to_be_bytes()]);
            syncbase_util::put_typed(transaction.as_ref(), &key, node).unwrap();
        };
        for index in 0..objects {
            let root = dag::DagNode {
                level: 0,
                parents: vec![],
                log_record: Some(LogRecordId {
                    device: 9,
                    generation: index + 1,
                }),
                batch_id: 0,
                deleted: false,
            };
            put_node(&object(index), 1, &root);
            let mut head = 1u64;
            if index % 1000 == 0 {
                let child = dag::DagNode {
                    level: 1,
                    parents: vec![Version(1)],
                    batch_id: 4,
                    deleted: true,
                    ..root
                };
                put_node(&object(index), 2, &child);
                head = 2;
            }
            let key = keys::key(Prefix::Sync, &[b"h", &object(index)]);
            syncbase_util::put_typed(transaction.as_ref(), &key, &Version(head)).unwrap();
        }
        // A head whose node is missing (damage): left as it is, and the rest still migrates.
        let orphan = keys::key(Prefix::Sync, &[b"h", b"orphan"]);
        syncbase_util::put_typed(transaction.as_ref(), &orphan, &Version(3)).unwrap();
        transaction.commit().unwrap();
        let heads_and_nodes = || -> Vec<_> {
            (0..objects)
                .map(|index| {
                    let head = dag::head(&store, &object(index)).unwrap().unwrap();
                    let node = dag::node(&store, &object(index), head).unwrap().unwrap();
                    (head, node)
                })
                .collect()
        };
        let before = heads_and_nodes();
        assert_eq!(dag::format(&store).unwrap(), 1);
        assert_eq!(keys_tagged(&store, b"n").len(), 10_061);
        assert_eq!(
            dag::batch(&store, 4).unwrap().unwrap().objects.len(),
            11,
            "format 1 nodes read"
        );

        assert_eq!(dag::migrate(&store).unwrap(), objects);
        assert_eq!(dag::format(&store).unwrap(), dag::DAG_FORMAT_VERSION);
        assert_eq!(
            keys_tagged(&store, b"n").len(),
            11,
            "only the replaced roots"
        );
        let after = heads_and_nodes();
        assert_eq!(before, after);
        assert_eq!(
            dag::ancestors(&store, &object(1000), &[Version(2)]).unwrap(),
            [Version(1), Version(2)].into_iter().collect()
        );
        assert_eq!(dag::batch(&store, 4).unwrap().unwrap().objects.len(), 11);
        assert_eq!(dag::head(&store, b"orphan").unwrap(), Some(Version(3)));
        assert_eq!(dag::node(&store, b"orphan", Version(3)).unwrap(), None);
        assert_eq!(dag::migrate(&store).unwrap(), 0);

        let newer = keys::key(Prefix::Sync, &[b"dagfmt"]);
        syncbase_util::put_typed(&store, &newer, &(dag::DAG_FORMAT_VERSION + 1)).unwrap();
        let refused = dag::migrate(&store).unwrap_err();
        assert_eq!(refused.code(), "sync.dag_invalid");
        assert!(refused.to_string().contains("newer build"), "{refused}");
    }
}

mod knowledge {
    use proptest::prelude::*;
    use syncbase_vsync::knowledge::{GenVector, Knowledge, Relation, Scope};

    fn vector(entries: &[(u64, u64)]) -> GenVector {
        entries.iter().copied().collect()
    }

    /// A device one side lacks counts as generation 0 there; empty vectors are equal.
    #[test]
    fn relations_count_a_missing_device_as_zero() {
        let a = vector(&[(1, 3), (2, 5)]);
        assert_eq!(a.relation(&a.clone()), Relation::Equal);
        assert_eq!(
            GenVector::new().relation(&GenVector::new()),
            Relation::Equal
        );
        assert_eq!(a.relation(&vector(&[(1, 3)])), Relation::Greater);
        assert_eq!(vector(&[(1, 3)]).relation(&a), Relation::Less);
        assert_eq!(a.relation(&vector(&[(1, 4)])), Relation::Incomparable);
        assert_eq!(
            vector(&[(1, 0)]).relation(&GenVector::new()),
            Relation::Equal
        );
    }

    /// The responder sends, per device, the generations after the initiator's up to its own.
    #[test]
    fn what_the_initiator_lacks_is_a_range_per_device() {
        let responder = vector(&[(0xa, 10), (0xb, 5), (0xc, 1)]);
        let initiator = vector(&[(0xa, 5), (0xb, 10), (0xd, 2)]);
        let missing: Vec<_> = responder.missing(&initiator).into_iter().collect();
        assert_eq!(missing, [(0xa, 6..=10), (0xc, 1..=1)]);
        assert!(initiator.missing(&initiator).is_empty());
    }

    /// Knowledge of a collection holds for each prefix in it; the narrowest known scope answers.
    #[test]
    fn knowledge_of_a_scope_comes_from_the_narrowest_scope_covering_it() {
        let todo = Scope::collection("todo");
        let work = Scope {
            collection: "todo".into(),
            prefix: b"work/".to_vec(),
        };
        let urgent = Scope {
            collection: "todo".into(),
            prefix: b"work/urgent/".to_vec(),
        };
        let mut knowledge = Knowledge::new();
        knowledge.set(todo.clone(), vector(&[(1, 4)]));
        knowledge.set(work.clone(), vector(&[(1, 9)]));
        assert_eq!(knowledge.of(&urgent), vector(&[(1, 9)]));
        assert_eq!(knowledge.of(&todo), vector(&[(1, 4)]));
        assert_eq!(knowledge.of(&Scope::collection("other")), GenVector::new());
        // Learning about the whole collection raises the prefix's vector too.
        let mut learned = Knowledge::new();
        learned.set(todo.clone(), vector(&[(1, 6), (2, 3)]));
        learned.set(Scope::collection("other"), vector(&[(3, 1)]));
        knowledge.merge(&learned);
        assert_eq!(knowledge.of(&todo), vector(&[(1, 6), (2, 3)]));
        assert_eq!(knowledge.of(&work), vector(&[(1, 9), (2, 3)]));
        assert_eq!(knowledge.of(&Scope::collection("other")), vector(&[(3, 1)]));
        // Learning about a prefix starts from what is known of the scope covering it.
        let mut learned = Knowledge::new();
        learned.set(urgent.clone(), vector(&[(4, 2)]));
        knowledge.merge(&learned);
        assert_eq!(knowledge.of(&urgent), vector(&[(1, 9), (2, 3), (4, 2)]));
    }

    fn any_vector() -> impl Strategy<Value = GenVector> {
        proptest::collection::vec((0..6u64, 0..20u64), 0..6)
            .prop_map(|entries| entries.into_iter().collect())
    }

    proptest! {
        /// Once the initiator takes in the responder's vector it lacks nothing, it never knows
        /// less than before (knowledge never goes backwards), and the ranges it lacked were
        /// exactly the generations between the two.
        #[test]
        fn merging_what_was_missing_closes_every_gap(
            responder in any_vector(),
            initiator in any_vector(),
        ) {
            let missing = responder.missing(&initiator);
            for (device, range) in &missing {
                prop_assert_eq!(*range.start(), initiator.get(*device) + 1);
                prop_assert_eq!(*range.end(), responder.get(*device));
            }
            let mut merged = initiator.clone();
            merged.merge(&responder);
            prop_assert!(responder.missing(&merged).is_empty());
            prop_assert!(matches!(
                merged.relation(&initiator),
                Relation::Equal | Relation::Greater
            ));
            prop_assert!(matches!(
                merged.relation(&responder),
                Relation::Equal | Relation::Greater
            ));
            let expected = if missing.is_empty() { Relation::Equal } else { Relation::Greater };
            prop_assert_eq!(merged.relation(&initiator), expected);
        }
    }
}

mod conflict {
    use proptest::prelude::*;
    use syncbase_store::Version;
    use syncbase_vsync::conflict::{Conflict, Decision, LastWriterWins, Resolver, Side, group};

    fn side(version: u64, timestamp_ns: u64, device: u64, batch_id: u64) -> Side {
        Side {
            version: Version(version),
            timestamp_ns,
            device,
            batch_id,
            deleted: false,
        }
    }

    fn conflict(object: &str, local: Side, remote: Side) -> Conflict {
        Conflict {
            object: object.as_bytes().to_vec(),
            local,
            remote,
            ancestor: None,
        }
    }

    /// The version a decision keeps.
    fn winner(conflict: &Conflict, decision: Decision) -> Version {
        match decision {
            Decision::Local => conflict.local.version,
            Decision::Remote => conflict.remote.version,
        }
    }

    /// The same conflict as the other device sees it.
    fn mirrored(conflict: &Conflict) -> Conflict {
        Conflict {
            local: conflict.remote,
            remote: conflict.local,
            ..conflict.clone()
        }
    }

    #[test]
    fn the_later_write_wins_and_ties_go_by_device() {
        let later = conflict("k", side(1, 10, 5, 0), side(2, 20, 4, 0));
        assert_eq!(LastWriterWins.decide(&[later]), vec![Decision::Remote]);
        let earlier = conflict("k", side(1, 30, 5, 0), side(2, 20, 9, 0));
        assert_eq!(LastWriterWins.decide(&[earlier]), vec![Decision::Local]);
        let tie = conflict("k", side(1, 20, 5, 0), side(2, 20, 9, 0));
        assert_eq!(LastWriterWins.decide(&[tie]), vec![Decision::Remote]);
    }

    /// Conflicts whose local or remote versions share a batch form one group (transitively),
    /// and each conflict goes to its later write: batch 7 (at 10) loses row `a` to a write at 50
    /// and wins row `b` against batch 8 (at 5), the state of the serial order 8, 7, then `a`'s
    /// writer: every pair of batches is ordered the same way on all the rows it shares.
    #[test]
    fn batches_are_grouped_and_each_pair_of_batches_is_ordered_once() {
        let conflicts = vec![
            conflict("a", side(1, 10, 1, 7), side(2, 50, 2, 0)),
            conflict("b", side(3, 10, 1, 7), side(4, 5, 2, 8)),
            conflict("c", side(5, 10, 1, 0), side(6, 5, 2, 8)),
            conflict("d", side(7, 10, 1, 0), side(8, 5, 2, 0)),
        ];
        let groups = group(conflicts);
        let objects: Vec<Vec<&[u8]>> = groups
            .iter()
            .map(|group| group.iter().map(|c| c.object.as_slice()).collect())
            .collect();
        assert_eq!(objects, vec![vec![&b"a"[..], b"b", b"c"], vec![b"d"]]);
        assert_eq!(
            LastWriterWins.decide(&groups[0]),
            vec![Decision::Remote, Decision::Local, Decision::Local]
        );
        assert_eq!(LastWriterWins.decide(&groups[1]), vec![Decision::Local]);
    }

    /// A side of batch `batch` (0: none): a batch's writes share its timestamp and device.
    fn batch_side(version: u64, batch: u64, timestamp: u64, device: u64) -> Side {
        if batch == 0 {
            side(version, timestamp, device, 0)
        } else {
            side(version, batch % 3, batch % 2, batch)
        }
    }

    proptest! {
        /// Two batches that conflict on several rows are ordered the same way on each of them.
        #[test]
        fn conflicting_batches_resolve_to_the_same_side_on_every_row(
            pairs in proptest::collection::vec((0..4u64, 0..4u64, 0..3u64, 0..3u64), 1..12),
        ) {
            let conflicts: Vec<Conflict> = pairs
                .iter()
                .enumerate()
                .map(|(index, &(local_batch, remote_batch, timestamp, device))| {
                    let version = index as u64 * 2;
                    conflict(
                        &index.to_string(),
                        batch_side(version, local_batch, timestamp, device),
                        batch_side(version + 1, remote_batch + 4, timestamp, device),
                    )
                })
                .collect();
            let mut seen = std::collections::BTreeMap::new();
            for group in group(conflicts) {
                for (conflict, decision) in group.iter().zip(LastWriterWins.decide(&group)) {
                    if conflict.local.batch_id == 0 {
                        continue;
                    }
                    let pair = (conflict.local.batch_id, conflict.remote.batch_id);
                    prop_assert_eq!(*seen.entry(pair).or_insert(decision), decision);
                }
            }
        }
    }

    fn any_side() -> impl Strategy<Value = Side> {
        (0..1_000u64, 0..4u64, 0..4u64, 0..3u64)
            .prop_map(|(version, timestamp, device, batch)| side(version, timestamp, device, batch))
    }

    proptest! {
        /// Two devices that see the same conflicts from opposite sides keep the same versions,
        /// and every conflict of a group keeps the same side.
        #[test]
        fn both_sides_of_a_conflict_pick_the_same_versions(
            pairs in proptest::collection::vec((any_side(), any_side()), 1..8),
        ) {
            let conflicts: Vec<Conflict> = pairs
                .into_iter()
                .enumerate()
                .filter(|(_, (local, remote))| local.version != remote.version)
                .map(|(index, (local, remote))| conflict(&index.to_string(), local, remote))
                .collect();
            let here = group(conflicts.clone());
            let there = group(conflicts.iter().map(mirrored).collect());
            prop_assert_eq!(here.len(), there.len());
            for (mine, theirs) in here.iter().zip(&there) {
                let (decided_here, decided_there) =
                    (LastWriterWins.decide(mine), LastWriterWins.decide(theirs));
                for ((a, b), (here, there)) in mine.iter().zip(theirs).zip(decided_here.into_iter().zip(decided_there)) {
                    prop_assert_eq!(winner(a, here), winner(b, there));
                }
            }
        }
    }
}

mod watcher {
    use std::sync::Arc;

    use syncbase_store::{
        LogOp, ManualClock, MemStore, Origin, Retention, SeededRng, StoreReader, StoreWriter,
        Transaction, Version, Watchable, WatchableOptions, open_memstore,
    };
    use syncbase_util::keys::{self, Prefix};
    use syncbase_vsync::dag;
    use syncbase_vsync::syncgroup::{Syncgroup, put_syncgroup};
    use syncbase_vsync::watcher::{self, WATCHER_PIN, local_generation, log_record};

    const DEVICE: u64 = 0xd1;

    fn open() -> Watchable<MemStore> {
        let options = WatchableOptions {
            retention: Retention {
                commits_min: 0,
                age_min_ns: 0,
            },
            ..WatchableOptions::new(
                vec![Prefix::Row.as_key(), Prefix::Collection.as_key()],
                Arc::new(ManualClock::new(1_000)),
                Arc::new(SeededRng::new(5)),
            )
        };
        Watchable::open(open_memstore(), options).unwrap()
    }

    fn row(collection: &str, key: &str) -> Vec<u8> {
        keys::row(collection, key.as_bytes())
    }

    fn commit(
        store: &Watchable<MemStore>,
        origin: Origin,
        puts: &[(&str, &str)],
        deletes: &[(&str, &str)],
    ) {
        let transaction = store.begin(origin).unwrap();
        for (collection, key) in puts {
            transaction.put(&row(collection, key), b"v").unwrap();
        }
        for (collection, key) in deletes {
            transaction.delete(&row(collection, key)).unwrap();
        }
        transaction.commit().unwrap();
    }

    fn version_of(store: &Watchable<MemStore>, seq: u64, index: usize) -> Version {
        store.log_entries(seq, 1).unwrap()[0].ops[index].version()
    }

    /// Local commits on synced collections become consecutive generations with DAG nodes; a
    /// commit of several synced changes is one batch; other collections and what sync applied
    /// make nothing; the position moves past all of them in the same commit.
    #[test]
    fn local_commits_on_synced_collections_become_records_and_nodes() {
        let store = open();
        put_syncgroup(
            &store,
            &Syncgroup {
                name: "sg".into(),
                collections: vec!["c".into()],
                members: vec!["alice:a".into()],
                ..Default::default()
            },
        )
        .unwrap();
        // Nothing before the watcher starts.
        assert_eq!(
            watcher::step(&store, DEVICE, &SeededRng::new(1), 100)
                .unwrap()
                .records,
            0
        );
        watcher::start(&store, store.latest_log_seq() + 1).unwrap();
        let alice = Origin::local("alice:a", DEVICE);
        commit(
            &store,
            alice.clone(),
            &[("c", "a"), ("c", "b"), ("other", "x")],
            &[],
        ); // 1
        commit(&store, alice.clone(), &[("other", "y")], &[]); // 2
        let synced = Origin {
            from_sync: true,
            device: 7,
            ..Origin::default()
        };
        commit(&store, synced, &[("c", "z")], &[]); // 3
        commit(&store, alice.clone(), &[], &[("c", "a")]); // 4

        let outcome = watcher::step(&store, DEVICE, &SeededRng::new(1), 100).unwrap();
        assert_eq!(
            (outcome.entries, outcome.records, outcome.position),
            (4, 3, 5)
        );
        let snapshot = store.versioned_snapshot().unwrap();
        let first = log_record(&snapshot, DEVICE, 1).unwrap().unwrap();
        let second = log_record(&snapshot, DEVICE, 2).unwrap().unwrap();
        let third = log_record(&snapshot, DEVICE, 3).unwrap().unwrap();
        assert_eq!(log_record(&snapshot, DEVICE, 4).unwrap(), None);
        assert_eq!(local_generation(&snapshot).unwrap(), 3);
        assert_eq!(
            (first.object.clone(), second.object.clone()),
            (row("c", "a"), row("c", "b"))
        );
        assert_ne!(first.batch_id, 0);
        assert_eq!((second.batch_id, first.batch_count), (first.batch_id, 2));
        assert_eq!((third.batch_id, third.batch_count), (0, 1));
        assert_eq!(first.author, "alice:a");
        assert_eq!(first.version, version_of(&store, 1, 0));
        assert!(third.deleted);
        assert_eq!(third.parents, [first.version]);
        // The DAG follows: `a`'s head is its tombstone, whose parent is the first version.
        assert_eq!(
            dag::head(&snapshot, &row("c", "a")).unwrap(),
            Some(third.version)
        );
        let node = dag::node(&snapshot, &row("c", "a"), third.version)
            .unwrap()
            .unwrap();
        assert_eq!(
            (node.parents.clone(), node.deleted),
            (vec![first.version], true)
        );
        assert_eq!(dag::head(&snapshot, &row("c", "z")).unwrap(), None);
        assert_eq!(dag::head(&snapshot, &row("other", "x")).unwrap(), None);
        assert_eq!(store.pins().unwrap(), [(WATCHER_PIN.to_string(), 5)]);
        // Nothing more to do: no commit, no generation.
        let again = watcher::step(&store, DEVICE, &SeededRng::new(1), 100).unwrap();
        assert_eq!((again.entries, again.records, again.position), (0, 0, 5));
        assert!(matches!(
            store.log_entries(4, 1).unwrap()[0].ops[..],
            [LogOp::Delete { .. }]
        ));
    }

    /// The watcher's position holds the log: pruning never removes an entry it has not
    /// processed, and goes on once it has.
    #[test]
    fn the_log_is_kept_until_the_watcher_has_processed_it() {
        let store = open();
        super::share_collection_c(&store);
        for index in 0..10 {
            commit(
                &store,
                Origin::local("a", DEVICE),
                &[("c", &format!("k{index}"))],
                &[],
            );
        }
        store.prune(100).unwrap();
        assert_eq!(store.log_start().unwrap(), 1);
        let outcome = watcher::step(&store, DEVICE, &SeededRng::new(1), 4).unwrap();
        assert_eq!(outcome.position, 5);
        store.prune(100).unwrap();
        assert_eq!(store.log_start().unwrap(), 5);
        while watcher::step(&store, DEVICE, &SeededRng::new(1), 4)
            .unwrap()
            .entries
            > 0
        {}
        store.prune(100).unwrap();
        assert_eq!(store.log_start().unwrap(), 11);
        let snapshot = store.versioned_snapshot().unwrap();
        assert_eq!(local_generation(&snapshot).unwrap(), 10);
        let generations: Vec<u64> = (1..=10)
            .map(|generation| {
                log_record(&snapshot, DEVICE, generation)
                    .unwrap()
                    .unwrap()
                    .generation
            })
            .collect();
        assert_eq!(generations, (1..=10).collect::<Vec<_>>());
        assert!(snapshot.get(&row("c", "k9")).unwrap().is_some());
    }
}

mod responder {
    use std::sync::Arc;

    use syncbase_store::{
        ManualClock, MemStore, Origin, SeededRng, StoreWriter, Transaction, Watchable,
        WatchableOptions, open_memstore,
    };
    use syncbase_util::keys::{self, Prefix};
    use syncbase_vsync::knowledge::{GenVector, Knowledge, Scope};
    use syncbase_vsync::responder::{deltas, plan};
    use syncbase_vsync::watcher;

    const DEVICE: u64 = 0xa;

    /// A device whose collections `c` (synced) and `d` (not) hold `rows` rows each, all
    /// through the watcher.
    fn device_with_rows(rows: usize) -> Watchable<MemStore> {
        let store = Watchable::open(
            open_memstore(),
            WatchableOptions::new(
                vec![Prefix::Row.as_key(), Prefix::Collection.as_key()],
                Arc::new(ManualClock::new(1_000)),
                Arc::new(SeededRng::new(5)),
            ),
        )
        .unwrap();
        super::share_collection_c(&store);
        for chunk in (0..rows).collect::<Vec<_>>().chunks(1_000) {
            let transaction = store.begin(Origin::local("a", DEVICE)).unwrap();
            for index in chunk {
                transaction
                    .put(&keys::row("c", format!("k{index:06}").as_bytes()), b"v")
                    .unwrap();
                transaction
                    .put(&keys::row("d", format!("k{index:06}").as_bytes()), b"v")
                    .unwrap();
            }
            transaction.commit().unwrap();
            watcher::step(&store, DEVICE, &SeededRng::new(3), 10).unwrap();
        }
        store
    }

    fn put_one(store: &Watchable<MemStore>, collection: &str, key: &str) {
        let transaction = store.begin(Origin::local("a", DEVICE)).unwrap();
        transaction
            .put(&keys::row(collection, key.as_bytes()), b"new")
            .unwrap();
        transaction.commit().unwrap();
        watcher::step(store, DEVICE, &SeededRng::new(3), 10).unwrap();
    }

    /// A new initiator gets every record of the scope, parents first; then it lacks nothing;
    /// then one change costs one record read, on 1,000 rows as on 100,000.
    #[test]
    fn the_cost_of_a_round_is_the_size_of_its_delta() {
        let scope = [Scope::collection("c")];
        let mut counters = Vec::new();
        for rows in [1_000, 100_000] {
            let store = device_with_rows(rows);
            let snapshot = store.versioned_snapshot().unwrap();
            let first = deltas(&snapshot, DEVICE, &scope, &Knowledge::new()).unwrap();
            assert_eq!(first.records.len(), rows);
            assert!(
                first
                    .records
                    .windows(2)
                    .all(|pair| pair[0].record.position < pair[1].record.position)
            );
            let (rows_of_c, _) = keys::row_prefix_range("c", b"");
            assert!(
                first
                    .records
                    .iter()
                    .all(|sent| sent.record.object.starts_with(&rows_of_c))
            );
            let known = first.knowledge.clone();
            assert_eq!(known.of(&scope[0]).get(DEVICE), rows as u64);
            let noop = deltas(&snapshot, DEVICE, &scope, &known).unwrap();
            put_one(&store, "c", "changed");
            put_one(&store, "d", "elsewhere");
            let snapshot = store.versioned_snapshot().unwrap();
            let one = deltas(&snapshot, DEVICE, &scope, &known).unwrap();
            assert_eq!(one.records.len(), 1);
            assert_eq!(one.records[0].record.object, keys::row("c", b"changed"));
            counters.push((
                noop.records.len(),
                noop.records_read,
                one.records_read,
                one.bytes,
            ));
        }
        // Equal across sizes: nothing read for a no-op, one record for one change.
        assert_eq!(counters[0], (0, 0, 1, counters[0].3));
        assert_eq!(counters[0], counters[1]);
    }

    /// A long range read by scans: a record whose version is current carries its value; one a
    /// later record replaced carries none; one still the DAG head though a local write the
    /// watcher has not processed yet retired it carries its value, read from the kept versions.
    #[test]
    fn a_long_range_tells_current_replaced_and_retired_versions_apart() {
        let store = device_with_rows(100);
        let rewrite = |range: std::ops::Range<usize>, value: &[u8]| {
            let transaction = store.begin(Origin::local("a", DEVICE)).unwrap();
            for index in range {
                transaction
                    .put(&keys::row("c", format!("k{index:06}").as_bytes()), value)
                    .unwrap();
            }
            transaction.commit().unwrap();
        };
        rewrite(0..50, b"second");
        watcher::step(&store, DEVICE, &SeededRng::new(3), 10).unwrap();
        // Not processed by the watcher: the DAG heads of these rows are still the first writes.
        rewrite(50..60, b"local");
        let mut theirs = GenVector::new();
        theirs.advance(0xb, 1);
        let mut knowledge = Knowledge::new();
        knowledge.set(Scope::collection("c"), theirs);
        let snapshot = store.versioned_snapshot().unwrap();
        let delta = deltas(&snapshot, DEVICE, &[Scope::collection("c")], &knowledge).unwrap();
        assert_eq!(delta.records.len(), 150);
        let mut seen = std::collections::BTreeMap::new();
        for sent in &delta.records {
            let key = sent.record.object.clone();
            let values = seen.entry(key).or_insert_with(Vec::new);
            values.push(sent.value.clone());
        }
        for index in 0..100 {
            let values = &seen[&keys::row("c", format!("k{index:06}").as_bytes())];
            let expected: Vec<Option<Vec<u8>>> = match index {
                0..50 => vec![None, Some(b"second".to_vec())],
                _ => vec![Some(b"v".to_vec())],
            };
            assert_eq!(values, &expected, "row {index}");
        }
    }

    #[test]
    fn a_delta_read_part_by_part_carries_what_it_carries_read_whole() {
        let store = device_with_rows(900);
        let write = |range: std::ops::Range<usize>, value: Option<&[u8]>, seed: u64| {
            let transaction = store.begin(Origin::local("a", DEVICE)).unwrap();
            for index in range {
                let key = keys::row("c", format!("k{index:06}").as_bytes());
                match value {
                    Some(value) => transaction.put(&key, value).unwrap(),
                    None => transaction.delete(&key).unwrap(),
                }
            }
            transaction.commit().unwrap();
            if seed > 0 {
                watcher::step(&store, DEVICE, &SeededRng::new(seed), 10).unwrap();
            }
        };
        // Batches of new rows, of replaced rows and of deleted rows; then rows written again
        // after the watcher ran (their heads are older).
        for (batch, first) in (900..2_400).step_by(500).enumerate() {
            write(first..first + 500, Some(b"v"), 20 + batch as u64);
        }
        write(100..400, Some(b"second"), 11);
        write(600..700, None, 12);
        write(2_000..2_050, Some(b"local"), 0);
        let mut theirs = GenVector::new();
        theirs.advance(0xb, 1);
        let mut knowledge = Knowledge::new();
        knowledge.set(Scope::collection("c"), theirs);
        let scopes = [Scope::collection("c")];
        let snapshot = store.versioned_snapshot().unwrap();
        let whole = deltas(&snapshot, DEVICE, &scopes, &knowledge).unwrap();
        assert_eq!(whole.records.len(), 2_800);
        assert!(whole.records.iter().any(|sent| sent.value.is_none()));
        for (records_min, parts_min) in [(1, 4), (64, 4), (700, 3), (5_000, 1)] {
            let expected = whole.clone().into_parts(records_min);
            assert!(
                expected.len() >= parts_min,
                "records_min {records_min}: {}",
                expected.len()
            );
            let parts: Vec<_> = plan(&snapshot, DEVICE, &scopes, &knowledge)
                .unwrap()
                .into_parts(records_min)
                .into_iter()
                .map(|part| part.read(&snapshot).unwrap())
                .collect();
            assert_eq!(parts.len(), expected.len(), "records_min {records_min}");
            for (part, expected) in parts.iter().zip(&expected) {
                assert_eq!(part.records, expected.records, "records_min {records_min}");
                assert_eq!(part.knowledge, expected.knowledge);
            }
            let bytes: u64 = parts.iter().map(|part| part.bytes).sum();
            assert_eq!(bytes, whole.bytes);
        }
    }
}

mod initiator {
    use std::sync::Arc;

    use syncbase_store::{
        ManualClock, MemStore, Origin, SeededRng, StoreReader, StoreWriter, Transaction, Version,
        Watchable, WatchableOptions, open_memstore,
    };
    use syncbase_util::keys::{self, Prefix};
    use syncbase_util::{CLOCK_DRIFT_MAX_NS, HybridClock};
    use syncbase_vsync::conflict::{Conflict, Decision, LastWriterWins, Resolver};
    use syncbase_vsync::dag;
    use syncbase_vsync::responder::Delta;
    use syncbase_vsync::service::{Action, DatabaseSync, Event, Everyone, Handled, Message};
    use syncbase_vsync::syncgroup::{Syncgroup, put_syncgroup};
    use syncbase_vsync::watcher;

    const START_NS: u64 = 1_700_000_000_000_000_000;

    /// One device: its store, its physical clock and its sync.
    struct Device {
        name: String,
        physical: Arc<ManualClock>,
        sync: DatabaseSync<Arc<MemStore>>,
    }

    fn device_with(index: u64, resolver: Arc<dyn Resolver>, skew_ns: u64) -> Device {
        device_over(index, resolver, skew_ns, Arc::new(open_memstore()))
    }

    fn device_over(
        index: u64,
        resolver: Arc<dyn Resolver>,
        skew_ns: u64,
        memstore: Arc<MemStore>,
    ) -> Device {
        let physical = Arc::new(ManualClock::new(START_NS + skew_ns));
        let clock = Arc::new(HybridClock::new(physical.clone(), 0));
        let rng = Arc::new(SeededRng::new(index * 1_000));
        let mut options = WatchableOptions::new(
            vec![Prefix::Row.as_key(), Prefix::Collection.as_key()],
            clock.clone(),
            rng.clone(),
        );
        options.physical_clock = physical.clone();
        options.holder = Some(Arc::new(dag::HeadHolder));
        let store = Arc::new(Watchable::open(memstore, options).unwrap());
        put_syncgroup(
            store.as_ref(),
            &Syncgroup {
                name: "sg".into(),
                collections: vec!["c".into()],
                members: vec!["a".into(), "b".into(), "c".into()],
                ..Default::default()
            },
        )
        .unwrap();
        let name = ["a", "b", "c"][index as usize].to_string();
        let sync = DatabaseSync::new(
            store,
            name.clone(),
            0x10 + index,
            clock,
            rng,
            resolver,
            Arc::new(Everyone),
        )
        .unwrap();
        Device {
            name,
            physical,
            sync,
        }
    }

    fn device(index: u64) -> Device {
        device_with(index, Arc::new(LastWriterWins), 0)
    }

    fn row(key: &str) -> Vec<u8> {
        keys::row("c", key.as_bytes())
    }

    /// Writes `rows` in one commit (`None` deletes) and runs the watcher.
    fn write(device: &Device, rows: &[(&str, Option<&str>)]) {
        let transaction = device
            .sync
            .store()
            .begin(Origin::local(device.name.clone(), device.sync.device()))
            .unwrap();
        for (key, value) in rows {
            match value {
                Some(value) => transaction.put(&row(key), value.as_bytes()).unwrap(),
                None => transaction.delete(&row(key)).unwrap(),
            }
        }
        transaction.commit().unwrap();
        device.sync.handle(Event::LocalCommit).unwrap();
    }

    fn read(device: &Device, key: &str) -> Option<String> {
        device
            .sync
            .store()
            .get(&row(key))
            .unwrap()
            .map(|value| String::from_utf8(value).unwrap())
    }

    /// What `from` answers to `to`'s pull.
    fn delta(from: &Device, to: &Device) -> Delta {
        let pull = Message::Pull {
            knowledge: to.sync.knowledge().unwrap(),
        };
        let handled = from
            .sync
            .handle(Event::Received {
                from: to.name.clone(),
                message: pull,
            })
            .unwrap();
        match handled.actions.into_iter().next() {
            Some(Action::Send {
                message: Message::Delta(delta),
                ..
            }) => delta,
            other => panic!("a pull is answered by a delta, not {other:?}"),
        }
    }

    fn apply(to: &Device, from: &Device, delta: Delta) -> Handled {
        to.sync
            .handle(Event::Received {
                from: from.name.clone(),
                message: Message::Delta(delta),
            })
            .unwrap()
    }

    /// `to` pulls from `from` once.
    fn pull(to: &Device, from: &Device) -> Handled {
        apply(to, from, delta(from, to))
    }

    fn head(device: &Device, key: &str) -> Option<Version> {
        dag::head(device.sync.store().as_ref(), &row(key)).unwrap()
    }

    #[test]
    fn a_round_fast_forwards_and_a_second_one_is_a_no_op() {
        let (a, b) = (device(0), device(1));
        write(&a, &[("x", Some("1")), ("y", Some("2"))]);
        let first = pull(&b, &a).applied.unwrap();
        assert_eq!((first.records_applied, first.fast_forwards), (2, 2));
        assert_eq!(read(&b, "x").as_deref(), Some("1"));
        assert_eq!(head(&b, "x"), head(&a, "x"));
        // Nothing new: nothing sent, nothing applied.
        let again = delta(&a, &b);
        assert!(again.records.is_empty());
        // The same records delivered twice are no-ops.
        write(&a, &[("x", Some("3"))]);
        let once = delta(&a, &b);
        assert_eq!(
            apply(&b, &a, once.clone()).applied.unwrap().records_applied,
            1
        );
        let twice = apply(&b, &a, once).applied.unwrap();
        assert_eq!((twice.records_applied, twice.records_known), (0, 1));
        assert_eq!(read(&b, "x").as_deref(), Some("3"));
        // Applying created no generation of b's own: no echo.
        let store = b.sync.store();
        assert_eq!(watcher::local_generation(store.as_ref()).unwrap(), 0);
        b.sync.handle(Event::LocalCommit).unwrap();
        assert_eq!(watcher::local_generation(store.as_ref()).unwrap(), 0);
    }

    #[test]
    fn a_delete_travels_as_a_tombstone_and_a_put_over_it_wins_by_causality() {
        let (a, b) = (device(0), device(1));
        write(&a, &[("x", Some("1"))]);
        pull(&b, &a);
        write(&b, &[("x", None)]);
        pull(&a, &b);
        assert_eq!(read(&a, "x"), None);
        // a's clock is behind b's writes, but a's put descends from b's delete.
        write(&a, &[("x", Some("again"))]);
        let outcome = pull(&b, &a).applied.unwrap();
        assert_eq!((outcome.fast_forwards, outcome.conflicts), (1, 0));
        assert_eq!(read(&b, "x").as_deref(), Some("again"));
    }

    /// Concurrent writes: each side resolves alike, records the resolution by a link, and the
    /// other side learns it (its own resolution is the same edge).
    #[test]
    fn concurrent_writes_resolve_to_the_same_winner_everywhere() {
        let (a, b, c) = (device(0), device(1), device(2));
        // c has written before, so it is not new: it will receive history, not current state.
        write(&c, &[("w", Some("c"))]);
        write(&a, &[("x", Some("from a"))]);
        b.physical.advance(5);
        write(&b, &[("x", Some("from b"))]);
        // Both rounds cross: each side meets the conflict and resolves it alone.
        let (to_a, to_b) = (delta(&b, &a), delta(&a, &b));
        assert_eq!(apply(&a, &b, to_a).applied.unwrap().conflicts, 1);
        assert_eq!(apply(&b, &a, to_b).applied.unwrap().conflicts, 1);
        assert_eq!(read(&a, "x").as_deref(), Some("from b"));
        assert_eq!(read(&b, "x").as_deref(), Some("from b"));
        // Each learns the other's link: the same edge, nothing to redo.
        assert_eq!(pull(&a, &b).applied.unwrap().conflicts, 0);
        assert_eq!(pull(&b, &a).applied.unwrap().conflicts, 0);
        // c learns from a alone the write that won, the one that lost and a's link: nothing to
        // resolve.
        let at_c = pull(&c, &a).applied.unwrap();
        assert_eq!(at_c.conflicts, 0);
        assert_eq!(read(&c, "x").as_deref(), Some("from b"));
        let heads: Vec<_> = [&a, &b, &c].iter().map(|d| head(d, "x")).collect();
        assert!(heads.windows(2).all(|pair| pair[0] == pair[1]));
        // The loser is the winner's parent everywhere.
        let winner = heads[0].unwrap();
        for device in [&a, &b, &c] {
            let node = dag::node(device.sync.store().as_ref(), &row("x"), winner)
                .unwrap()
                .unwrap();
            assert_eq!(node.parents.len(), 1, "{}", device.name);
        }
    }

    /// Writes `count` rows `{prefix}{i:04}` for i in `keys`, one commit of 50 at a time.
    fn write_many(device: &Device, keys: impl Iterator<Item = usize>, value: &str) {
        let rows: Vec<(String, String)> = keys
            .map(|index| (format!("k{index:04}"), format!("{value} {index}")))
            .collect();
        for chunk in rows.chunks(50) {
            let chunk: Vec<(&str, Option<&str>)> = chunk
                .iter()
                .map(|(key, value)| (key.as_str(), Some(value.as_str())))
                .collect();
            write(device, &chunk);
        }
    }

    /// A large round (over the threshold where the receiver reads the span of its objects with
    /// range reads) decides like a small one: objects the receiver never saw are fast-forwarded
    /// at once, those it wrote itself conflict and keep its later writes, and both sides end
    /// alike. The sender writes `a_keys`, the receiver `b_keys` first.
    fn large_round(a_keys: Vec<usize>, b_keys: Vec<usize>) {
        let (a, b) = (device(0), device(1));
        write_many(&a, a_keys.iter().copied(), "a");
        b.physical.advance(1_000);
        write_many(&b, b_keys.iter().copied(), "b");
        let shared = a_keys.iter().filter(|key| b_keys.contains(key)).count() as u64;
        let at_b = pull(&b, &a).applied.unwrap();
        assert_eq!(at_b.records_applied, a_keys.len() as u64);
        assert_eq!(at_b.conflicts, shared);
        assert_eq!(at_b.fast_forwards, a_keys.len() as u64 - shared);
        pull(&a, &b);
        for index in a_keys.iter().chain(&b_keys) {
            let key = format!("k{index:04}");
            let owner = if b_keys.contains(index) { "b" } else { "a" };
            let expected = format!("{owner} {index}");
            assert_eq!(read(&b, &key).as_deref(), Some(expected.as_str()), "{key}");
            assert_eq!(read(&a, &key), read(&b, &key), "{key}");
            assert_eq!(head(&a, &key), head(&b, &key), "{key}");
        }
        // Nothing is left to learn either way.
        assert_eq!(pull(&b, &a).applied.unwrap().records_applied, 0);
        assert_eq!(pull(&a, &b).applied.unwrap().conflicts, 0);
    }

    #[test]
    fn a_large_first_round_reads_ranges_and_decides_as_a_small_one() {
        // Every third key was written on the receiver too.
        large_round((0..300).collect(), (0..300).step_by(3).collect());
    }

    #[test]
    fn a_large_round_over_a_crowded_span_reads_key_by_key_and_decides_alike() {
        // The receiver holds far more objects within the span than the round brings: the
        // range reads give up and each object is read alone.
        large_round(
            (0..3000).step_by(15).collect(),
            (0..3000).filter(|key| key % 2 == 0).collect(),
        );
    }

    /// A responder reads the heads and values of a long range of records with a scan of their
    /// collection, and of a short range in a large collection key by key: either way every
    /// record that made its row's current version carries its value.
    #[test]
    fn long_and_short_ranges_carry_the_values_of_current_versions() {
        let (a, b) = (device(0), device(1));
        // b knows its own change: a answers with a's generations, not with current state.
        write(&b, &[("b-only", Some("b"))]);
        write_many(&a, 0..1000, "a");
        let long = delta(&a, &b);
        assert_eq!(long.records.len(), 1000);
        assert!(long.records.iter().all(|sent| sent.value.is_some()));
        apply(&b, &a, long);
        // 100 overwrites in a collection of 1,000 rows: too few records to scan it all.
        write_many(&a, (0..1000).step_by(10), "again");
        let short = delta(&a, &b);
        assert_eq!(short.records.len(), 100);
        assert!(short.records.iter().all(|sent| sent.value.is_some()));
        apply(&b, &a, short);
        for index in 0..1000 {
            let key = format!("k{index:04}");
            assert_eq!(read(&b, &key), read(&a, &key), "{key}");
        }
        assert_eq!(read(&b, "k0010").as_deref(), Some("again 10"));
    }

    /// A delta whose stream broke after its first part leaves its records held beyond the
    /// knowledge (which comes with the last part); a device pulling from this one still gets
    /// them, values included, and then holds all this one holds.
    #[test]
    fn records_held_beyond_the_knowledge_are_sent_on() {
        let (a, b, c) = (device(0), device(1), device(2));
        // b and c know something of the collection: a answers them with history.
        write(&b, &[("b-only", Some("b"))]);
        write(&c, &[("c-only", Some("c"))]);
        write_many(&a, 0..200, "a");
        let parts = delta(&a, &b).into_parts(60);
        assert_eq!(parts.len(), 2);
        let known = b.sync.knowledge().unwrap();
        apply(&b, &a, parts[0].clone());
        assert_eq!(b.sync.knowledge().unwrap(), known);
        let first: Vec<String> = parts[0]
            .records
            .iter()
            .map(|sent| {
                let (_, components) = keys::parse(&sent.record.object).unwrap();
                String::from_utf8(components[1].clone()).unwrap()
            })
            .collect();
        assert_eq!(first.len(), 100);
        pull(&c, &b);
        for key in &first {
            assert!(read(&c, key).is_some(), "{key}");
            assert_eq!(read(&c, key), read(&a, key), "{key}");
        }
        // The rest still comes from a, and everyone ends alike.
        pull(&b, &a);
        pull(&c, &b);
        for index in 0..200 {
            let key = format!("k{index:04}");
            assert_eq!(read(&c, &key), read(&a, &key), "{key}");
        }
    }

    /// The parts of a delta before its last commit without waiting for the disk (the last
    /// part's commit makes them durable); the last waits. Counted by engine writes without a
    /// disk sync (pruning, in the background, writes with one).
    #[test]
    fn only_the_last_part_of_a_delta_waits_for_the_disk() {
        let a = device(0);
        let durable = Arc::new(syncbase_store::TxnStore::new(
            syncbase_store::MemEngine::default(),
            syncbase_store::Durability::Durable,
        ));
        let b = device_over(1, Arc::new(LastWriterWins), 0, durable.clone());
        write(&b, &[("b-only", Some("b"))]);
        write_many(&a, 0..200, "a");
        let parts = delta(&a, &b).into_parts(60);
        assert!(parts.len() >= 2);
        let (last, before) = parts.split_last().unwrap();
        // Engine writes that did not sync the disk (others, such as pruning's, do).
        let unsynced = || {
            let stats = durable.stats();
            stats.engine_writes - stats.disk_syncs
        };
        let at_first = unsynced();
        for part in before {
            apply(&b, &a, part.clone());
        }
        assert_eq!(unsynced(), at_first + before.len() as u64);
        apply(&b, &a, last.clone());
        assert_eq!(unsynced(), at_first + before.len() as u64);
        for index in 0..200 {
            let key = format!("k{index:04}");
            assert_eq!(read(&b, &key), read(&a, &key), "{key}");
        }
    }

    /// Many deleted rows keep their heads but hold no value: a short range in such a
    /// collection still reads its heads by key (the scan of heads gives up even though the scan
    /// of values would not), and every current version travels with its value.
    #[test]
    fn a_short_range_among_many_deleted_rows_still_carries_its_values() {
        let (a, b) = (device(0), device(1));
        write(&b, &[("b-only", Some("b"))]);
        write_many(&a, 0..1000, "a");
        pull(&b, &a);
        let deleted: Vec<String> = (0..1000)
            .filter(|index| index % 10 != 0)
            .map(|index| format!("k{index:04}"))
            .collect();
        for chunk in deleted.chunks(100) {
            let rows: Vec<(&str, Option<&str>)> =
                chunk.iter().map(|key| (key.as_str(), None)).collect();
            write(&a, &rows);
        }
        pull(&b, &a);
        write_many(&a, (0..1000).step_by(10), "again");
        let short = delta(&a, &b);
        assert_eq!(short.records.len(), 100);
        assert!(short.records.iter().all(|sent| sent.value.is_some()));
        apply(&b, &a, short);
        assert_eq!(read(&b, "k0990").as_deref(), Some("again 990"));
        assert_eq!(read(&b, "k0991"), None);
    }

    /// Two batches conflicting on two rows: one batch wins both rows on both sides.
    #[test]
    fn conflicting_batches_resolve_whole() {
        let (a, b) = (device(0), device(1));
        write(&a, &[("x", Some("a")), ("y", Some("a"))]);
        write(&b, &[("x", Some("b")), ("y", Some("b"))]);
        pull(&a, &b);
        pull(&b, &a);
        for device in [&a, &b] {
            let (x, y) = (read(device, "x"), read(device, "y"));
            assert_eq!(x, y, "{}", device.name);
        }
        assert_eq!(read(&a, "x"), read(&b, "x"));
    }

    #[test]
    fn a_different_value_or_record_under_a_known_version_is_refused_whole() {
        let (a, b) = (device(0), device(1));
        write(&a, &[("x", Some("1"))]);
        let good = delta(&a, &b);
        pull(&b, &a);
        let mut forged = good.clone();
        forged.records[0].value = Some(b"forged".to_vec());
        forged.records[0].record.generation += 7;
        // A second record under a version b holds.
        let error = b
            .sync
            .handle(Event::Received {
                from: "a".into(),
                message: Message::Delta(forged),
            })
            .unwrap_err();
        assert_eq!(error.code(), "sync.delta_invalid");
        // A record that differs from the one b holds under the same generation.
        let mut changed = good.clone();
        changed.records[0].record.timestamp_ns += 1;
        let error = b
            .sync
            .handle(Event::Received {
                from: "a".into(),
                message: Message::Delta(changed),
            })
            .unwrap_err();
        assert_eq!(error.code(), "sync.delta_invalid");
        assert_eq!(read(&b, "x").as_deref(), Some("1"));
        // Nothing of a refused delta is applied: a fresh device refuses a delta whose second
        // record is broken, and keeps nothing of its first.
        write(&a, &[("y", Some("2"))]);
        let c = device(2);
        let mut half_broken = delta(&a, &c);
        assert_eq!(half_broken.records.len(), 2);
        half_broken.records[1].record.deleted = true;
        let refused = c.sync.handle(Event::Received {
            from: "a".into(),
            message: Message::Delta(half_broken),
        });
        assert!(refused.is_err());
        assert_eq!((read(&c, "x"), read(&c, "y")), (None, None));
        assert_eq!(
            c.sync.knowledge().unwrap(),
            device(2).sync.knowledge().unwrap()
        );
    }

    /// A local commit a round takes in before the watcher's own step is pushed to every
    /// member, the sender of the round included (it lacks it); so is a resolution's link.
    #[test]
    fn a_local_write_taken_in_by_a_round_is_pushed_to_the_sender_too() {
        let (a, b) = (device(0), device(1));
        write(&a, &[("x", Some("a"))]);
        // b writes, and a round runs before b's watcher is told of the commit.
        let transaction = b.sync.store().begin(Origin::local("b", 0x11)).unwrap();
        transaction.put(&row("x"), b"b").unwrap();
        transaction.commit().unwrap();
        let handled = pull(&b, &a);
        let outcome = handled.applied.unwrap();
        assert_eq!((outcome.local_records, outcome.conflicts), (1, 1));
        assert_eq!(
            handled.actions,
            vec![
                Action::Send {
                    to: "a".into(),
                    message: Message::Notify
                },
                Action::Send {
                    to: "c".into(),
                    message: Message::Notify
                }
            ]
        );
        // Nothing left for b's watcher: without that push, a would never hear of b's write.
        assert_eq!(b.sync.handle(Event::LocalCommit).unwrap().records_made, 0);
    }

    /// A delta is admitted only from a member, with records of shared collections, and with
    /// knowledge only of those, never of the receiver's own generations.
    #[test]
    fn a_delta_is_admitted_only_within_what_is_shared_with_its_sender() {
        let (a, b) = (device(0), device(1));
        write(&a, &[("x", Some("1"))]);
        let good = delta(&a, &b);
        let send = |from: &str, delta: Delta| {
            b.sync.handle(Event::Received {
                from: from.into(),
                message: Message::Delta(delta),
            })
        };
        let refused = |result: syncbase_vsync::Result<Handled>| {
            result.map(|_| ()).unwrap_err().code().to_string()
        };
        assert_eq!(
            refused(send("stranger", good.clone())),
            "sync.delta_invalid"
        );
        let mut elsewhere = good.clone();
        elsewhere.records[0].record.object = keys::row("d", b"x");
        assert_eq!(refused(send("a", elsewhere)), "sync.delta_invalid");
        let mut far = good.clone();
        far.records[0].record.timestamp_ns = u64::MAX - 1;
        assert_eq!(refused(send("a", far)), "sync.delta_invalid");
        assert_eq!(read(&b, "x"), None);
        // Claims of knowledge beyond what is shared are dropped.
        let mut boastful = good.clone();
        let mut claims = syncbase_vsync::knowledge::GenVector::new();
        claims.advance(0x11, 1 << 60);
        claims.advance(0x99, 1 << 60);
        boastful.knowledge.set(
            syncbase_vsync::knowledge::Scope::collection("d"),
            claims.clone(),
        );
        let mut shared = boastful
            .knowledge
            .of(&syncbase_vsync::knowledge::Scope::collection("c"));
        shared.advance(0x11, 1 << 60);
        boastful
            .knowledge
            .set(syncbase_vsync::knowledge::Scope::collection("c"), shared);
        send("a", boastful).unwrap();
        assert_eq!(read(&b, "x").as_deref(), Some("1"));
        let known = b.sync.knowledge().unwrap();
        assert_eq!(known.iter().count(), 1);
        let c = known.of(&syncbase_vsync::knowledge::Scope::collection("c"));
        assert_eq!((c.get(0x10), c.get(0x11)), (1, 0));
    }

    /// A resolver that makes a local write to the conflicting row while the round runs (once):
    /// the round's commit meets it and starts again at once; neither side is lost.
    struct RacingWriter {
        store: std::sync::Mutex<Option<Arc<Watchable<Arc<MemStore>>>>>,
    }

    impl Resolver for RacingWriter {
        fn decide(&self, group: &[Conflict]) -> Vec<Decision> {
            if let Some(store) = self.store.lock().unwrap().take() {
                let transaction = store.begin(Origin::local("racer", 0x11)).unwrap();
                transaction.put(&row("x"), b"raced").unwrap();
                transaction.commit().unwrap();
            }
            LastWriterWins.decide(group)
        }
    }

    #[test]
    fn a_local_write_racing_a_round_makes_it_start_again_and_both_are_kept() {
        let a = device(0);
        let racer = Arc::new(RacingWriter {
            store: std::sync::Mutex::new(None),
        });
        let b = device_with(1, racer.clone(), 0);
        write(&a, &[("x", Some("from a"))]);
        write(&b, &[("x", Some("from b"))]);
        *racer.store.lock().unwrap() = Some(b.sync.store().clone());
        let outcome = pull(&b, &a).applied.unwrap();
        assert_eq!(outcome.attempts, 2);
        // The racing write came after both: it was taken in by the second attempt and wins.
        assert_eq!(outcome.local_entries, 1);
        assert_eq!(read(&b, "x").as_deref(), Some("raced"));
        pull(&a, &b);
        assert_eq!(read(&a, "x").as_deref(), Some("raced"));
    }

    /// A new member receives each object's current version, not its history; later changes
    /// still graft onto it.
    #[test]
    fn a_new_member_gets_current_state_and_grafts_later_changes() {
        let a = device(0);
        for round in 0..20 {
            write(&a, &[("x", Some(&format!("v{round}"))), ("y", Some("y"))]);
        }
        let b = device(1);
        let first = delta(&a, &b);
        assert_eq!(first.records.len(), 2);
        pull(&b, &a);
        assert_eq!(read(&b, "x").as_deref(), Some("v19"));
        let nodes = |device: &Device| {
            let snapshot = device.sync.store().versioned_snapshot().unwrap();
            dag::ancestors(&snapshot, &row("x"), &[head(device, "x").unwrap()])
                .unwrap()
                .len()
        };
        assert_eq!((nodes(&a), nodes(&b)), (20, 1));
        write(&a, &[("x", Some("later"))]);
        let later = pull(&b, &a).applied.unwrap();
        assert_eq!((later.fast_forwards, later.conflicts), (1, 0));
        assert_eq!(read(&b, "x").as_deref(), Some("later"));
    }

    /// The decision on clocks beyond CLOCK_DRIFT_MAX_NS: a far-future write is applied (its
    /// device's later generations never stall), the receiver's clock moves only to the bound
    /// (its own other writes do not inherit the wild clock), and a write made after seeing it
    /// descends from it, so it wins everywhere whatever the timestamps.
    #[test]
    fn a_far_future_clock_neither_stalls_nor_wins_past_the_writes_that_saw_it() {
        let ahead = 2 * CLOCK_DRIFT_MAX_NS;
        let a = device_with(0, Arc::new(LastWriterWins), ahead);
        let b = device(1);
        write(&a, &[("x", Some("future"))]);
        let outcome = pull(&b, &a).applied.unwrap();
        assert_eq!((outcome.records_applied, outcome.far_future), (1, 1));
        assert_eq!(read(&b, "x").as_deref(), Some("future"));
        // b's clock went no further than the bound.
        write(&b, &[("z", Some("other"))]);
        let last = b.sync.store().latest_log_seq();
        let entry = &b.sync.store().log_entries(last, 1).unwrap()[0];
        assert!(entry.timestamp_ns <= START_NS + CLOCK_DRIFT_MAX_NS + 1_000);
        // b overwrites what it saw; a takes b's write by causality.
        write(&b, &[("x", Some("seen and replaced"))]);
        let back = pull(&a, &b).applied.unwrap();
        assert_eq!((back.fast_forwards, back.conflicts), (2, 0));
        assert_eq!(read(&a, "x").as_deref(), Some("seen and replaced"));
        // a's later generations keep flowing.
        write(&a, &[("y", Some("still ahead"))]);
        assert_eq!(pull(&b, &a).applied.unwrap().records_applied, 1);
        assert_eq!(read(&b, "y").as_deref(), Some("still ahead"));
    }

    /// The head holder keeps a version that is a DAG head even when nothing else would.
    #[test]
    fn the_head_holder_keeps_what_a_responder_sends() {
        let a = device(0);
        write(&a, &[("x", Some("held"))]);
        let store = a.sync.store();
        let held = head(&a, "x").unwrap();
        // A local write the watcher has not processed retires the head's version; drop the
        // watcher's pin and force the log past everything.
        let transaction = store.begin(Origin::local("a", 0x10)).unwrap();
        transaction.put(&row("x"), b"newer").unwrap();
        transaction.commit().unwrap();
        let transaction = store.begin(Origin::default()).unwrap();
        transaction.remove_pin(watcher::WATCHER_PIN).unwrap();
        transaction.commit().unwrap();
        store.advance_log_start(store.latest_log_seq() + 1).unwrap();
        while store.prune(128).unwrap().more {}
        let snapshot = store.versioned_snapshot().unwrap();
        assert!(snapshot.get_at_version(&row("x"), held).unwrap().is_some());
    }
}

/// Byte fields are encoded as one byte string each: the same bytes as when they were encoded
/// byte by byte, so stores and peers of earlier builds read them alike.
mod encoding {
    use proptest::prelude::*;
    use serde::Serialize;
    use syncbase_store::Version;
    use syncbase_vsync::knowledge::Scope;
    use syncbase_vsync::responder::DeltaRecord;
    use syncbase_vsync::watcher::LogRecord;

    /// `DeltaRecord` and `LogRecord` with their byte fields as plain vectors.
    #[derive(Serialize)]
    struct PlainDeltaRecord {
        object: Vec<u8>,
        version: Version,
        parents: Vec<Version>,
        deleted: bool,
        link: bool,
        timestamp_ns: u64,
        author: String,
        device: u64,
        generation: u64,
        batch_id: u64,
        batch_count: u64,
        position: u64,
        value: Option<Vec<u8>>,
    }

    proptest! {
        #[test]
        fn byte_fields_encode_as_the_plain_byte_vectors_they_were(
            object in proptest::collection::vec(any::<u8>(), 0..80),
            value in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..300)),
            prefix in proptest::collection::vec(any::<u8>(), 0..20),
            fixed in any::<(u64, u64, u64)>(),
        ) {
            let record = LogRecord {
                object: object.clone(),
                version: Version(fixed.0),
                parents: vec![Version(fixed.1)],
                deleted: false,
                link: true,
                timestamp_ns: fixed.2,
                author: "alice:a".into(),
                device: fixed.0,
                generation: fixed.1,
                batch_id: fixed.2,
                batch_count: 3,
                position: 7,
            };
            let plain = PlainDeltaRecord {
                object,
                version: record.version,
                parents: record.parents.clone(),
                deleted: record.deleted,
                link: record.link,
                timestamp_ns: record.timestamp_ns,
                author: record.author.clone(),
                device: record.device,
                generation: record.generation,
                batch_id: record.batch_id,
                batch_count: record.batch_count,
                position: record.position,
                value: value.clone(),
            };
            let delta_record = DeltaRecord { record, value };
            let encoded = postcard::to_stdvec(&delta_record).unwrap();
            prop_assert_eq!(&encoded, &postcard::to_stdvec(&plain).unwrap());
            prop_assert_eq!(postcard::from_bytes::<DeltaRecord>(&encoded).unwrap(), delta_record);
            let scope = Scope { collection: "c".into(), prefix: prefix.clone() };
            prop_assert_eq!(
                postcard::to_stdvec(&scope).unwrap(),
                postcard::to_stdvec(&("c", prefix)).unwrap()
            );
        }
    }
}

/// A delta split into parts: closed over objects and batches, each closed once full.
mod parts {
    use std::collections::BTreeSet;

    use proptest::prelude::*;
    use syncbase_store::Version;
    use syncbase_vsync::knowledge::{GenVector, Knowledge, Scope};
    use syncbase_vsync::responder::{Delta, DeltaRecord};
    use syncbase_vsync::watcher::LogRecord;

    /// A record of `object` in batch `batch` of `device` (0: no batch).
    fn sent(index: usize, object: u8, device: u64, batch: u64) -> DeltaRecord {
        DeltaRecord {
            record: LogRecord {
                object: vec![b'o', object],
                version: Version(index as u64 + 1),
                parents: Vec::new(),
                deleted: false,
                link: false,
                timestamp_ns: 1,
                author: "a".into(),
                device,
                generation: index as u64 + 1,
                batch_id: batch,
                batch_count: 1,
                position: index as u64 + 1,
            },
            value: Some(vec![object]),
        }
    }

    fn delta(records: Vec<DeltaRecord>) -> Delta {
        let mut vector = GenVector::new();
        vector.advance(1, records.len() as u64);
        let mut knowledge = Knowledge::new();
        knowledge.set(Scope::collection("c"), vector);
        Delta {
            responder: 9,
            records,
            knowledge,
            records_read: 5,
            bytes: 6,
            ..Delta::default()
        }
    }

    /// The objects and batches of `records`.
    fn closures(records: &[DeltaRecord]) -> (BTreeSet<Vec<u8>>, BTreeSet<(u64, u64)>) {
        let objects = records
            .iter()
            .map(|sent| sent.record.object.clone())
            .collect();
        let batches = records
            .iter()
            .filter(|sent| sent.record.batch_id != 0)
            .map(|sent| (sent.record.device, sent.record.batch_id))
            .collect();
        (objects, batches)
    }

    fn shares(left: &[DeltaRecord], right: &[DeltaRecord]) -> bool {
        let (left_objects, left_batches) = closures(left);
        let (right_objects, right_batches) = closures(right);
        !left_objects.is_disjoint(&right_objects) || !left_batches.is_disjoint(&right_batches)
    }

    /// Which records (by position) a group of records linked by objects and batches holds.
    fn group_of(records: &[DeltaRecord], first: usize) -> BTreeSet<u64> {
        let mut group = BTreeSet::from([records[first].record.position]);
        loop {
            let members: Vec<&DeltaRecord> = records
                .iter()
                .filter(|sent| group.contains(&sent.record.position))
                .collect();
            let grown: BTreeSet<u64> = records
                .iter()
                .filter(|sent| {
                    members
                        .iter()
                        .any(|member| shares(&[(*member).clone()], &[(*sent).clone()]))
                })
                .map(|sent| sent.record.position)
                .collect();
            if grown.len() == group.len() {
                return group;
            }
            group = grown;
        }
    }

    proptest! {
        #[test]
        fn parts_are_closed_over_objects_and_batches_and_closed_once_full(
            shape in proptest::collection::vec((0u8..12, 1u64..3, 0u64..6), 0..60),
            records_min in 1usize..8,
        ) {
            let mut records: Vec<DeltaRecord> = shape
                .iter()
                .enumerate()
                .map(|(index, (object, device, batch))| sent(index, *object, *device, *batch))
                .collect();
            // Every batch whole in the delta.
            for sent in &mut records {
                let batch = (sent.record.device, sent.record.batch_id);
                sent.record.batch_count = shape
                    .iter()
                    .filter(|(_, device, id)| (*device, *id) == batch)
                    .count() as u64;
            }
            let whole = delta(records.clone());
            let parts = whole.clone().into_parts(records_min);
            prop_assert!(!parts.is_empty());
            // Every record once, in learning order within its part.
            let mut positions: Vec<u64> =
                parts.iter().flat_map(|part| part.records.iter().map(|sent| sent.record.position)).collect();
            for part in &parts {
                prop_assert!(part.records.windows(2).all(|pair| pair[0].record.position < pair[1].record.position));
            }
            positions.sort_unstable();
            prop_assert_eq!(positions, (1..=records.len() as u64).collect::<Vec<_>>());
            let last = parts.len() - 1;
            for (index, part) in parts.iter().enumerate() {
                prop_assert_eq!(part.responder, 9);
                for (other_index, other) in parts.iter().enumerate() {
                    if other_index != index {
                        prop_assert!(!shares(&part.records, &other.records));
                    }
                }
                if index == last {
                    prop_assert_eq!(&part.knowledge, &whole.knowledge);
                    prop_assert_eq!((part.records_read, part.bytes), (5, 6));
                } else {
                    prop_assert_eq!(&part.knowledge, &Knowledge::new());
                    prop_assert_eq!((part.records_read, part.bytes), (0, 0));
                    // Full, and not before its last group came.
                    prop_assert!(part.records.len() >= records_min);
                    let latest_group = part
                        .records
                        .iter()
                        .map(|sent| group_of(&records, sent.record.position as usize - 1))
                        .max_by_key(|group| group.first().copied())
                        .unwrap_or_default();
                    prop_assert!(part.records.len() - latest_group.len() < records_min);
                }
            }
            // Groups go to parts in the order of their first records.
            let firsts: Vec<u64> = parts
                .iter()
                .filter_map(|part| part.records.first().map(|sent| sent.record.position))
                .collect();
            prop_assert!(firsts.windows(2).all(|pair| pair[0] < pair[1]));
        }
    }

    /// A delta that lacks a write of one of its batches (it was overwritten before the sender
    /// received current state) is applied whole: a part of it could show the batch beside the
    /// older value of the row the later write overwrote.
    #[test]
    fn a_delta_lacking_a_write_of_a_batch_is_one_part() {
        let mut records: Vec<DeltaRecord> = (0..20)
            .map(|index| sent(index, index as u8, 1, 0))
            .collect();
        let whole = delta(records.clone());
        assert_eq!(whole.into_parts(2).len(), 10);
        records[3].record.batch_id = 7;
        records[3].record.batch_count = 2;
        let lacking = delta(records);
        assert_eq!(lacking.clone().into_parts(2), vec![lacking]);
    }
}
