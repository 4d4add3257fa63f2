//! The `okta::` operations and reads through the one Okta client, against an Okta org stand-in
//! (`tests/support/okta_org.rs`) that answers as Okta documents: each operation reaches it once
//! with the right method and path, logins and group names are resolved, effects that already
//! hold are done, deactivation never deletes, 429s and the rate-limit budget are honoured, and
//! an OAuth service app's assertions are checked (signature, aud, iss/sub, exp) and its token
//! cached.

use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::config::{OktaCredentials, Secret};
use engine::lookup::{Lookup, LookupHost, OktaClient, OpOutcome};
use engine::script::{GroupRef, Host, HostError, OktaOp};

#[path = "../support/okta_org.rs"]
mod okta_org;

use okta_org::{CLIENT_ID, OAuth, ORG_TOKEN, OktaOrg};

const JANE: &str = "00ujane0000000000001";
const BOB: &str = "00ubob00000000000002";
const GONE: &str = "00ugone0000000000003";
const ADMINS: &str = "00gadmins00000000001";
const ADMINS_EU: &str = "00gadminseu000000001";

fn org() -> OktaOrg {
    let org = OktaOrg::start();
    org.add_user(JANE, "jane@example.com", "ACTIVE");
    org.add_user(BOB, "bob@example.com", "SUSPENDED");
    org.add_user(GONE, "gone@example.com", "DEPROVISIONED");
    org.add_group(ADMINS, "Admins", &[BOB]);
    org.add_group(ADMINS_EU, "Admins EU", &[JANE]);
    org
}

fn ssws(org: &OktaOrg) -> OktaClient {
    OktaClient::new(&org.url, Secret::new(ORG_TOKEN.into())).expect("client")
}

fn fixture_key(name: &str) -> String {
    std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/support/okta-keys")
            .join(name),
    )
    .expect("key fixture")
}

fn service_app(
    org: &OktaOrg,
    private_pem: &str,
) -> Result<OktaClient, engine::lookup::LookupError> {
    OktaClient::with_credentials(
        &org.url,
        OktaCredentials::ServiceApp {
            client_id: CLIENT_ID.into(),
            private_key: Secret::new(private_pem.into()),
            scopes: vec!["okta.users.manage".into(), "okta.groups.manage".into()],
        },
    )
}

fn rsa_org() -> OktaOrg {
    let org = org();
    org.use_oauth(OAuth {
        key: jsonwebtoken::DecodingKey::from_rsa_pem(fixture_key("rsa-public.pem").as_bytes())
            .expect("public key"),
        algorithm: jsonwebtoken::Algorithm::RS256,
        expires_in: 3600,
    });
    org
}

fn deadline() -> Option<Instant> {
    Some(Instant::now() + Duration::from_secs(20))
}

async fn done(client: &OktaClient, op: OktaOp) -> engine::lookup::OpSummary {
    match client.perform(&op, "act-1", deadline()).await {
        OpOutcome::Done { summary } => summary,
        other => panic!("{op:?}: {other:?}"),
    }
}

/// The error of an operation expected to fail.
async fn failed(client: &OktaClient, op: OktaOp) -> String {
    match client.perform(&op, "act-1", deadline()).await {
        OpOutcome::Failed { error } => error,
        other => panic!("{op:?}: {other:?}"),
    }
}

fn w(method: &str, path: &str) -> (String, String) {
    (method.to_string(), path.to_string())
}

fn user(u: &str) -> String {
    u.to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn each_operation_reaches_okta_once_with_its_method_and_path() {
    let org = org();
    let client = ssws(&org);
    let mut profile = serde_json::Map::new();
    profile.insert("title".into(), "Analyst".into());
    let ops = [
        (
            OktaOp::SuspendUser { user: user(JANE) },
            w("POST", &format!("/api/v1/users/{JANE}/lifecycle/suspend")),
        ),
        (
            OktaOp::UnsuspendUser { user: user(JANE) },
            w("POST", &format!("/api/v1/users/{JANE}/lifecycle/unsuspend")),
        ),
        (
            OktaOp::ClearSessions { user: user(JANE) },
            w("DELETE", &format!("/api/v1/users/{JANE}/sessions")),
        ),
        (
            OktaOp::ExpirePassword { user: user(JANE) },
            w(
                "POST",
                &format!("/api/v1/users/{JANE}/lifecycle/expire_password"),
            ),
        ),
        (
            OktaOp::AddToGroup {
                user: user(JANE),
                group: GroupRef::Id(ADMINS.into()),
            },
            w("PUT", &format!("/api/v1/groups/{ADMINS}/users/{JANE}")),
        ),
        (
            OktaOp::RemoveFromGroup {
                user: user(JANE),
                group: GroupRef::Id(ADMINS.into()),
            },
            w("DELETE", &format!("/api/v1/groups/{ADMINS}/users/{JANE}")),
        ),
        (
            OktaOp::UpdateProfile {
                user: user(JANE),
                profile,
            },
            w("POST", &format!("/api/v1/users/{JANE}")),
        ),
        (
            OktaOp::DeactivateUser { user: user(JANE) },
            w(
                "POST",
                &format!("/api/v1/users/{JANE}/lifecycle/deactivate"),
            ),
        ),
    ];
    for (op, expected) in ops {
        org.clear_log();
        let summary = done(&client, op.clone()).await;
        assert_eq!(org.writes(), vec![expected.clone()], "{op:?}");
        assert_eq!(
            (summary.method.clone(), summary.path.clone()),
            expected,
            "{summary}"
        );
        assert!(summary.status < 300, "{summary}");
        let log = org.log();
        assert!(
            log.iter()
                .filter(|l| l.method != "GET")
                .all(|l| l.idempotency_key.as_deref() == Some("act-1")),
            "{log:?}"
        );
        let shown = format!("{summary} {summary:?}");
        assert!(!shown.contains(ORG_TOKEN), "{shown}");
    }
    assert_eq!(org.status_of(JANE).as_deref(), Some("DEPROVISIONED"));
    assert_eq!(
        org.profile_of(JANE).expect("jane")["title"],
        serde_json::json!("Analyst")
    );
    assert!(org.members(ADMINS).iter().all(|m| m != JANE));
    assert!(org.deleted().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_login_is_resolved_to_an_id_and_a_group_name_to_its_group() {
    let org = org();
    let client = ssws(&org);
    let summary = done(
        &client,
        OktaOp::SuspendUser {
            user: "Jane@Example.com".into(),
        },
    )
    .await;
    assert_eq!(
        summary.path,
        format!("/api/v1/users/{JANE}/lifecycle/suspend")
    );
    let log: Vec<(String, String)> = org.log().into_iter().map(|l| (l.method, l.path)).collect();
    assert_eq!(
        log,
        vec![
            w("GET", "/api/v1/users/Jane%40Example.com"),
            w("POST", &format!("/api/v1/users/{JANE}/lifecycle/suspend")),
        ]
    );
    assert_eq!(org.status_of(JANE).as_deref(), Some("SUSPENDED"));

    // "Admins" is a prefix of "Admins EU" too: the exact name is the one taken.
    org.clear_log();
    done(
        &client,
        OktaOp::AddToGroup {
            user: "jane@example.com".into(),
            group: GroupRef::Name("Admins".into()),
        },
    )
    .await;
    assert_eq!(
        org.writes(),
        vec![w("PUT", &format!("/api/v1/groups/{ADMINS}/users/{JANE}"))]
    );
    let q = org
        .log()
        .into_iter()
        .find(|l| l.path == "/api/v1/groups")
        .expect("group search");
    assert!(q.query.contains("q=Admins"), "{q:?}");
    assert!(org.members(ADMINS).contains(&JANE.to_string()));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_effect_that_already_holds_is_done() {
    let org = org();
    let client = ssws(&org);
    // By id: Okta answers suspending a suspended user with 400 E0000001; a read shows it holds.
    let s = done(&client, OktaOp::SuspendUser { user: user(BOB) }).await;
    assert_eq!(s.status, 400, "{s}");
    assert_eq!(s.error_code.as_deref(), Some("E0000001"));
    assert!(
        s.note
            .as_deref()
            .is_some_and(|n| n.contains("already SUSPENDED")),
        "{s}"
    );
    assert_eq!(
        org.writes(),
        vec![w("POST", &format!("/api/v1/users/{BOB}/lifecycle/suspend"))]
    );
    // By login: the status read while resolving it already says so; nothing is sent.
    org.clear_log();
    let s = done(
        &client,
        OktaOp::SuspendUser {
            user: "bob@example.com".into(),
        },
    )
    .await;
    assert!(s.note.is_some(), "{s}");
    assert!(org.writes().is_empty(), "{:?}", org.writes());
    // Unsuspending an active user, adding a member, removing a non-member.
    done(&client, OktaOp::UnsuspendUser { user: user(JANE) }).await;
    done(
        &client,
        OktaOp::AddToGroup {
            user: user(BOB),
            group: GroupRef::Id(ADMINS.into()),
        },
    )
    .await;
    done(
        &client,
        OktaOp::RemoveFromGroup {
            user: user(BOB),
            group: GroupRef::Id(ADMINS_EU.into()),
        },
    )
    .await;
    assert_eq!(org.status_of(JANE).as_deref(), Some("ACTIVE"));
    assert_eq!(org.status_of(BOB).as_deref(), Some("SUSPENDED"));
    assert_eq!(org.members(ADMINS), vec![BOB.to_string()]);
}

#[tokio::test(flavor = "multi_thread")]
async fn deactivate_never_deletes() {
    let org = org();
    let client = ssws(&org);
    let s = done(&client, OktaOp::DeactivateUser { user: user(GONE) }).await;
    assert!(
        s.note
            .as_deref()
            .is_some_and(|n| n.contains("DEPROVISIONED")),
        "{s}"
    );
    done(&client, OktaOp::DeactivateUser { user: user(JANE) }).await;
    done(&client, OktaOp::DeactivateUser { user: user(JANE) }).await;
    let log = org.log();
    assert!(
        log.iter().all(|l| !(l.method == "DELETE"
            && l.path.starts_with("/api/v1/users/")
            && l.path.matches('/').count() == 4)),
        "a DELETE of a user was sent: {log:?}"
    );
    assert_eq!(
        org.writes(),
        vec![w(
            "POST",
            &format!("/api/v1/users/{JANE}/lifecycle/deactivate")
        )]
    );
    assert!(org.deleted().is_empty());
    assert_eq!(org.status_of(GONE).as_deref(), Some("DEPROVISIONED"));
    assert_eq!(org.status_of(JANE).as_deref(), Some("DEPROVISIONED"));
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_users_and_groups_fail_clearly_and_okta_refusals_say_why() {
    let org = org();
    let client = ssws(&org);
    let e = failed(
        &client,
        OktaOp::SuspendUser {
            user: "nobody@example.com".into(),
        },
    )
    .await;
    assert!(
        e.contains("Okta has no user \"nobody@example.com\"") && e.contains("E0000007"),
        "{e}"
    );
    let e = failed(
        &client,
        OktaOp::AddToGroup {
            user: user(JANE),
            group: GroupRef::Name("Nope".into()),
        },
    )
    .await;
    assert!(e.contains("no group named \"Nope\""), "{e}");
    let e = failed(
        &client,
        OktaOp::RemoveFromGroup {
            user: user(JANE),
            group: GroupRef::Id("00gmissing0000000000".into()),
        },
    )
    .await;
    assert!(e.contains("no group 00gmissing"), "{e}");
    let mut profile = serde_json::Map::new();
    profile.insert("shoeSize".into(), 42.into());
    let e = failed(
        &client,
        OktaOp::UpdateProfile {
            user: user(JANE),
            profile,
        },
    )
    .await;
    assert!(e.contains("400") && e.contains("shoeSize"), "{e}");
    // Unsuspending a deactivated user: Okta's 400 stands (the status says why).
    let e = failed(&client, OktaOp::UnsuspendUser { user: user(GONE) }).await;
    assert!(e.contains("DEPROVISIONED") && e.contains("E0000001"), "{e}");
    // A bad token: failed with what to check, and never the token.
    let bad = OktaClient::new(&org.url, Secret::new("not-the-token-123".into())).expect("client");
    let e = failed(&bad, OktaOp::SuspendUser { user: user(JANE) }).await;
    assert!(e.contains("401") && e.contains("okta.token_env"), "{e}");
    assert!(!e.contains("not-the-token-123"), "{e}");
    assert_eq!(org.status_of(JANE).as_deref(), Some("ACTIVE"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_5xx_is_retried() {
    let org = org();
    let client = ssws(&org);
    let path = format!("/api/v1/users/{JANE}/lifecycle/suspend");
    org.force_503(&path);
    let op = OktaOp::SuspendUser { user: user(JANE) };
    match client.perform(&op, "a", deadline()).await {
        OpOutcome::Retry { after: None, error } => assert!(error.contains("503"), "{error}"),
        other => panic!("{other:?}"),
    }
    done(&client, op).await;
    assert_eq!(org.writes().len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_429_waits_for_the_reset() {
    let org = org();
    let client = ssws(&org);
    let path = format!("/api/v1/users/{JANE}/lifecycle/suspend");
    org.force_429(&path, 2);
    let op = OktaOp::SuspendUser { user: user(JANE) };
    let after = match client.perform(&op, "a", deadline()).await {
        OpOutcome::Retry {
            after: Some(after),
            error,
        } => {
            assert!(
                error.contains("429") && error.contains("E0000047"),
                "{error}"
            );
            after
        }
        other => panic!("{other:?}"),
    };
    // X-Rate-Limit-Reset is whole seconds, 2 s ahead: between 1 and 2 s from now.
    assert!(
        after > Duration::from_millis(900) && after <= Duration::from_secs(2),
        "{after:?}"
    );
    // Before the reset nothing is sent: the retry is asked for again.
    let sent = org.log().len();
    assert!(matches!(
        client.perform(&op, "a", deadline()).await,
        OpOutcome::Retry { after: Some(_), .. }
    ));
    assert_eq!(org.log().len(), sent, "a request went out before the reset");
    tokio::time::sleep(after + Duration::from_millis(50)).await;
    done(&client, op).await;
    assert_eq!(org.status_of(JANE).as_deref(), Some("SUSPENDED"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_client_keeps_under_the_rate_limit() {
    let org = org();
    // 3 requests per endpoint per 2 s: 6 suspend/unsuspend pairs need 4 windows of each.
    org.set_rate_limit(3, 2);
    let client = ssws(&org);
    let started = Instant::now();
    for _ in 0..6 {
        done(&client, OktaOp::SuspendUser { user: user(JANE) }).await;
        done(&client, OktaOp::UnsuspendUser { user: user(JANE) }).await;
    }
    assert_eq!(org.rate_limited(), 0, "{:?}", org.log());
    assert_eq!(org.writes().len(), 12);
    // Each endpoint paused at its reserve at least twice (2 requests per window).
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // With a deadline before the reset, the action asks to be retried at the reset instead.
    done(&client, OktaOp::SuspendUser { user: user(JANE) }).await;
    let soon = Some(Instant::now() + Duration::from_millis(50));
    match client
        .perform(&OktaOp::UnsuspendUser { user: user(JANE) }, "a", soon)
        .await
    {
        OpOutcome::Retry {
            after: Some(_),
            error,
        }
        | OpOutcome::Retry { after: None, error } => {
            assert!(error.contains("rate limit"), "{error}")
        }
        OpOutcome::Done { .. } => {} // the window happened to reset just now
        other => panic!("{other:?}"),
    }
    assert_eq!(org.rate_limited(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_service_app_signs_in_once_for_many_operations() {
    let org = rsa_org();
    let client = service_app(&org, &fixture_key("rsa-private.pem")).expect("service app");
    for _ in 0..5 {
        done(&client, OktaOp::SuspendUser { user: user(JANE) }).await;
        done(&client, OktaOp::UnsuspendUser { user: user(JANE) }).await;
    }
    assert_eq!(org.token_requests(), 1);
    assert_eq!(client.token_requests(), 1);
    assert_eq!(org.writes().len(), 10);
    let debug = format!("{client:?}");
    assert!(
        !debug.contains("PRIVATE") && !debug.contains("eyJstandin"),
        "{debug}"
    );
    // A revoked token: one 401, a fresh token, the operation done.
    org.revoke_tokens();
    done(&client, OktaOp::SuspendUser { user: user(JANE) }).await;
    assert_eq!(org.token_requests(), 2);
    // SSWS is refused by an org that wants OAuth here: the service app is what signs in.
    assert!(matches!(
        ssws(&org)
            .perform(&OktaOp::ClearSessions { user: user(JANE) }, "a", deadline())
            .await,
        OpOutcome::Failed { .. }
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_ec_key_signs_too() {
    let org = org();
    org.use_oauth(OAuth {
        key: jsonwebtoken::DecodingKey::from_ec_pem(fixture_key("ec-public.pem").as_bytes())
            .expect("public"),
        algorithm: jsonwebtoken::Algorithm::ES256,
        expires_in: 3600,
    });
    let client = service_app(&org, &fixture_key("ec-private.pem")).expect("EC service app");
    done(&client, OktaOp::ClearSessions { user: user(JANE) }).await;
    assert_eq!(org.token_requests(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrongly_signed_or_expired_assertion_is_refused_and_reported() {
    let org = rsa_org();
    // A key that is not the one registered on the app.
    let other = service_app(&org, &fixture_key("other-rsa-private.pem")).expect("client");
    let e = failed(&other, OktaOp::SuspendUser { user: user(JANE) }).await;
    assert!(
        e.contains("invalid_client")
            && e.contains("signature is invalid")
            && e.contains("okta.private_key_env"),
        "{e}"
    );
    assert!(!e.contains("BEGIN"), "{e}");
    // The org's clock 10 minutes ahead: the client's assertion (5 minutes) is expired there.
    let org = rsa_org();
    org.set_clock_skew(600);
    let client = service_app(&org, &fixture_key("rsa-private.pem")).expect("client");
    let e = failed(&client, OktaOp::SuspendUser { user: user(JANE) }).await;
    assert!(e.contains("invalid_client") && e.contains("expired"), "{e}");
    assert_eq!(org.status_of(JANE).as_deref(), Some("ACTIVE"));
    assert!(org.writes().is_empty());
    // A key that is no key at all fails when the client is built.
    let e = service_app(
        &org,
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----",
    )
    .expect_err("bad key");
    assert!(e.to_string().contains("not a PEM private key"), "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn reads_follow_pages_and_find_groups_by_exact_name() {
    let org = org();
    org.set_page_size(2);
    for i in 0..5 {
        org.add_group(&format!("00gteam{i:013}"), &format!("Team {i}"), &[JANE]);
    }
    let client = ssws(&org);
    let groups = client
        .user_groups("jane@example.com", deadline())
        .await
        .expect("groups");
    let names: Vec<&str> = groups.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "Admins EU",
            "Team 0",
            "Team 1",
            "Team 2",
            "Team 3",
            "Team 4"
        ]
    );
    assert_eq!(groups[0].id, ADMINS_EU);
    assert_eq!(groups[0].kind.as_deref(), Some("OKTA_GROUP"));
    assert_eq!(groups[0].description.as_deref(), Some("Admins EU group"));
    let pages = org
        .log()
        .iter()
        .filter(|l| l.path.ends_with("/groups"))
        .count();
    assert_eq!(pages, 3);
    // Exact name among prefix matches, on a later page; by id; none.
    let g = client
        .get_group(&GroupRef::Name("Team 3".into()), deadline())
        .await
        .expect("read");
    assert_eq!(g.map(|g| g.id), Some(format!("00gteam{:013}", 3)));
    let g = client
        .get_group(&GroupRef::Id(ADMINS.into()), deadline())
        .await
        .expect("read");
    assert_eq!(g.map(|g| g.name), Some("Admins".to_string()));
    assert_eq!(
        client
            .get_group(&GroupRef::Name("Team".into()), deadline())
            .await
            .expect("read"),
        None
    );
    assert_eq!(
        client
            .get_group(&GroupRef::Id("00gmissing0000000000".into()), deadline())
            .await
            .expect("read"),
        None
    );
    let e = client
        .user_groups("nobody@example.com", deadline())
        .await
        .expect_err("no user");
    assert!(e.to_string().contains("no user"), "{e}");
}

/// The reads as scripts call them: `okta::user_groups` and `okta::get_group` through the
/// `LookupHost`, on a blocking thread like a run; a 503 is transient (the run is retried).
#[tokio::test(flavor = "multi_thread")]
async fn scripts_read_groups_through_the_host() {
    let org = org();
    let lookup = Lookup::new(None, Some(Arc::new(ssws(&org)))).expect("lookup");
    let host: Arc<dyn Host> = Arc::new(LookupHost(lookup));
    let dir = crate::support::temp_dir();
    let stdlib = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("stdlib");
    let script_path = dir.path().join("groups.rhai");
    std::fs::write(
        &script_path,
        "//! on: user.session.start\nimport \"okta\" as okta;\nlet names = [];\nfor g in okta::user_groups(okta::target(event, \"User\") ?? \"jane@example.com\") { names.push(g.name); }\nlog(names);\nlet a = okta::get_group(\"Admins\");\nlog(`${a.id} ${a.type}`);\nlog(okta::get_group(\"Nope\") == ());\n",
    )
    .expect("write");
    let limits = engine::script::Limits::default();
    let script = engine::script::ScriptSet::load_one(&script_path, &stdlib, &limits).expect("load");
    let event = br#"{"uuid":"u1","eventType":"user.session.start","published":"2024-01-01T00:00:00.000Z","target":[]}"#;
    let delivery = engine::script::DeliveryInfo::default();
    let run = |host: Arc<dyn Host>, script: Arc<engine::script::Script>| {
        let delivery = delivery.clone();
        let limits = limits.clone();
        tokio::task::spawn_blocking(move || {
            engine::script::run(&script, event, "u1", &delivery, &host, &limits)
        })
    };
    let out = run(host.clone(), script.clone()).await.expect("run");
    assert!(out.result.is_ok(), "{:?}", out.result);
    let lines: Vec<&str> = out.log.iter().map(|l| l.message.as_str()).collect();
    assert_eq!(
        lines,
        ["[\"Admins EU\"]", &format!("{ADMINS} OKTA_GROUP"), "true"]
    );
    // Okta down: the run fails as transient, to be retried.
    org.force_503("/api/v1/groups");
    let out = run(host.clone(), script.clone()).await.expect("run");
    let err = out.result.expect_err("transient");
    assert_eq!(err.kind, engine::script::RunErrorKind::Transient, "{err}");
    // Without [okta], the reads say what is missing.
    let bare = engine::script::NoDirectory;
    let e = bare.okta_user_groups("x", None).expect_err("no okta");
    assert!(
        matches!(e, HostError::Permanent(ref m) if m.contains("[okta]")),
        "{e}"
    );
}

/// `engine check` sends no request: with `[okta]` its dry runs read no groups and no group;
/// without `[okta]` the dry run fails saying what is missing.
#[test]
fn engine_check_dry_runs_okta_reads_offline_and_says_when_okta_is_missing() {
    let script = "//! on: user.lifecycle.deactivate\nimport \"okta\" as okta;\nlet g = okta::user_groups(okta::target(event, \"User\"));\nlog(`groups: ${g.len()} ${okta::get_group(\"Admins\") == ()}`);\n";
    let fixtures = format!("{}/tests/fixtures", crate::support::REPO);
    let check = |extra: &str| {
        let (dir, _) = crate::support::engine_setup(extra, &[("leaver.rhai", script)]);
        let o = crate::support::engine_bin()
            .current_dir(dir.path())
            .env("ENGINE_TEST_OKTA_TOKEN", "tok-never-used-123")
            .args(["check", "--samples", &fixtures])
            .output()
            .expect("engine runs");
        (o.status.code(), crate::support::stdout(&o))
    };
    // An org URL nothing listens on: a request would fail the dry run.
    let (code, out) = check(
        "\n[okta]\norg_url = \"http://127.0.0.1:9\"\ntoken_env = \"ENGINE_TEST_OKTA_TOKEN\"\n",
    );
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("groups: 0 true"), "{out}");
    let (code, out) = check("");
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("okta::user_groups") && out.contains("add [okta]"),
        "{out}"
    );
}

/// A service app's key is checked when the engine starts: a missing variable and a value that is
/// no key are usage errors naming the key, and the value is never printed.
#[test]
fn a_bad_service_app_key_is_a_clear_start_error() {
    let okta = "\n[okta]\norg_url = \"http://127.0.0.1:9\"\nclient_id = \"0oa1standinclient000\"\nprivate_key_env = \"ENGINE_TEST_OKTA_KEY\"\nscopes = [\"okta.users.manage\"]\n";
    let (dir, _) = crate::support::engine_setup(okta, &[("s.rhai", "//! on: *\nlog(1);\n")]);
    let payload = format!(
        "{}/tests/fixtures/event.user.lifecycle.deactivate.json",
        crate::support::REPO
    );
    let run = |key: Option<&str>| {
        let mut c = crate::support::engine_bin();
        c.current_dir(dir.path())
            .args(["run", "scripts/s.rhai", &payload]);
        match key {
            Some(k) => c.env("ENGINE_TEST_OKTA_KEY", k),
            None => c.env_remove("ENGINE_TEST_OKTA_KEY"),
        };
        let o = c.output().expect("engine runs");
        (
            o.status.code(),
            format!(
                "{}{}",
                crate::support::stdout(&o),
                crate::support::stderr(&o)
            ),
        )
    };
    let (code, out) = run(None);
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("ENGINE_TEST_OKTA_KEY") && out.contains("okta.private_key_env"),
        "{out}"
    );
    let garbage = "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1tYXRlcmlhbC1oZXJl\n-----END PRIVATE KEY-----\n";
    let (code, out) = run(Some(garbage));
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("not a PEM private key"), "{out}");
    assert!(!out.contains("c2VjcmV0LWtleS1tYXRlcmlhbC1oZXJl"), "{out}");
    // The real key: the run goes ahead (no request is made before one is needed).
    let (code, out) = run(Some(&fixture_key("rsa-private.pem")));
    assert_eq!(code, Some(0), "{out}");
}

/// A token is used until shortly before it expires (here: 2 s tokens, renewed after 1 s), and
/// operations that start together on an empty cache wait for one token request.
#[tokio::test(flavor = "multi_thread")]
async fn the_token_is_renewed_before_it_expires_and_fetched_once_by_concurrent_callers() {
    let org = org();
    org.use_oauth(OAuth {
        key: jsonwebtoken::DecodingKey::from_rsa_pem(fixture_key("rsa-public.pem").as_bytes())
            .expect("public key"),
        algorithm: jsonwebtoken::Algorithm::RS256,
        expires_in: 2,
    });
    let client = Arc::new(service_app(&org, &fixture_key("rsa-private.pem")).expect("client"));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            client
                .perform(
                    &OktaOp::ClearSessions { user: JANE.into() },
                    "a",
                    deadline(),
                )
                .await
        }));
    }
    for t in tasks {
        assert!(matches!(t.await.expect("task"), OpOutcome::Done { .. }));
    }
    assert_eq!(org.token_requests(), 1);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    done(&client, OktaOp::ClearSessions { user: user(JANE) }).await;
    assert_eq!(org.token_requests(), 2, "renewed before expiry");
    // No request ever went out with an expired token.
    assert!(org.log().iter().all(|l| l.status != 401), "{:?}", org.log());
}

/// The `okta::` action functions check their arguments at the call (a run error at that line);
/// a well-formed call records an `okta` action (carried out after the run) and returns its id,
/// derived from the event, the script and `okta#<position>` (never the content).
#[test]
fn okta_actions_check_their_arguments_and_record_an_action_with_a_stable_id() {
    let dir = crate::support::temp_dir();
    let stdlib = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("stdlib");
    let limits = engine::script::Limits::default();
    let event = br#"{"uuid":"u1","eventType":"user.account.lock","published":"2024-01-01T00:00:00.000Z","target":[{"type":"AppInstance","id":"0oa1"}]}"#;
    let host: Arc<dyn Host> = Arc::new(engine::script::NoDirectory);
    let run = |body: &str| {
        let p = dir.path().join("a.rhai");
        std::fs::write(&p, format!("//! on: *\nimport \"okta\" as okta;\n{body}\n"))
            .expect("write");
        let script = engine::script::ScriptSet::load_one(&p, &stdlib, &limits).expect("load");
        engine::script::run(
            &script,
            event,
            "u1",
            &engine::script::DeliveryInfo::default(),
            &host,
            &limits,
        )
    };
    let failed = |body: &str| {
        let out = run(body);
        let err = out.result.expect_err("fails");
        assert!(out.actions.is_empty());
        err
    };
    let e = failed("okta::suspend_user(okta::target(event, \"User\"));");
    assert_eq!(e.line, Some(3), "{e}");
    assert!(
        e.message.contains("okta::suspend_user: the user is ()"),
        "{e}"
    );
    let e = failed(
        "let x = 1;\nokta::add_to_group(\"jane@example.com\", okta::target(event, \"AppInstance\"));",
    );
    assert_eq!(e.line, Some(4), "{e}");
    assert!(e.message.contains("not \"UserGroup\""), "{e}");
    let e = failed("okta::update_profile(\"jane@example.com\", #{});");
    assert!(e.message.contains("profile map is empty"), "{e}");

    let out = run(
        "let a = okta::suspend_user(\"jane@example.com\");\nlet b = okta::add_to_group(\"jane@example.com\", \"Admins\");\nlog(a); log(b);",
    );
    assert!(out.result.is_ok(), "{:?}", out.result);
    assert_eq!(out.actions.len(), 2);
    let ids: Vec<&str> = out.actions.iter().map(|a| a.id()).collect();
    assert_eq!(ids[0], engine::script::action_id("u1", "a", "okta#0"));
    assert_eq!(ids[1], engine::script::action_id("u1", "a", "okta#1"));
    assert_eq!(out.log[0].message, ids[0], "the function returns the id");
    assert_eq!(
        out.actions[1].describe(),
        "okta::add_to_group jane@example.com group \"Admins\""
    );
    // A changed argument keeps the id: it names the action, not its content.
    let again = run("okta::suspend_user(\"bob@example.com\");");
    assert_eq!(again.actions[0].id(), ids[0]);
}

const LOCKOUT_SCRIPT: &str = r#"//! on: user.account.lock
import "okta" as okta;
let who = okta::target(event, "User");
okta::suspend_user(who);
okta::clear_sessions(who.alternateId);
okta::add_to_group(who, "Admins");
"#;

/// A lock event for `user_id`/`login` as Okta sends it (the user is the `User` target).
fn lock_event(uuid: &str, user_id: &str, login: &str) -> String {
    let event = serde_json::json!({
        "uuid": uuid,
        "eventType": "user.account.lock",
        "published": "2026-12-03T06:00:00.000Z",
        "displayMessage": "Max sign in attempts exceeded",
        "actor": {"id": user_id, "type": "User", "alternateId": login, "displayName": "Jane"},
        "target": [{"id": user_id, "type": "User", "alternateId": login, "displayName": "Jane"}],
        "outcome": {"result": "SUCCESS"}
    });
    crate::support::wrap(&event.to_string())
}

fn okta_toml(org: &OktaOrg) -> String {
    format!(
        "\n[okta]\norg_url = \"{}\"\ntoken_env = \"OKTA_API_TOKEN\"\n",
        org.url
    )
}

fn okta_env() -> [(&'static str, &'static str); 2] {
    [
        ("ENGINE_TEST_SECRET", crate::support::SECRET),
        ("OKTA_API_TOKEN", ORG_TOKEN),
    ]
}

/// The `okta` actions of `dir`'s queue: (id, status, answer or error).
fn okta_actions(dir: &std::path::Path) -> Vec<serde_json::Value> {
    let o = crate::support::run_engine(
        dir,
        &[
            "actions", "--kind", "okta", "--format", "json", "--limit", "1000",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", crate::support::stderr(&o));
    serde_json::from_slice(&o.stdout).expect("actions JSON")
}

fn all_done(actions: &[serde_json::Value], n: usize) -> bool {
    actions.len() == n && actions.iter().all(|a| a["status"] == "done")
}

/// End to end: a delivered lock event's run records three `okta` actions; after it succeeds
/// the queue carries each out once against the org (with its id as `Idempotency-Key`), a login
/// resolved to the user's id and a group name to its group; `engine replay` after editing the
/// script repeats nothing; a run that fails after calling an action carries out nothing.
#[test]
fn a_runs_okta_actions_are_carried_out_once_after_it_succeeds() {
    use crate::support::{ServeProcess, engine_setup, post_blocking, run_engine, wait_until};
    let org = org();
    let failing = "//! on: user.lifecycle.deactivate\nimport \"okta\" as okta;\nokta::suspend_user(\"jane@example.com\");\nthrow \"changed my mind\";\n";
    let (dir, port) = engine_setup(
        &okta_toml(&org),
        &[("lockout.rhai", LOCKOUT_SCRIPT), ("fails.rhai", failing)],
    );
    let p = ServeProcess::start(dir.path(), port, &okta_env());
    let hook = format!("{}/hooks/test", p.url);
    assert_eq!(
        post_blocking(&hook, lock_event("lock-1", JANE, "jane@example.com")),
        200
    );
    assert!(
        wait_until(Duration::from_secs(20), || all_done(
            &okta_actions(dir.path()),
            3
        )),
        "{:?}\n{}",
        okta_actions(dir.path()),
        p.log()
    );
    let actions = okta_actions(dir.path());
    assert_eq!(
        org.writes(),
        vec![
            w("POST", &format!("/api/v1/users/{JANE}/lifecycle/suspend")),
            w("DELETE", &format!("/api/v1/users/{JANE}/sessions")),
            w("PUT", &format!("/api/v1/groups/{ADMINS}/users/{JANE}")),
        ],
        "each operation once, in order"
    );
    assert_eq!(org.status_of(JANE).as_deref(), Some("SUSPENDED"));
    assert!(org.members(ADMINS).contains(&JANE.to_string()));
    // Each write carried its action's id.
    let mut keys: Vec<String> = org
        .log()
        .into_iter()
        .filter(|l| l.method != "GET")
        .filter_map(|l| l.idempotency_key)
        .collect();
    let mut ids: Vec<String> = actions
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_string())
        .collect();
    keys.sort();
    ids.sort();
    assert_eq!(keys, ids);
    for a in &actions {
        let answer = a["answer"].as_str().unwrap_or_default();
        assert!(answer.contains("okta::"), "{a}");
        assert!(!answer.contains(ORG_TOKEN), "{a}");
    }
    let table = run_engine(dir.path(), &["actions", "--kind", "okta"]);
    let text = crate::support::stdout(&table);
    assert!(
        text.contains("okta::suspend_user") && text.contains("done"),
        "{text}"
    );

    // Replay after an edit: the same ids, already done, so Okta hears nothing new.
    let edited = LOCKOUT_SCRIPT.replace(
        "okta::suspend_user(who);",
        "log(\"edited\");\nokta::suspend_user(who);",
    );
    std::fs::write(dir.path().join("scripts/lockout.rhai"), edited).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let o = run_engine(dir.path(), &["replay", "lock-1"]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}{}",
        crate::support::stdout(&o),
        crate::support::stderr(&o)
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(org.writes().len(), 3, "{:?}", org.writes());
    assert_eq!(okta_actions(dir.path()).len(), 3);

    // A failed run carries out nothing.
    let deact = serde_json::json!({
        "uuid": "deact-1", "eventType": "user.lifecycle.deactivate",
        "published": "2026-12-03T06:00:00.000Z",
        "target": [{"id": BOB, "type": "User", "alternateId": "bob@example.com"}]
    });
    assert_eq!(
        post_blocking(&hook, crate::support::wrap(&deact.to_string())),
        200
    );
    assert!(wait_until(Duration::from_secs(10), || {
        let o = run_engine(dir.path(), &["runs", "--failed", "--format", "json"]);
        String::from_utf8_lossy(&o.stdout).contains("changed my mind")
    }));
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(org.writes().len(), 3, "{:?}", org.writes());
    assert_eq!(okta_actions(dir.path()).len(), 3);
}

/// Without `[okta]` the runs still succeed and their `okta` actions are skipped, saying why
/// (what `engine check` reports ahead of time); the mail of the same run is sent.
#[test]
fn without_okta_configured_okta_actions_are_skipped_saying_why() {
    use crate::support::{ServeProcess, engine_setup, post_blocking, wait_until};
    let script = format!(
        "{LOCKOUT_SCRIPT}send_email(#{{ to: \"sec@example.com\", subject: \"locked\", body: \"x\" }});\n"
    );
    let (dir, port) = engine_setup("", &[("lockout.rhai", &script)]);
    let p = ServeProcess::start(dir.path(), port, &okta_env());
    let hook = format!("{}/hooks/test", p.url);
    assert_eq!(
        post_blocking(&hook, lock_event("lock-2", JANE, "jane@example.com")),
        200
    );
    assert!(
        wait_until(Duration::from_secs(20), || {
            let a = okta_actions(dir.path());
            a.len() == 3 && a.iter().all(|a| a["status"] == "skipped")
        }),
        "{:?}\n{}",
        okta_actions(dir.path()),
        p.log()
    );
    for a in okta_actions(dir.path()) {
        assert!(
            a["last_error"]
                .as_str()
                .unwrap_or_default()
                .contains("[okta]"),
            "{a}"
        );
    }
    assert!(wait_until(Duration::from_secs(10), || {
        crate::support::history_json(dir.path(), "outbox")
            .iter()
            .any(|m| m["status"] == "sent")
    }));
}

/// A 429 from Okta puts the action back until the reset it announced, then it is done, once.
#[test]
fn a_rate_limited_okta_action_is_retried_at_the_reset() {
    use crate::support::{ServeProcess, engine_setup, post_blocking, wait_until};
    let org = org();
    let script = "//! on: user.account.lock\nimport \"okta\" as okta;\nokta::suspend_user(okta::target(event, \"User\"));\n";
    let (dir, port) = engine_setup(&okta_toml(&org), &[("s.rhai", script)]);
    org.force_429(&format!("/api/v1/users/{JANE}/lifecycle/suspend"), 2);
    let p = ServeProcess::start(dir.path(), port, &okta_env());
    let started = Instant::now();
    assert_eq!(
        post_blocking(
            &format!("{}/hooks/test", p.url),
            lock_event("lock-3", JANE, "jane@example.com")
        ),
        200
    );
    assert!(
        wait_until(Duration::from_secs(30), || all_done(
            &okta_actions(dir.path()),
            1
        )),
        "{:?}\n{}",
        okta_actions(dir.path()),
        p.log()
    );
    let a = &okta_actions(dir.path())[0];
    assert!(a["attempts"].as_u64().unwrap_or(0) >= 1, "{a}");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "not before the reset"
    );
    assert_eq!(org.status_of(JANE).as_deref(), Some("SUSPENDED"));
    let suspends = org
        .log()
        .iter()
        .filter(|l| l.path.ends_with("/lifecycle/suspend") && l.status == 200)
        .count();
    assert_eq!(suspends, 1);
}

/// SIGKILL while `okta` actions are being carried out, then a restart: every action of every
/// succeeded run ends done, and none is done twice with success. An operation Okta made just
/// before the kill (its answer still on the way) is tried again after the restart, finds its
/// effect already there and is done without a second change.
#[test]
fn a_kill_while_okta_actions_run_loses_none_and_repeats_none() {
    use crate::support::{ServeProcess, engine_setup, post_blocking, wait_until};
    let org = org();
    let n = 40;
    let users: Vec<String> = (0..n).map(|i| format!("00ucrash{i:012}")).collect();
    for (i, id) in users.iter().enumerate() {
        org.add_user(id, &format!("user{i}@example.com"), "ACTIVE");
    }
    // Each change is made at once and answered 100 ms later: the kill lands in between.
    org.set_write_delay(100);
    let script = "//! on: user.account.lock\nimport \"okta\" as okta;\nokta::suspend_user(okta::target(event, \"User\"));\n";
    let (dir, port) = engine_setup(&okta_toml(&org), &[("s.rhai", script)]);
    let p = ServeProcess::start(dir.path(), port, &okta_env());
    let hook = format!("{}/hooks/test", p.url);
    for (i, id) in users.iter().enumerate() {
        let body = lock_event(&format!("crash-{i}"), id, &format!("user{i}@example.com"));
        assert_eq!(post_blocking(&hook, body), 200);
    }
    assert!(
        wait_until(Duration::from_secs(20), || org.writes().len() >= 8),
        "{}",
        p.log()
    );
    p.signal(libc::SIGKILL);
    drop(p);
    let before = org.writes().len();
    assert!(before < n, "the kill came before the end ({before})");

    let p = ServeProcess::start(dir.path(), port, &okta_env());
    assert!(
        wait_until(Duration::from_secs(30), || all_done(
            &okta_actions(dir.path()),
            n
        )),
        "{:?}\n{}",
        okta_actions(dir.path())
            .iter()
            .filter(|a| a["status"] != "done")
            .collect::<Vec<_>>(),
        p.log()
    );
    for id in &users {
        assert_eq!(org.status_of(id).as_deref(), Some("SUSPENDED"), "{id}");
    }
    let mut ok_by_key: std::collections::HashMap<String, usize> = Default::default();
    let mut tries = 0;
    for l in org.log() {
        if l.path.ends_with("/lifecycle/suspend") {
            tries += 1;
            if l.status == 200 {
                *ok_by_key
                    .entry(l.idempotency_key.unwrap_or_default())
                    .or_default() += 1;
            }
        }
    }
    assert_eq!(ok_by_key.len(), n, "each action made its change");
    assert!(
        ok_by_key.values().all(|&c| c == 1),
        "no change made twice: {ok_by_key:?}"
    );
    assert!(
        tries <= n + engine::actions::okta::MAX_CONCURRENT_OKTA,
        "only the operations in flight at the kill were tried again ({tries})"
    );
}
