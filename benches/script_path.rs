//! Per-event cost of the script path (payload bytes → event map → script → recorded actions) for
//! the example scripts on the real samples, against the same logic as a Rust closure.
//!
//! Run: `cargo bench --bench script_path` (release). Prints median and p99 µs/event and the ratio.

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use engine::script::{
    Action, DeliveryInfo, Email, Host, Limits, ScriptSet, Senders, StaticDirectory, User, run,
};

/// Timed iterations per case (after `WARMUP`): enough for a stable p99.
const ITERATIONS: usize = 5_000;
/// Untimed iterations first, to fill caches and the allocator.
const WARMUP: usize = 500;

fn repo() -> PathBuf {
    std::env::var_os("ENGINE_REPO")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

fn users() -> Vec<User> {
    vec![
        User {
            id: "00u3m90rxKjGQ0G6L1d6".into(),
            login: Some("john.doe@example.com".into()),
            email: Some("john.doe@example.com".into()),
            first_name: Some("John".into()),
            last_name: Some("Doe".into()),
            display_name: Some("John Doe".into()),
            manager_id: Some("00u0mgr".into()),
            department: Some("Sales".into()),
            title: Some("Account Executive".into()),
            ..User::default()
        },
        User {
            id: "00u0mgr".into(),
            login: Some("mary.manager@example.com".into()),
            email: Some("mary.manager@example.com".into()),
            first_name: Some("Mary".into()),
            last_name: Some("Manager".into()),
            ..User::default()
        },
    ]
}

/// The offboarding example, hand-written in Rust: what the script costs is compared to this.
fn offboarding_in_rust(payload: &[u8], host: &dyn Host) -> Vec<Action> {
    let v: serde_json::Value = match serde_json::from_slice(payload) {
        Ok(v) => v,
        Err(_) => return Vec::new(),
    };
    let Some(target) = v["target"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["type"] == "User"))
    else {
        return Vec::new();
    };
    let name = target["displayName"].as_str().unwrap_or("");
    let alt = target["alternateId"].as_str().unwrap_or("");
    let who = format!("{name} <{alt}>");
    let user = host
        .lookup_user(target["id"].as_str().unwrap_or(""), None)
        .ok()
        .flatten();
    let manager = user
        .as_ref()
        .and_then(|u| u.manager_id.as_deref())
        .and_then(|m| host.lookup_user(m, None).ok().flatten());
    let actor = v["actor"]["displayName"]
        .as_str()
        .unwrap_or("unknown actor");
    let mut body = format!(
        "{who} was deactivated in Okta by {actor} at {}.\n",
        v["published"].as_str().unwrap_or("")
    );
    if let Some(u) = &user {
        body += &format!(
            "Department: {}\nTitle:      {}\n",
            u.department.as_deref().unwrap_or("unknown"),
            u.title.as_deref().unwrap_or("unknown")
        );
    }
    let mname = manager.as_ref().map(|m| {
        format!(
            "{} {}",
            m.first_name.as_deref().unwrap_or(""),
            m.last_name.as_deref().unwrap_or("")
        )
    });
    if let Some(m) = &mname {
        body += &format!("Manager:    {m}\n");
    }
    body += "\nOffboarding checklist:\n[ ] Collect laptop, badge and other equipment\n[ ] Revoke VPN certificates and SSH keys\n[ ] Transfer mailbox and shared-drive ownership";
    if let Some(m) = &mname {
        body += &format!(" to {m}");
    }
    body += "\n[ ] Remove from accounts that are not managed by Okta (list in the IT wiki)\n[ ] Rotate shared credentials the user knew\n[ ] Archive or reassign open tickets\n\n";
    body += &format!("Okta event id: {}", v["uuid"].as_str().unwrap_or(""));
    let mut email = Email {
        id: String::new(),
        position: 0,
        to: vec!["it-team@example.com".into()],
        cc: manager.and_then(|m| m.email).into_iter().collect(),
        bcc: Vec::new(),
        reply_to: None,
        subject: format!("Offboarding: {who}"),
        body,
        html: None,
        key: None,
        from: None,
    };
    email.id = engine::script::action_id(
        v["uuid"].as_str().unwrap_or(""),
        "offboarding-checklist",
        &engine::script::default_key(engine::script::ActionKind::Email, 0),
    );
    vec![Action::Email(email)]
}

/// The privileged-group example in Rust.
fn privileged_in_rust(payload: &[u8], _host: &dyn Host) -> Vec<Action> {
    const PRIVILEGED: &[&str] = &[
        "super admins",
        "okta administrators",
        "domain admins",
        "aws production admins",
        "finance approvers",
    ];
    let v: serde_json::Value = match serde_json::from_slice(payload) {
        Ok(v) => v,
        Err(_) => return Vec::new(),
    };
    let groups: Vec<&serde_json::Value> = v["target"]
        .as_array()
        .map(|t| t.iter().filter(|t| t["type"] == "UserGroup").collect())
        .unwrap_or_default();
    let hits: Vec<&str> = groups
        .iter()
        .filter_map(|g| g["displayName"].as_str())
        .filter(|n| PRIVILEGED.contains(&n.to_lowercase().as_str()))
        .collect();
    let mut log = Vec::new();
    if hits.is_empty() {
        log.push(format!(
            "group {} is not privileged; no alert",
            groups
                .first()
                .map(|g| g["displayName"].as_str().unwrap_or(""))
                .unwrap_or("")
        ));
        black_box(&log);
        return Vec::new();
    }
    let member = v["target"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["type"] == "User"));
    let member = member
        .map(|m| {
            format!(
                "{} <{}>",
                m["displayName"].as_str().unwrap_or(""),
                m["alternateId"].as_str().unwrap_or("")
            )
        })
        .unwrap_or_else(|| "(unknown)".into());
    let mut email = Email {
        id: String::new(),
        position: 0,
        to: vec!["security@example.com".into()],
        cc: Vec::new(),
        bcc: Vec::new(),
        reply_to: v["actor"]["alternateId"].as_str().map(String::from),
        subject: format!("Privileged group change: {member} added to {}", hits[0]),
        body: format!(
            "{member} was added to {hits:?} by {}.",
            v["actor"]["displayName"].as_str().unwrap_or("")
        ),
        html: None,
        key: None,
        from: None,
    };
    email.id = engine::script::action_id(
        v["uuid"].as_str().unwrap_or(""),
        "privileged-group-alert",
        &engine::script::default_key(engine::script::ActionKind::Email, 0),
    );
    vec![Action::Email(email)]
}

fn stats(mut ns: Vec<u128>) -> (f64, f64) {
    ns.sort_unstable();
    let median = ns[ns.len() / 2] as f64 / 1000.0;
    let p99 = ns[ns.len() * 99 / 100] as f64 / 1000.0;
    (median, p99)
}

fn time(mut f: impl FnMut() -> usize) -> (f64, f64) {
    for _ in 0..WARMUP {
        black_box(f());
    }
    let mut ns = Vec::with_capacity(ITERATIONS);
    for _ in 0..ITERATIONS {
        let t = Instant::now();
        black_box(f());
        ns.push(t.elapsed().as_nanos());
    }
    stats(ns)
}

fn patched(path: &str, patch: &str) -> Vec<u8> {
    let mut v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(path).expect("sample")).expect("json");
    let p: serde_json::Value = serde_json::from_str(patch).expect("patch");
    if let (Some(o), Some(p)) = (v.as_object_mut(), p.as_object()) {
        o.extend(p.clone());
    }
    serde_json::to_vec(&v).expect("json")
}

type RustFn = fn(&[u8], &dyn Host) -> Vec<Action>;

fn main() {
    let root = repo();
    let fixtures = root.join("tests/fixtures");
    let limits = Limits::default();
    let senders = Senders::default();
    let (set, errors) = ScriptSet::load(&root.join("scripts"), &root.join("stdlib"), &limits);
    assert!(errors.is_empty(), "{errors:?}");
    let host: Arc<dyn Host> = Arc::new(StaticDirectory::new(users()));
    let delivery = DeliveryInfo {
        id: "d".into(),
        time: "t".into(),
        hook: "default".into(),
        source: "s".into(),
    };

    let deactivate = fixtures.join("event.user.lifecycle.deactivate.json");
    let group = fixtures.join("event.group.user_membership.add.json");
    let read = |p: &PathBuf| std::fs::read(p).expect("sample");
    let privileged_patch = r#"{"target": [{"alternateId": "unknown", "detailEntry": null, "displayName": "Super Admins", "id": "00g1", "type": "UserGroup"}, {"alternateId": "test@this.com", "detailEntry": null, "displayName": "test this", "id": "00ued6gq9jItNhAsN0h7", "type": "User"}]}"#;
    let d = deactivate.to_string_lossy().into_owned();
    let g = group.to_string_lossy().into_owned();
    let cases: Vec<(&str, &str, Vec<u8>, Option<RustFn>)> = vec![
        (
            "offboarding-checklist",
            "deactivate (real)",
            read(&deactivate),
            Some(offboarding_in_rust),
        ),
        (
            "privileged-group-alert",
            "membership.add (real)",
            read(&group),
            Some(privileged_in_rust),
        ),
        (
            "privileged-group-alert",
            "membership.add, privileged",
            patched(&g, privileged_patch),
            Some(privileged_in_rust),
        ),
        (
            "new-hire-manager",
            "deactivate as create",
            patched(&d, r#"{"eventType":"user.lifecycle.create"}"#),
            None,
        ),
        (
            "lockout-alert",
            "deactivate as lock",
            patched(&d, r#"{"eventType":"user.account.lock"}"#),
            None,
        ),
    ];

    println!(
        "{:<24} {:<28} {:>6} {:>9} {:>9} {:>9} {:>9} {:>7}",
        "script", "sample", "bytes", "rhai med", "rhai p99", "rust med", "rust p99", "ratio"
    );
    // `SCRIPT_PATH_ONLY=<text>`: only the cases whose script or sample contains it (profiling).
    let only = std::env::var("SCRIPT_PATH_ONLY").ok();
    let mut all_medians = Vec::new();
    let mut prebuilt = Vec::new();
    for (name, label, payload, rust) in &cases {
        if only
            .as_deref()
            .is_some_and(|o| !name.contains(o) && !label.contains(o))
        {
            continue;
        }
        let script = set.get(name).expect("script").clone();
        let id = engine::ingest::envelope::event_id(payload);
        let check = run(&script, payload, &id, &delivery, &host, &limits, &senders);
        assert!(check.result.is_ok(), "{name}: {:?}", check.result);
        let (med, p99) = time(|| {
            run(&script, payload, &id, &delivery, &host, &limits, &senders)
                .actions
                .len()
        });
        all_medians.push(med);
        // The same run with the event map built once and cloned (several scripts, one event).
        let map = engine::script::build_event_map(payload).expect("event");
        let (pre_med, _) = time(|| {
            engine::script::run_map(
                &script,
                map.clone(),
                &id,
                &delivery,
                &host,
                &limits,
                &senders,
            )
            .actions
            .len()
        });
        prebuilt.push((name, label, pre_med));
        match rust {
            Some(f) => {
                assert_eq!(
                    f(payload, host.as_ref()).len(),
                    check.actions.len(),
                    "{name}: rust and rhai disagree"
                );
                let (rmed, rp99) = time(|| f(payload, host.as_ref()).len());
                println!(
                    "{name:<24} {label:<28} {:>6} {med:>9.1} {p99:>9.1} {rmed:>9.1} {rp99:>9.1} {:>6.1}x",
                    payload.len(),
                    med / rmed
                );
            }
            None => println!(
                "{name:<24} {label:<28} {:>6} {med:>9.1} {p99:>9.1} {:>9} {:>9} {:>7}",
                payload.len(),
                "-",
                "-",
                "-"
            ),
        }
    }
    for (name, label, med) in &prebuilt {
        println!(
            "{name:<24} {label:<28} with the event map built once per event: {med:.1} µs median per script"
        );
    }
    let worst = all_medians.iter().cloned().fold(0.0, f64::max);
    if only.as_deref().is_some_and(|o| o != "breakdown") {
        println!("worst median: {worst:.1} µs/event (filtered by SCRIPT_PATH_ONLY)");
        return;
    }
    // Where the time goes, on the real deactivate sample.
    let payload = read(&deactivate);
    let (parse, _) = time(|| {
        engine::script::build_event_map(&payload)
            .map(|m| m.len())
            .unwrap_or(0)
    });
    let map = engine::script::build_event_map(&payload).expect("event");
    let (copy, _) = time(|| black_box(map.clone()).len());
    let (json_value, _) = time(|| {
        serde_json::from_slice::<serde_json::Value>(&payload)
            .map(|v| v.is_object() as usize)
            .unwrap_or(0)
    });
    let payload_id = engine::ingest::envelope::event_id(&payload);
    let empty_dir = std::env::temp_dir().join(format!("engine-bench-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&empty_dir);
    let empty_path = empty_dir.join("empty.rhai");
    std::fs::write(&empty_path, "//! on: *\nimport \"okta\" as okta;\n").expect("write");
    let empty = ScriptSet::load_one(&empty_path, &root.join("stdlib"), &limits).expect("empty");
    let (empty_run, _) = time(|| {
        run(
            &empty,
            &payload,
            &payload_id,
            &delivery,
            &host,
            &limits,
            &senders,
        )
        .actions
        .len()
    });
    std::fs::write(
        &empty_path,
        "//! on: *\nimport \"okta\" as okta;\nlet t = okta::target_user(event);\n",
    )
    .expect("write");
    let one_call =
        ScriptSet::load_one(&empty_path, &root.join("stdlib"), &limits).expect("one call");
    let (one_call_run, _) = time(|| {
        run(
            &one_call,
            &payload,
            &payload_id,
            &delivery,
            &host,
            &limits,
            &senders,
        )
        .actions
        .len()
    });
    let _ = std::fs::remove_dir_all(&empty_dir);
    println!(
        "breakdown (deactivate sample, medians µs): bytes→event map {parse:.1} (serde_json::Value alone {json_value:.1}); event map clone {copy:.1}; whole run of an empty script {empty_run:.1}; of one okta::target_user call {one_call_run:.1}"
    );

    println!("worst median: {worst:.1} µs/event (target ≤ 30 µs, ≤ 20x the Rust closure)");
}
