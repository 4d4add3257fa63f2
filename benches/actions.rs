//! Actions per second through the durable action queue, for each kind, against local servers:
//! N actions queued in one store (as successful runs queue them), then the kind's executor
//! (`DuePool` + its `DueWork`, as `engine serve` runs it) until every one is recorded done —
//! so each figure includes reading the action, carrying it out, and committing its outcome.
//!
//! - `email`: `MailSender` over SMTP to the tests' in-process server (`--no-store`).
//! - `okta`: `OktaExecutor` through `OktaClient::perform` to the tests' Okta org stand-in
//!   (suspend by user id; one request per action; its rate limit set out of the way).
//!
//! Run: `cargo bench --bench actions [-- --actions N]`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::actions::{ActionCounts, MailSender, MailSettings, OktaExecutor, mail};
use engine::config::Secret;
use engine::lookup::OktaClient;
use engine::script::{Action, ActionKind, Email, OktaAction, OktaOp};
use engine::store::actions::{self, ActionsView, Origin};
use engine::store::{CommitMode, Store};
use tokio::sync::watch;

#[path = "../tests/support/okta_org.rs"]
#[allow(dead_code)]
mod okta_org;
#[path = "../tests/support/smtp_server.rs"]
#[allow(dead_code)] // the tests use the rest of it
mod smtp_server;

/// Actions per kind, unless `--actions N`: a few seconds of work each.
const ACTIONS: usize = 5000;
/// Actions queued per transaction (one run queues a handful; a batch of runs shares a commit).
const PER_COMMIT: usize = 100;
/// Users the Okta actions cycle through.
const USERS: usize = 500;

fn user_id(i: usize) -> String {
    format!("00ubench{i:012}")
}

/// Queues `make(i)` for i in 0..n, `PER_COMMIT` per transaction.
async fn queue(store: &Store, n: usize, make: impl Fn(usize) -> Action) {
    for start in (0..n).step_by(PER_COMMIT) {
        let batch: Vec<Action> = (start..(start + PER_COMMIT).min(n)).map(&make).collect();
        store
            .write(move |txn| {
                let origin = Origin {
                    run_id: start as u64 + 1,
                    event_uuid: "bench-event",
                    script: "bench",
                };
                actions::enqueue(txn, origin, &batch).map(|_| ())
            })
            .await
            .expect("queue");
    }
}

/// Waits until no action of `kind` is pending; the time from `started`.
async fn drained(store: &Store, kind: ActionKind, started: Instant) -> Duration {
    loop {
        if ActionsView(store).due_count(kind).expect("due count") == 0 {
            return started.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn report(kind: &str, n: usize, took: Duration, store: &Store, k: ActionKind) {
    let done = ActionsView(store)
        .recent(n + 10, Default::default())
        .expect("recent")
        .into_iter()
        .filter(|a| a.kind == k && a.status == actions::ActionStatus::Done)
        .count();
    assert_eq!(done, n, "{kind}: every action done");
    println!(
        "  {kind:<6} {n} actions in {:.2} s = {:.0} actions/s",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64()
    );
}

async fn email(n: usize) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Arc::new(Store::open(dir.path(), CommitMode::Group).expect("store"));
    queue(&store, n, |i| {
        Action::Email(Email {
            id: format!("bench-mail-{i}"),
            position: 0,
            to: vec!["manager@example.com".into()],
            cc: vec![],
            bcc: vec![],
            reply_to: None,
            subject: format!("New hire {i}"),
            body: "Jane Doe starts today.".into(),
            html: None,
            key: None,
        })
    })
    .await;
    let server = smtp_server::SmtpServer::start(&["--no-store"]);
    let url = Secret::new(format!("smtp://127.0.0.1:{}?tls=none", server.port));
    let transport = mail::Transport::from_url(&url).expect("transport");
    let settings = MailSettings {
        from: "automation@example.com".into(),
        retry_base: Duration::from_secs(1),
    };
    let counts = Arc::new(ActionCounts::default());
    let sender = Arc::new(MailSender::new(store.clone(), transport, settings, counts));
    let pool = sender.pool();
    let (stop_tx, stop_rx) = watch::channel(false);
    let started = Instant::now();
    let task = tokio::spawn(MailSender::run(pool, sender, stop_rx));
    let took = drained(&store, ActionKind::Email, started).await;
    let _ = stop_tx.send(true);
    let _ = task.await;
    report("email", n, took, &store, ActionKind::Email);
}

async fn okta(n: usize) {
    let org = okta_org::OktaOrg::start();
    org.set_rate_limit(1_000_000, 60);
    for u in 0..USERS {
        org.add_user(&user_id(u), &format!("user{u}@example.com"), "ACTIVE");
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Arc::new(Store::open(dir.path(), CommitMode::Group).expect("store"));
    // Alternate suspend and unsuspend per user, so every action changes something.
    queue(&store, n, |i| {
        let user = user_id(i % USERS);
        let op = if (i / USERS).is_multiple_of(2) {
            OktaOp::SuspendUser { user }
        } else {
            OktaOp::UnsuspendUser { user }
        };
        Action::Okta(OktaAction {
            id: format!("bench-okta-{i}"),
            position: i % PER_COMMIT,
            op,
        })
    })
    .await;
    let client =
        OktaClient::new(&org.url, Secret::new(okta_org::ORG_TOKEN.into())).expect("client");
    let counts = Arc::new(ActionCounts::default());
    let executor = Arc::new(OktaExecutor::new(
        store.clone(),
        Some(Arc::new(client)),
        Duration::from_secs(1),
        counts,
    ));
    let pool = executor.pool();
    let (stop_tx, stop_rx) = watch::channel(false);
    let started = Instant::now();
    let task = tokio::spawn(OktaExecutor::run(pool, stop_rx));
    let took = drained(&store, ActionKind::Okta, started).await;
    let _ = stop_tx.send(true);
    let _ = task.await;
    report("okta", n, took, &store, ActionKind::Okta);
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n = args
        .iter()
        .position(|a| a == "--actions")
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().expect("--actions N"))
        .unwrap_or(ACTIONS);
    println!("actions/s through the queue (queued, carried out, outcome committed):");
    email(n).await;
    okta(n).await;
}
