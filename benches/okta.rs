//! Okta operations per second through the one Okta client (`OktaClient::perform`) against the
//! tests' Okta org stand-in (`tests/support/okta_org.rs`, on its own thread and runtime):
//! suspend/unsuspend pairs on users given by id, sequential and 8 in flight; the same with logins
//! (each operation resolves its user first: two requests); and with an OAuth service app (one
//! token request for the whole run). The stand-in's rate limit is set out of the way.

use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::config::{OktaCredentials, Secret};
use engine::lookup::{OktaClient, OpOutcome};
use engine::script::OktaOp;

#[path = "../tests/support/okta_org.rs"]
#[allow(dead_code)] // the tests use the rest of it
mod okta_org;

/// Operations per measurement: enough for a stable figure, a few seconds in all.
const OPS: usize = 2000;
/// Concurrent operations for the parallel figures.
const IN_FLIGHT: usize = 8;
/// Users the operations cycle through.
const USERS: usize = 64;

fn id(i: usize) -> String {
    format!("00ubench{i:012}")
}

fn op(i: usize, by_login: bool) -> OktaOp {
    let u = i % USERS;
    let user = if by_login {
        format!("user{u}@example.com")
    } else {
        id(u)
    };
    // Each user is suspended, then unsuspended, ...: every operation changes something.
    if (i / USERS).is_multiple_of(2) {
        OktaOp::SuspendUser { user }
    } else {
        OktaOp::UnsuspendUser { user }
    }
}

async fn run(client: Arc<OktaClient>, in_flight: usize, by_login: bool) -> Duration {
    let started = Instant::now();
    let mut tasks = Vec::new();
    // A user's operations stay in one lane, in order (USERS is a multiple of IN_FLIGHT).
    for lane in 0..in_flight {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            for i in (0..OPS).filter(|i| (i % USERS) % in_flight == lane) {
                let deadline = Some(Instant::now() + Duration::from_secs(30));
                match client
                    .perform(&op(i, by_login), &format!("bench-{i}"), deadline)
                    .await
                {
                    OpOutcome::Done { .. } => {}
                    other => panic!("operation {i}: {other:?}"),
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("lane");
    }
    started.elapsed()
}

fn org() -> okta_org::OktaOrg {
    let org = okta_org::OktaOrg::start();
    org.set_rate_limit(u64::MAX / 2, 60);
    for u in 0..USERS {
        org.add_user(&id(u), &format!("user{u}@example.com"), "ACTIVE");
    }
    org
}

fn report(name: &str, requests_per_op: usize, elapsed: Duration) {
    println!(
        "{name:<44} {OPS} ops in {:>6.2} s: {:>7.0} ops/s ({} request(s) each)",
        elapsed.as_secs_f64(),
        OPS as f64 / elapsed.as_secs_f64(),
        requests_per_op
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // Users by id, SSWS. Each case on a fresh org: the pairs start from ACTIVE.
    for (in_flight, by_login, name, reqs) in [
        (1, false, "okta ops, user ids, sequential", 1),
        (IN_FLIGHT, false, "okta ops, user ids, 8 in flight", 1),
        (
            IN_FLIGHT,
            true,
            "okta ops, logins (resolved), 8 in flight",
            2,
        ),
    ] {
        let org = org();
        let client = Arc::new(
            OktaClient::new(&org.url, Secret::new(okta_org::ORG_TOKEN.into())).expect("client"),
        );
        report(name, reqs, run(client, in_flight, by_login).await);
        assert_eq!(org.rate_limited(), 0);
    }
    // A service app: one token for all of them.
    let org = org();
    let key = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/support/okta-keys/rsa-public.pem"
    ))
    .expect("public key");
    org.use_oauth(okta_org::OAuth {
        key: jsonwebtoken::DecodingKey::from_rsa_pem(key.as_bytes()).expect("key"),
        algorithm: jsonwebtoken::Algorithm::RS256,
        expires_in: 3600,
    });
    let private = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/support/okta-keys/rsa-private.pem"
    ))
    .expect("private key");
    let client = Arc::new(
        OktaClient::with_credentials(
            &org.url,
            OktaCredentials::ServiceApp {
                client_id: okta_org::CLIENT_ID.into(),
                private_key: Secret::new(private),
                scopes: vec!["okta.users.manage".into()],
            },
        )
        .expect("service app"),
    );
    report(
        "okta ops, service app (Bearer), 8 in flight",
        1,
        run(client, IN_FLIGHT, false).await,
    );
    println!("token requests: {}", org.token_requests());
}
