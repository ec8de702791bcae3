//! The catalog of asynq's Lua scripts, by the SHA-1 of their bodies.
//!
//! Every script body of asynq v0.23.0, v0.24.1, v0.25.1 and v0.26.0 (the
//! module versions the Go module proxy serves; asynq's main branch is not
//! served there and has no unreleased script changes), with the operation
//! it performs and the component that sends it. Only hashes are kept: a
//! body is recognised by hashing it. `tests/script_catalog.rs` reads the
//! bodies of every pinned version from the Go module cache and fails if one
//! is missing here.

use std::collections::HashMap;
use std::sync::LazyLock;

/// Which asynq component sends a script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `asynq.Client` (and the Scheduler, through it): enqueue scripts.
    Producer,
    /// `asynq.Server`: dequeue, done, retry, archive, lease, aggregation,
    /// forwarding, recovery, heartbeat.
    Worker,
    /// `asynq.Scheduler` beyond enqueueing.
    Scheduler,
    /// `asynq.Inspector` reads.
    InspectorRead,
    /// `asynq.Inspector` changes: run, archive, delete, remove queue,
    /// update payload.
    InspectorMutation,
}

/// One catalogued script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Script {
    /// SHA-1 of the body, lower-case hex, as `EVALSHA` names it.
    pub sha: &'static str,
    /// The operation, named after asynq's own script variable.
    pub op: &'static str,
    pub role: Role,
    /// The pinned asynq versions whose source has this exact body.
    pub versions: &'static [&'static str],
}

/// Every catalogued script.
pub const SCRIPTS: &[Script] = &[
    Script {
        sha: "7f02b3d3e0a1e6e4ad5aaac4a558573b7b5aa95e",
        op: "archiveAll",
        role: Role::InspectorMutation,
        versions: &["v0.23.0", "v0.24.1", "v0.25.1", "v0.26.0"],
    },
    Script {
        sha: "0f24d56b49f2c17216165b5df7914bc75b10c33e",
        op: "archiveAllAggregating",
        role: Role::InspectorMutation,
        versions: &["v0.23.0", "v0.24.1", "v0.25.1", "v0.26.0"],
    },
    Script {
        sha: "c78daecbbe3c90b1d8d3470c5c68132818fbdf21",
        op: "archiveAllPending",
        role: Role::InspectorMutation,
        versions: &["v0.23.0", "v0.24.1", "v0.25.1", "v0.26.0"],
    },
    Script {
        sha: "7284b70a757e2fb6005064af1c7039782cf89502",
        op: "archiveTask",
        role: Role::InspectorMutation,
        versions: &["v0.23.0"],
    },
    Script {
        sha: "c3183bd2c882c715c12e3e44b9c09df7d91de1ad",
        op: "archiveTask",
        role: Role::InspectorMutation,
        versions: &["v0.24.1", "v0.25.1", "v0.26.0"],
    },
    Script {
        sha: "87a4d4356874805c7c2132b517c0587b9021aba2",
        op: "deleteAll",
        role: Role::InspectorMutation,
        versions: &["v0.23.0", "v0.24.1", "v0.25.1", "v0.26.0"],
    },
    Script {
        sha: "e90e63534c2b576147c8426713da4c8270138a89",
        op: "deleteAllAggregating",
        role: Role::InspectorMutation,
        versions: &["v0.23.0", "v0.24.1", "v0.25.1", "v0.26.0"],
    },
    Script {
        sha: "8c58fe6e892f2c0a29249a47799023654d4551c9",
        op: "deleteAllPending",
        role: Role::InspectorMutation,
        versions: &["v0.23.0", "v0.24.1", "v0.25.1", "v0.26.0"],
    },
    Script {
        sha: "ffa79e9140e5aafb8e967e8d3e5f4eaefb648091",
        op: "deleteTask",
        role: Role::InspectorMutation,
        versions: &["v0.23.0", "v0.24.1", "v0.25.1", "v0.26.0"],
    },
    Script {
        sha: "d3473f4c26d0b12bcf434f271d79f9f8431b549c",
        op: "removeQueue",
        role: Role::InspectorMutation,
        versions: &["v0.23.0", "v0.24.1", "v0.25.1", "v0.26.0"],
    },
    Script {
        sha: "a095473ab1d8e275758ea446baa43bb582eac0a8",
        op: "removeQueue",
        role: Role::InspectorMutation,
        versions: &["v0.23.0", "v0.24.1", "v0.25.1", "v0.26.0"],
    },
    Script {
        sha: "1d0a1f59e02d7de4c1ffdc680ba4f5984b1a590c",
        op: "runAll",
        role: Role::InspectorMutation,
        versions: &["v0.23.0", "v0.24.1", "v0.25.1", "v0.26.0"],
    },
    Script {
        sha: "95d6ff8ea96c4e9441a0d202a7babf13c5421285",
        op: "runAllAggregating",
        role: Role::InspectorMutation,
        versions: &["v0.23.0", "v0.24.1", "v0.25.1", "v0.26.0"],
    },
    Script {
        sha: "2fb646810e3433bbe85fba1a6b407eb3eced7b63",
        op: "runTask",
        role: Role::InspectorMutation,
        versions: &["v0.23.0", "v0.24.1", "v0.25.1", "v0.26.0"],
    },
    Script {
        sha: "a0bdc8d8212813666a7df7c612f4b6ee09df0b2d",
        op: "updateTaskPayload",
        role: Role::InspectorMutation,
        versions: &["v0.26.0"],
    },
    Script {
        sha: "c2cc0f1fc9880af719361196eeb7290c6f1457c6",
        op: "currentStats",
        role: Role::InspectorRead,
        versions: &["v0.23.0"],
    },
    Script {
        sha: "8495598cb6d9a2efdaf2ae98021a8f4ef1803b3d",
        op: "currentStats",
        role: Role::InspectorRead,
        versions: &["v0.24.1", "v0.25.1", "v0.26.0"],
    },
    Script {
        sha: "1463a65d3fd6698099862e1314658984affe6ed7",
        op: "getTaskInfo",
        role: Role::InspectorRead,
        versions: &["v0.23.0", "v0.24.1", "v0.25.1", "v0.26.0"],
    },
    Script {
        sha: "5fb423d3d9d18e91139aa2c1a73629c240f9c7a1",
        op: "groupStats",
        role: Role::InspectorRead,
        versions: &["v0.23.0"],
    },
    Script {
        sha: "767783fddcb7e4702c368fd352ae6a3d9393d273",
        op: "groupStats",
        role: Role::InspectorRead,
        versions: &["v0.24.1", "v0.25.1", "v0.26.0"],
    },
    Script {
        sha: "21ba63720a304c8939d592261cb5f6aeacdecad1",
        op: "historicalStats",
        role: Role::InspectorRead,
        versions: &["v0.23.0", "v0.24.1", "v0.25.1", "v0.26.0"],
    },
    Script {
        sha: "e33b162cbcaa58a573d0f5a5067b4c3e2246e079",
        op: "listMessages",
        role: Role::InspectorRead,
        versions: &["v0.23.0", "v0.24.1", "v0.25.1", "v0.26.0"],
    },
    Script {
        sha: "ec6970a9c80b182f05628a1377dcfee7df765fb4",
        op: "listServerKeys",
        role: Role::InspectorRead,
        versions: &["v0.23.0", "v0.24.1", "v0.25.1", "v0.26.0"],
    },
    Script {
        sha: "8ce4326dbba042f10ec098fa779168e0a9e8c6c8",
        op: "listZSetEntries",
        role: Role::InspectorRead,
        versions: &["v0.23.0", "v0.24.1", "v0.25.1", "v0.26.0"],
    },
    Script {
        sha: "0c80fc1868e3aae205155ae2017ce995a3a7cec0",
        op: "memoryUsage",
        role: Role::InspectorRead,
        versions: &["v0.23.0", "v0.24.1", "v0.25.1", "v0.26.0"],
    },
    Script {
        sha: "074af2c5a4623800684c1b0e4e328c2500f06815",
        op: "addToGroup",
        role: Role::Producer,
        versions: &["v0.23.0", "v0.24.1", "v0.25.1", "v0.26.0"],
    },
    Script {
        sha: "deeb77b98fd021a8a0279d8e7dd11a8a4546611a",
        op: "addToGroupUnique",
        role: Role::Producer,
        versions: &["v0.23.0", "v0.24.1", "v0.25.1", "v0.26.0"],
    },
    Script {
        sha: "98d28b42650870a743450ffda9791e9e19c6991b",
        op: "enqueue",
        role: Role::Producer,
        versions: &["v0.23.0", "v0.24.1", "v0.25.1", "v0.26.0"],
    },
    Script {
        sha: "5c5f3ddb39c733a795941120d27bf17a3eae6912",
        op: "enqueueUnique",
        role: Role::Producer,
        versions: &["v0.23.0"],
    },
    Script {
        sha: "297b3f9abfd963a3316434ef9d88fc5bf8a7ddc3",
        op: "enqueueUnique",
        role: Role::Producer,
        versions: &["v0.24.1", "v0.25.1", "v0.26.0"],
    },
    Script {
        sha: "8ce6b38a99b73194585c251eb3c2a89559f37a87",
        op: "schedule",
        role: Role::Producer,
        versions: &["v0.23.0", "v0.24.1", "v0.25.1", "v0.26.0"],
    },
    Script {
        sha: "e9b8aa859a976a1fce09eaf723b4fccd02ba799e",
        op: "scheduleUnique",
        role: Role::Producer,
        versions: &["v0.23.0", "v0.24.1", "v0.25.1", "v0.26.0"],
    },
    Script {
        sha: "5feb3e91ca9086f0335575fa366ac2b94ec7b886",
        op: "recordSchedulerEnqueueEvent",
        role: Role::Scheduler,
        versions: &["v0.23.0", "v0.24.1", "v0.25.1", "v0.26.0"],
    },
    Script {
        sha: "313393fb34cf7668d3ae712d88666ce651da3861",
        op: "writeSchedulerEntries",
        role: Role::Scheduler,
        versions: &["v0.23.0", "v0.24.1", "v0.25.1", "v0.26.0"],
    },
    Script {
        sha: "a3812898e6caa8ef58d4cda34cd41a1023157e43",
        op: "aggregationCheck",
        role: Role::Worker,
        versions: &["v0.23.0", "v0.24.1", "v0.25.1", "v0.26.0"],
    },
    Script {
        sha: "04e5ed2a63d5b6b2a20ab17249b2bc262280f6d8",
        op: "archive",
        role: Role::Worker,
        versions: &["v0.23.0", "v0.24.1"],
    },
    Script {
        sha: "9c3b1eb9947ce2ee5304ac013a0a365ec364fd2d",
        op: "archive",
        role: Role::Worker,
        versions: &["v0.25.1", "v0.26.0"],
    },
    Script {
        sha: "79cf8dbc80deca37314fdfdeb9fe33a12c9baad7",
        op: "clearServerState",
        role: Role::Worker,
        versions: &["v0.23.0", "v0.24.1", "v0.25.1", "v0.26.0"],
    },
    Script {
        sha: "f78335554f1a49a26ac08c02e9f50237e38fae18",
        op: "deleteAggregationSet",
        role: Role::Worker,
        versions: &["v0.23.0", "v0.24.1", "v0.25.1", "v0.26.0"],
    },
    Script {
        sha: "49c4326d80c1db9c476da2aa7f4438d03688f82b",
        op: "deleteExpiredCompletedTasks",
        role: Role::Worker,
        versions: &["v0.23.0", "v0.24.1", "v0.25.1", "v0.26.0"],
    },
    Script {
        sha: "a8153319360adc71cdc370107f8ab9786f204765",
        op: "dequeue",
        role: Role::Worker,
        versions: &["v0.23.0", "v0.24.1", "v0.25.1", "v0.26.0"],
    },
    Script {
        sha: "1241eaa1c73409baaf1fea0c08d203a4911bda15",
        op: "done",
        role: Role::Worker,
        versions: &["v0.23.0", "v0.24.1", "v0.25.1", "v0.26.0"],
    },
    Script {
        sha: "a2631c71357a54b4c3e7450b1757e7f3f49d6c81",
        op: "doneUnique",
        role: Role::Worker,
        versions: &["v0.23.0", "v0.24.1", "v0.25.1", "v0.26.0"],
    },
    Script {
        sha: "522b1a6ae66fe79ea2f24a9af58798ab71879035",
        op: "forward",
        role: Role::Worker,
        versions: &["v0.23.0", "v0.24.1", "v0.25.1", "v0.26.0"],
    },
    Script {
        sha: "c831eb394e1de1ff49766029720b640ada133ec6",
        op: "listLeaseExpired",
        role: Role::Worker,
        versions: &["v0.23.0", "v0.24.1"],
    },
    Script {
        sha: "16988a462595f6ee317be300951533b004f27f5c",
        op: "listLeaseExpired",
        role: Role::Worker,
        versions: &["v0.25.1", "v0.26.0"],
    },
    Script {
        sha: "4b6a7fee5432dbb0db7b43902859dad23840551f",
        op: "markAsComplete",
        role: Role::Worker,
        versions: &["v0.23.0"],
    },
    Script {
        sha: "117dca952700588e559c7ace20b925096d587974",
        op: "markAsComplete",
        role: Role::Worker,
        versions: &["v0.24.1", "v0.25.1", "v0.26.0"],
    },
    Script {
        sha: "adc2557141dbb6b5f0066767653a7a3f4ee4bf48",
        op: "markAsCompleteUnique",
        role: Role::Worker,
        versions: &["v0.23.0"],
    },
    Script {
        sha: "ce6833ccce362a8c0ee53beee413341daf52e39c",
        op: "markAsCompleteUnique",
        role: Role::Worker,
        versions: &["v0.24.1", "v0.25.1", "v0.26.0"],
    },
    Script {
        sha: "74ba718a5ed06d87a29e289ce500f34eac8759fc",
        op: "readAggregationSet",
        role: Role::Worker,
        versions: &["v0.23.0", "v0.24.1", "v0.25.1", "v0.26.0"],
    },
    Script {
        sha: "7c08714194a1ed81153180b36590c51f1ccd7d42",
        op: "reclaimStaleAggregationSets",
        role: Role::Worker,
        versions: &["v0.23.0", "v0.24.1", "v0.25.1", "v0.26.0"],
    },
    Script {
        sha: "f34cbfd11d1fc8019af55b50c447fc68eb8b29e5",
        op: "requeue",
        role: Role::Worker,
        versions: &["v0.23.0", "v0.24.1", "v0.25.1", "v0.26.0"],
    },
    Script {
        sha: "65fa409c88198a681c53e0892d8276eca0145694",
        op: "retry",
        role: Role::Worker,
        versions: &["v0.23.0", "v0.24.1", "v0.25.1", "v0.26.0"],
    },
    Script {
        sha: "3c8548ad44d0dfcfde50f07ea9271d77f656042c",
        op: "writeServerState",
        role: Role::Worker,
        versions: &["v0.23.0", "v0.24.1", "v0.25.1", "v0.26.0"],
    },
];

/// The catalog by hash: looked up for every EVALSHA, asynq's most
/// frequent command.
static BY_SHA: LazyLock<HashMap<&'static [u8], &'static Script>> =
    LazyLock::new(|| SCRIPTS.iter().map(|s| (s.sha.as_bytes(), s)).collect());

/// The catalogued script whose body has SHA-1 `sha` (hex, any case).
pub fn by_sha(sha: &[u8]) -> Option<&'static Script> {
    let mut lower = [0u8; 40];
    if sha.len() != lower.len() {
        return None;
    }
    lower.copy_from_slice(sha);
    lower.make_ascii_lowercase();
    BY_SHA.get(&lower[..]).copied()
}

/// The catalogued script with this exact body.
pub fn by_body(body: &[u8]) -> Option<&'static Script> {
    by_sha(sha1_hex(body).as_bytes())
}

/// SHA-1 of `body` in lower-case hex, as Redis names scripts.
pub fn sha1_hex(body: &[u8]) -> String {
    use sha1::{Digest, Sha1};
    Sha1::digest(body)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_unique_lower_case_sha1() {
        for (i, s) in SCRIPTS.iter().enumerate() {
            assert_eq!(s.sha.len(), 40, "{}", s.op);
            assert!(
                s.sha
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            );
            assert!(
                !SCRIPTS[..i].iter().any(|o| o.sha == s.sha),
                "{} twice",
                s.sha
            );
            assert!(!s.versions.is_empty(), "{}", s.op);
        }
    }

    #[test]
    fn lookup_by_sha_ignores_case_and_rejects_other_lengths() {
        let s = &SCRIPTS[0];
        assert_eq!(by_sha(s.sha.to_uppercase().as_bytes()), Some(s));
        assert_eq!(by_sha(&s.sha.as_bytes()[..39]), None);
        assert_eq!(by_body(b"return 1"), None);
    }

    #[test]
    fn sha1_matches_redis() {
        // SCRIPT LOAD "return 1" answers this in Redis.
        assert_eq!(
            sha1_hex(b"return 1"),
            "e0e1f9fabfc9d4800c877a703b823ac0578ff8db"
        );
    }
}
