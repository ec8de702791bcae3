//! Real asynq logging in to the proxy: the Go harness in `tests/harness`
//! at asynq v0.26.0 and v0.24.1, over TLS with a user name and password
//! (`RedisClientOpt{Username, Password, TLSConfig}`) and over mutual TLS
//! with only a client certificate. Producer, workers, scheduler and
//! inspector must work end to end. Then single enqueues (`-probe`) that
//! must fail, each with an error that says why: a wrong password, an
//! unknown user, an untrusted certificate, a certificate for another
//! identity, a certificate for no identity. And case 2: a listener
//! without RESP3, where asynq must fall back to AUTH on RESP2.
//!
//! Plain TCP with a password is covered at every version by
//! `asynq_harness.rs`. Runs are serialised; each full run gets a fresh
//! Redis, as the harness expects.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use support::{
    Ca, PemFiles, Proxy, Redis, San, TEST_SECRET, TEST_USER, TempDir, all_of_asynq, listener_tls,
    metric, secret_hash, write_ca,
};

/// Tasks the producer enqueues in each full run.
const TASKS: &str = "1000";

/// A probe is one enqueue; far longer than this is a hang.
const PROBE_HANG: Duration = Duration::from_secs(60);

const APP: &str = "app-web";
const APP_SECRET: &str = "s3cret";
const WORKER_URI: &str = "spiffe://asynq-guard.test/ns/jobs/sa/worker";

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Builds the harness at `version` (`go.mod` is v0.26.0, the others have
/// their own module file) and returns the binary.
fn build_harness(version: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/harness");
    let modfile = match version {
        "v0.26.0" => "go.mod".to_string(),
        other => format!("go.{other}.mod"),
    };
    let binary = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("auth-harness-{version}"));
    let status = std::process::Command::new("go")
        .arg("build")
        .arg(format!("-modfile={modfile}"))
        .arg("-o")
        .arg(&binary)
        .arg(".")
        .current_dir(&dir)
        .status()
        .expect("run go build (is Go installed?)");
    assert!(status.success(), "go build of the harness at {version}");
    binary
}

/// The certificates of these tests, in a directory of their own.
struct Pki {
    /// Holds the files below; removed when the test ends.
    _dir: TempDir,
    server: PemFiles,
    server_ca: PathBuf,
    clients_ca: PathBuf,
    /// Proves identity `worker` by its URI SAN.
    worker: PemFiles,
    /// Signed by the clients CA, matching no identity.
    stranger: PemFiles,
    /// Names `worker`'s URI, signed by a CA the proxy does not trust.
    untrusted: PemFiles,
}

impl Pki {
    fn new() -> Pki {
        let dir = TempDir::new("asynq-pki");
        let server_ca = Ca::new("asynq-guard test server CA");
        let clients_ca = Ca::new("asynq-guard test clients CA");
        let path = dir.path();
        Pki {
            server: server_ca.server().write(path, "server"),
            server_ca: write_ca(path, "server-ca.pem", &server_ca.pem()),
            clients_ca: write_ca(path, "clients-ca.pem", &clients_ca.pem()),
            worker: clients_ca
                .client("worker-pod", &[San::Uri(WORKER_URI)])
                .write(path, "worker"),
            stranger: clients_ca.client("stranger", &[]).write(path, "stranger"),
            untrusted: Ca::new("untrusted CA")
                .client("worker-pod", &[San::Uri(WORKER_URI)])
                .write(path, "untrusted"),
            _dir: dir,
        }
    }

    fn ca_flag(&self) -> Vec<String> {
        vec!["-tls-ca".into(), self.server_ca.display().to_string()]
    }

    fn cert_flags(&self, cert: &PemFiles) -> Vec<String> {
        let mut flags = self.ca_flag();
        flags.extend([
            "-tls-cert".into(),
            cert.cert.display().to_string(),
            "-tls-key".into(),
            cert.key.display().to_string(),
        ]);
        flags
    }
}

fn login(user: &str, password: &str) -> Vec<String> {
    vec![
        "-username".into(),
        user.into(),
        "-password".into(),
        password.into(),
    ]
}

/// A proxy with the plain `test` listener, a TLS listener `tls`, a
/// mutual-TLS listener `mtls` and a plain listener without RESP3
/// (`resp2`); identities by secret and by certificate.
async fn start_proxy(redis: &Redis, pki: &Pki) -> Proxy {
    let policy = format!(
        "[[identity]]\nname = \"{TEST_USER}\"\nsecret_sha256 = [\"{}\"]\n\
         [[identity]]\nname = \"{APP}\"\nsecret_sha256 = [\"{}\"]\n\
         [[identity]]\nname = \"worker\"\ncert = \"uri:{WORKER_URI}\"\n\
         [auth]\nmax_failures_per_minute = 1000\nfailure_delay_ms = 0\n{}",
        secret_hash(TEST_SECRET),
        secret_hash(APP_SECRET),
        [TEST_USER, APP, "worker"].map(all_of_asynq).concat()
    );
    Proxy::builder(&redis.address())
        .listener("tls", &listener_tls(&pki.server, None))
        .listener("mtls", &listener_tls(&pki.server, Some(&pki.clients_ca)))
        .listener("resp2", "resp3 = false")
        .extra(&policy)
        .start()
        .await
}

/// A full harness run against `address`; its summary must say ok.
fn full_run(binary: &Path, address: &str, flags: &[String], label: &str) -> Value {
    let out = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("auth-summary-{label}-{}.json", std::process::id()));
    let result = std::process::Command::new(binary)
        .args([
            "-redis", address, "-tasks", TASKS, "-timeout", "3m", "-quiet",
        ])
        .args(flags)
        .arg("-out")
        .arg(&out)
        .output()
        .expect("run the harness");
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    let _ = std::fs::remove_file(&out);
    assert!(
        result.status.success(),
        "asynq harness ({label}) failed: {}\nstderr:\n{}\nsummary:\n{text}",
        result.status,
        String::from_utf8_lossy(&result.stderr)
    );
    let summary: Value = serde_json::from_str(&text).expect("the summary is JSON");
    assert_eq!(summary["ok"], true, "{label}: {summary}");
    assert!(
        summary["enqueued_total"].as_u64().unwrap_or(0) >= TASKS.parse().unwrap(),
        "{label}: {summary}"
    );
    assert_eq!(summary["cancelled"], true, "{label}");
    assert_eq!(summary["scheduler_ran"], true, "{label}");
    summary
}

/// What a `-probe` enqueue printed: whether it worked and asynq's error.
struct Probe {
    ok: bool,
    error: String,
}

async fn probe(binary: &Path, address: &str, flags: &[String]) -> Probe {
    let run = tokio::process::Command::new(binary)
        .args(["-redis", address, "-probe"])
        .args(flags)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(PROBE_HANG, run)
        .await
        .unwrap_or_else(|_| panic!("probe {flags:?} did not finish in {PROBE_HANG:?}"))
        .expect("run the harness probe");
    assert!(out.status.success(), "probe {flags:?}: {}", out.status);
    let line = String::from_utf8_lossy(&out.stdout).into_owned();
    let json: Value = serde_json::from_str(line.trim())
        .unwrap_or_else(|e| panic!("probe {flags:?} printed {line:?}: {e}"));
    Probe {
        ok: json["ok"] == true,
        error: json["error"].as_str().unwrap_or_default().to_string(),
    }
}

/// A probe that asynq must refuse, with an error containing `why`.
async fn refused(binary: &Path, address: &str, flags: &[String], why: &str) {
    let p = probe(binary, address, flags).await;
    assert!(!p.ok, "{flags:?} was accepted");
    assert!(
        p.error.contains(why),
        "{flags:?}: asynq's error {:?} does not say {why:?}",
        p.error
    );
}

async fn full_runs_over_tls_and_mutual_tls(version: &str) {
    let _turn = ONE_AT_A_TIME.lock().await;
    let binary = build_harness(version);
    let pki = Pki::new();

    // TLS, with a user name and password.
    let redis = Redis::start().await;
    let proxy = start_proxy(&redis, &pki).await;
    let mut flags = pki.ca_flag();
    flags.extend(login(TEST_USER, TEST_SECRET));
    let summary = full_run(
        &binary,
        &proxy.listener_address("tls"),
        &flags,
        &format!("tls-{version}"),
    );
    assert_eq!(summary["asynq_version"], version);
    let metrics = proxy.metrics().await;
    let logins = "asynq_guard_auth_attempts_total{listener=\"tls\",result=\"ok\"}";
    assert!(
        metric(&metrics, logins).is_some_and(|n| n >= 1.0),
        "{metrics}"
    );
    drop((proxy, redis));

    // Mutual TLS, with only a client certificate.
    let redis = Redis::start().await;
    let proxy = start_proxy(&redis, &pki).await;
    let flags = pki.cert_flags(&pki.worker);
    let summary = full_run(
        &binary,
        &proxy.listener_address("mtls"),
        &flags,
        &format!("mtls-{version}"),
    );
    assert_eq!(summary["asynq_version"], version);
    let metrics = proxy.metrics().await;
    let opened = "asynq_guard_client_connections_total{listener=\"mtls\"}";
    assert!(
        metric(&metrics, opened).is_some_and(|n| n >= 1.0),
        "{metrics}"
    );
    assert!(
        !metrics.contains("asynq_guard_auth_attempts_total{listener=\"mtls\""),
        "no AUTH was needed on mutual TLS:\n{metrics}"
    );
    assert!(
        !metrics.contains("asynq_guard_tls_handshake_failures_total{"),
        "{metrics}"
    );
}

async fn refusals_say_why(version: &str) {
    let _turn = ONE_AT_A_TIME.lock().await;
    let binary = build_harness(version);
    let pki = Pki::new();
    let redis = Redis::start().await;
    let proxy = start_proxy(&redis, &pki).await;
    let (plain, tls, mtls) = (
        proxy.address(),
        proxy.listener_address("tls"),
        proxy.listener_address("mtls"),
    );

    // The same probe works with the right credentials, so the refusals
    // below are about the credentials alone.
    let mut good = pki.ca_flag();
    good.extend(login(APP, APP_SECRET));
    let p = probe(&binary, &tls, &good).await;
    assert!(p.ok, "TLS with a password: {}", p.error);
    let p = probe(&binary, &mtls, &pki.cert_flags(&pki.worker)).await;
    assert!(p.ok, "mutual TLS with a certificate: {}", p.error);

    let wrongpass = "WRONGPASS invalid username-password pair or user is disabled";
    refused(&binary, &plain, &login(APP, "not-the-secret"), wrongpass).await;
    let mut over_tls = pki.ca_flag();
    over_tls.extend(login(APP, "not-the-secret"));
    refused(&binary, &tls, &over_tls, wrongpass).await;
    refused(&binary, &plain, &login("nobody", APP_SECRET), wrongpass).await;

    // Go's TLS stack reports the proxy's alert. Go does not even present
    // a certificate whose issuer is not among the CAs the proxy asks for,
    // so the alert is "certificate required"; were it presented, it would
    // be "unknown certificate authority".
    let p = probe(&binary, &mtls, &pki.cert_flags(&pki.untrusted)).await;
    assert!(!p.ok, "an untrusted certificate was accepted");
    assert!(
        p.error.contains("remote error: tls: certificate required")
            || p.error
                .contains("remote error: tls: unknown certificate authority"),
        "asynq's error {:?} does not name the TLS refusal",
        p.error
    );

    let mut other = pki.cert_flags(&pki.worker);
    other.extend(login(APP, APP_SECRET));
    refused(
        &binary,
        &mtls,
        &other,
        "WRONGPASS the client certificate is for identity 'worker', not the one AUTH names",
    )
    .await;

    // Nothing of the refused probes reached Redis.
    let mut direct = redis.client().await;
    let queued = direct.cmd(&["LLEN", "asynq:{probe}:pending"]).await;
    assert_eq!(queued, support::int(2), "only the two good probes enqueued");
}

/// A trusted certificate that matches no identity: refused, and told so.
async fn certificate_for_no_identity_is_told_so(version: &str) {
    let _turn = ONE_AT_A_TIME.lock().await;
    let binary = build_harness(version);
    let pki = Pki::new();
    let redis = Redis::start().await;
    let proxy = start_proxy(&redis, &pki).await;
    let mtls = proxy.listener_address("mtls");
    refused(
        &binary,
        &mtls,
        &pki.cert_flags(&pki.stranger),
        "NOAUTH client certificate (cn:stranger) matches no identity",
    )
    .await;
    let mut with_password = pki.cert_flags(&pki.stranger);
    with_password.extend(login(APP, APP_SECRET));
    refused(
        &binary,
        &mtls,
        &with_password,
        "WRONGPASS client certificate (cn:stranger) matches no identity",
    )
    .await;
}

/// Case 2 with real asynq: `HELLO 3 AUTH …` is refused on a listener
/// without RESP3, and asynq must log in with AUTH on RESP2 instead.
async fn listener_without_resp3_takes_auth_on_resp2(version: &str) {
    let _turn = ONE_AT_A_TIME.lock().await;
    let binary = build_harness(version);
    let pki = Pki::new();
    let redis = Redis::start().await;
    let proxy = start_proxy(&redis, &pki).await;
    let p = probe(
        &binary,
        &proxy.listener_address("resp2"),
        &login(APP, APP_SECRET),
    )
    .await;
    assert!(
        p.ok,
        "asynq {version} on a RESP2-only listener: {}",
        p.error
    );
    let metrics = proxy.metrics().await;
    let logins = "asynq_guard_auth_attempts_total{listener=\"resp2\",result=\"ok\"}";
    assert!(
        metric(&metrics, logins).is_some_and(|n| n >= 1.0),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asynq_v0_26_0_works_over_tls_with_a_password_and_over_mutual_tls_with_a_certificate() {
    full_runs_over_tls_and_mutual_tls("v0.26.0").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asynq_v0_24_1_works_over_tls_with_a_password_and_over_mutual_tls_with_a_certificate() {
    full_runs_over_tls_and_mutual_tls("v0.24.1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asynq_v0_26_0_refused_logins_fail_with_an_error_saying_why() {
    refusals_say_why("v0.26.0").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asynq_v0_24_1_refused_logins_fail_with_an_error_saying_why() {
    refusals_say_why("v0.24.1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asynq_v0_26_0_with_a_certificate_for_no_identity_is_told_so() {
    certificate_for_no_identity_is_told_so("v0.26.0").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asynq_v0_24_1_with_a_certificate_for_no_identity_is_told_so() {
    certificate_for_no_identity_is_told_so("v0.24.1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asynq_v0_26_0_on_a_listener_without_resp3_logs_in_with_auth() {
    listener_without_resp3_takes_auth_on_resp2("v0.26.0").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asynq_v0_24_1_on_a_listener_without_resp3_logs_in_with_auth() {
    listener_without_resp3_takes_auth_on_resp2("v0.24.1").await;
}
