//! asynq-guard: a RESP proxy that stands between programs using the Go
//! task queue asynq and the Redis that holds their queues.
//!
//! # Data path
//!
//! ```text
//! client ─► listener ─► session ──────────────────────────► upstream ─► Redis
//!                        │ resp: cut bytes into commands        │
//!                        │ command: what the pipe must know     │
//!                        │ Gate: forward / answer / refuse      │
//! client ◄────────────── session ◄── resp: cut replies ◄────────┘
//! ```
//!
//! | step | module |
//! |---|---|
//! | configuration file, validated before start | [`config`], [`tls`] |
//! | start-up, signals | [`app`] |
//! | accept connections | [`listener`] |
//! | one connection: ordering, pipelining, pub/sub | [`session`] |
//! | RESP framing and input limits | [`resp`] |
//! | command classification for the pipe | [`command`] |
//! | the proxy's own connection to Redis | [`upstream`] |
//! | metrics and the admin HTTP server | [`metrics`], [`admin`] |
//!
//! Policy (identities, grants, limits, signatures) plugs in at the
//! session's [`session::Gate`], between parsing and forwarding.

#![forbid(unsafe_code)]

pub mod admin;
pub mod app;
pub mod command;
pub mod config;
pub mod listener;
pub mod metrics;
pub mod resp;
pub mod session;
pub mod tls;
pub mod upstream;
