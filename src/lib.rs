//! asynq-guard: a RESP proxy that stands between programs using the Go
//! task queue asynq and the Redis that holds their queues.
//!
//! # Data path
//!
//! ```text
//! client ─► listener ─► session ──────────────────────────► upstream ─► Redis
//!                        │ resp: cut bytes into commands        │
//!                        │ command: what the pipe must know     │
//!                        │ gate: who is this, forward / answer  │
//!                        │   asynq: which operation, which queue│
//!                        │   policy: does a grant cover it      │
//! client ◄────────────── session ◄── resp: cut replies ◄────────┘
//! ```
//!
//! | step | module |
//! |---|---|
//! | configuration file, validated before start | [`config`], [`tls`] |
//! | start-up, signals, graceful shutdown | [`app`] |
//! | the policy in force, reloaded on SIGHUP and file change | [`reload`] |
//! | accept connections, TLS and mutual TLS | [`listener`], [`tls`] |
//! | one connection: ordering, pipelining, pub/sub | [`session`] |
//! | per command: authenticate, refuse, rewrite | [`gate`], [`auth`], [`conceal`] |
//! | what a command means to asynq: operation, queue, task type | [`asynq`] |
//! | whether the identity's grants allow it | [`policy`] |
//! | enqueue size caps, rate limits, queue caps | [`admission`] |
//! | task signatures: added, checked, withheld | [`integrity`] |
//! | RESP framing and input limits | [`resp`] |
//! | command classification for the pipe | [`command`] |
//! | the proxy's own connection to Redis | [`upstream`] |
//! | metrics and the admin HTTP server | [`metrics`], [`admin`] |
//!
//! Every connection must prove an identity of the configuration before
//! anything but `AUTH`, `HELLO`, `QUIT` and `RESET` is forwarded; then
//! every command must be asynq traffic that one of its grants covers (or
//! the identity holds a `raw` grant). Further policy (limits, signatures)
//! plugs in at the [`gate::Gate`], between parsing and forwarding.

#![forbid(unsafe_code)]

pub mod admin;
pub mod admission;
pub mod app;
pub mod asynq;
pub mod auth;
pub mod command;
pub mod conceal;
pub mod config;
pub mod control;
pub mod gate;
pub mod integrity;
pub mod listener;
pub mod metrics;
pub mod policy;
pub mod reload;
pub mod resp;
pub mod session;
pub mod tls;
pub mod upstream;
