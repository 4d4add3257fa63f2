//! `lookup_user` sources: the directory file (CSV, JSON, reload) and the Okta Users API against
//! a local stand-in that answers like Okta, plus the cache in front of it.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use engine::config::Secret;
use engine::lookup::{Directory, Lookup, LookupError, OktaClient};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};

pub const TOKEN: &str = "00aBcD-test-token-xyz";

/// A stand-in for `GET /api/v1/users/{key}` on 127.0.0.1:<free port>. Counts requests per path
/// and remembers when each came and which `X-Rate-Limit-Reset` each 429 announced.
///
/// Besides the users below, `limited@example.com` is always rate limited (429, reset 2 s
/// ahead), `hang@example.com` is never answered, `echo@example.com` gets a 401 whose body echoes
/// the `Authorization` header (as some proxies do; Okta does not), and
/// `hooksecret@example.com` is a user whose title is the hook secret (a far side echoing it).
pub struct FakeOkta {
    pub url: String,
    hits: Arc<Mutex<HashMap<String, u32>>>,
    /// Per path: (ms since the epoch the request came, the reset a 429 announced (epoch s)).
    seen: Seen,
}

type Seen = Arc<Mutex<HashMap<String, Vec<(u64, Option<u64>)>>>>;

/// How far ahead the always-limited user's `X-Rate-Limit-Reset` is.
pub const LIMITED_RESET_AHEAD_S: u64 = 2;

impl FakeOkta {
    pub async fn start() -> FakeOkta {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let hits: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
        let seen: Seen = Arc::default();
        let counter = Arc::clone(&hits);
        let times = Arc::clone(&seen);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let counter = Arc::clone(&counter);
                let times = Arc::clone(&times);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let counter = Arc::clone(&counter);
                        let times = Arc::clone(&times);
                        async move {
                            if req.uri().path() == "/api/v1/users/hang%40example.com" {
                                count(&counter, req.uri().path());
                                // An Okta that never answers.
                                std::future::pending::<()>().await;
                            }
                            let path = req.uri().path().to_string();
                            let r = answer(req, &counter);
                            let reset = r
                                .headers()
                                .get("x-rate-limit-reset")
                                .and_then(|v| v.to_str().ok())
                                .and_then(|v| v.parse::<u64>().ok());
                            times
                                .lock()
                                .expect("lock")
                                .entry(path)
                                .or_default()
                                .push((now_ms(), reset));
                            Ok::<_, Infallible>(r)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        FakeOkta { url, hits, seen }
    }

    /// The requests for `path` answered so far: (ms since the epoch, the reset a 429 announced).
    pub fn seen(&self, path: &str) -> Vec<(u64, Option<u64>)> {
        self.seen
            .lock()
            .expect("lock")
            .get(path)
            .cloned()
            .unwrap_or_default()
    }

    pub fn hits(&self, path: &str) -> u32 {
        self.hits
            .lock()
            .expect("lock")
            .get(path)
            .copied()
            .unwrap_or(0)
    }

    fn total(&self) -> u32 {
        self.hits.lock().expect("lock").values().sum()
    }

    fn client(&self) -> OktaClient {
        OktaClient::new(&self.url, Secret::new(TOKEN.into())).expect("client")
    }
}

fn json(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("response")
}

fn okta_user(id: &str, login: &str) -> serde_json::Value {
    serde_json::json!({
        "id": id,
        "status": "ACTIVE",
        "created": "2024-01-02T03:04:05.000Z",
        "profile": {
            "login": login, "email": login, "firstName": "Jane", "lastName": "Doe",
            "displayName": "Jane Doe", "managerId": "00umgr", "manager": "boss@example.com",
            "department": "Finance", "title": "Analyst", "costCenter": "CC-42"
        },
        "_links": {}
    })
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64
}

fn count(counter: &Mutex<HashMap<String, u32>>, path: &str) -> u32 {
    let mut hits = counter.lock().expect("lock");
    let n = hits.entry(path.to_string()).or_insert(0);
    *n += 1;
    *n
}

fn answer(req: Request<Incoming>, counter: &Mutex<HashMap<String, u32>>) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    let n = count(counter, &path);
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok());
    if path == "/api/v1/users/echo%40example.com" {
        // A far side that echoes the credential it was sent in its error text.
        let shown = auth.unwrap_or_default();
        return json(
            StatusCode::UNAUTHORIZED,
            serde_json::json!({
                "errorCode": "E0000011",
                "errorSummary": format!("Invalid token provided: {shown}"),
                "errorCauses": [{"errorSummary": format!("Authorization: {shown}")}]
            }),
        );
    }
    if auth != Some(&format!("SSWS {TOKEN}")) {
        return json(
            StatusCode::UNAUTHORIZED,
            serde_json::json!({
                "errorCode": "E0000011", "errorSummary": "Invalid token provided", "errorCauses": []
            }),
        );
    }
    assert_eq!(
        req.headers().get("accept").and_then(|v| v.to_str().ok()),
        Some("application/json")
    );
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    match path.as_str() {
        "/api/v1/users/jane%40example.com" | "/api/v1/users/00u1jane" => {
            json(StatusCode::OK, okta_user("00u1jane", "jane@example.com"))
        }
        "/api/v1/users/busy%40example.com" if n == 1 => {
            let mut r = json(
                StatusCode::TOO_MANY_REQUESTS,
                serde_json::json!({
                    "errorCode": "E0000047", "errorSummary": "API call exceeded rate limit due to too many requests."
                }),
            );
            let h = r.headers_mut();
            h.insert("x-rate-limit-limit", "600".parse().expect("value"));
            h.insert("x-rate-limit-remaining", "0".parse().expect("value"));
            h.insert(
                "x-rate-limit-reset",
                (now + 1).to_string().parse().expect("value"),
            );
            r
        }
        "/api/v1/users/busy%40example.com" => {
            json(StatusCode::OK, okta_user("00u2busy", "busy@example.com"))
        }
        "/api/v1/users/limited%40example.com" => {
            let mut r = json(
                StatusCode::TOO_MANY_REQUESTS,
                serde_json::json!({
                    "errorCode": "E0000047", "errorSummary": "API call exceeded rate limit due to too many requests.",
                    "errorLink": "E0000047", "errorId": "oae429", "errorCauses": []
                }),
            );
            let h = r.headers_mut();
            h.insert("x-rate-limit-limit", "600".parse().expect("value"));
            h.insert("x-rate-limit-remaining", "0".parse().expect("value"));
            h.insert(
                "x-rate-limit-reset",
                (now + LIMITED_RESET_AHEAD_S)
                    .to_string()
                    .parse()
                    .expect("value"),
            );
            r
        }
        "/api/v1/users/hooksecret%40example.com" => {
            let mut u = okta_user("00u4echo", "hooksecret@example.com");
            u["profile"]["title"] = crate::support::SECRET.into();
            json(StatusCode::OK, u)
        }
        "/api/v1/users/saturated%40example.com" => {
            let mut r = json(
                StatusCode::TOO_MANY_REQUESTS,
                serde_json::json!({"errorCode": "E0000047"}),
            );
            r.headers_mut().insert(
                "x-rate-limit-reset",
                (now + 3600).to_string().parse().expect("value"),
            );
            r
        }
        "/api/v1/users/flaky%40example.com" if n == 1 => json(
            StatusCode::INTERNAL_SERVER_ERROR,
            serde_json::json!({
                "errorCode": "E0000009", "errorSummary": "Internal Server Error"
            }),
        ),
        "/api/v1/users/flaky%40example.com" => {
            json(StatusCode::OK, okta_user("00u3flaky", "flaky@example.com"))
        }
        _ => json(
            StatusCode::NOT_FOUND,
            serde_json::json!({
                "errorCode": "E0000007", "errorSummary": format!("Not found: Resource not found: {path} (User)"),
                "errorLink": "E0000007", "errorId": "oae123", "errorCauses": []
            }),
        ),
    }
}

#[tokio::test]
async fn okta_found_user_is_mapped_from_profile() {
    let okta = FakeOkta::start().await;
    let u = okta
        .client()
        .get_user("jane@example.com", None)
        .await
        .expect("ok")
        .expect("found");
    assert_eq!(u.id, "00u1jane");
    assert_eq!(u.status.as_deref(), Some("ACTIVE"));
    assert_eq!(u.login.as_deref(), Some("jane@example.com"));
    assert_eq!(u.email.as_deref(), Some("jane@example.com"));
    assert_eq!(u.first_name.as_deref(), Some("Jane"));
    assert_eq!(u.display_name.as_deref(), Some("Jane Doe"));
    assert_eq!(u.manager_id.as_deref(), Some("00umgr"));
    assert_eq!(u.manager.as_deref(), Some("boss@example.com"));
    assert_eq!(u.department.as_deref(), Some("Finance"));
    assert_eq!(u.title.as_deref(), Some("Analyst"));
    assert_eq!(u.profile["costCenter"], "CC-42");
    let by_id = okta
        .client()
        .get_user("00u1jane", None)
        .await
        .expect("ok")
        .expect("found by id");
    assert_eq!(by_id, u);
}

#[tokio::test]
async fn okta_unknown_user_is_none() {
    let okta = FakeOkta::start().await;
    assert_eq!(
        okta.client().get_user("ghost@example.com", None).await,
        Ok(None)
    );
    assert_eq!(okta.hits("/api/v1/users/ghost%40example.com"), 1);
    // A key with `/` or spaces stays one path segment.
    assert_eq!(okta.client().get_user("a/b c", None).await, Ok(None));
    assert_eq!(okta.hits("/api/v1/users/a%2Fb%20c"), 1);
}

/// Regression (defect 10): a 429 was waited out inside the lookup (up to 5 s, twice), holding
/// the run's worker thread. Now it fails at once with the reset, and until the reset no request
/// is made.
#[tokio::test]
async fn okta_429_fails_at_once_with_the_reset_and_holds_off_until_it() {
    let okta = FakeOkta::start().await;
    let client = okta.client();
    let started = Instant::now();
    let err = client
        .get_user("busy@example.com", None)
        .await
        .expect_err("rate limited");
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    let LookupError::RateLimited { message, until } = &err else {
        panic!("{err:?}")
    };
    assert!(
        message.contains("429") && message.contains("E0000047"),
        "{message}"
    );
    let reset = okta.seen("/api/v1/users/busy%40example.com")[0]
        .1
        .expect("reset sent");
    assert_eq!(*until, UNIX_EPOCH + Duration::from_secs(reset));
    // Before the reset, no lookup asks Okta (the org is rate limited, whatever the user).
    let err = client
        .get_user("jane@example.com", None)
        .await
        .expect_err("held off");
    assert!(matches!(err, LookupError::RateLimited { .. }), "{err:?}");
    assert_eq!(okta.hits("/api/v1/users/jane%40example.com"), 0);
    // After it, Okta is asked again.
    while SystemTime::now() < *until {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let u = client
        .get_user("busy@example.com", None)
        .await
        .expect("ok")
        .expect("found");
    assert_eq!(u.id, "00u2busy");
    assert_eq!(okta.hits("/api/v1/users/busy%40example.com"), 2);

    // A reset an hour away: the same, capped.
    let err = okta
        .client()
        .get_user("saturated@example.com", None)
        .await
        .expect_err("rate limited");
    let LookupError::RateLimited { until, .. } = &err else {
        panic!("{err:?}")
    };
    assert!(*until <= SystemTime::now() + engine::lookup::MAX_RATE_LIMIT_PAUSE);
}

/// Regression (defect 10): a lookup against an Okta that never answers took the whole 10 s
/// request timeout, whatever the run had left.
#[tokio::test]
async fn okta_lookup_ends_by_its_deadline() {
    let okta = FakeOkta::start().await;
    let started = Instant::now();
    let err = okta
        .client()
        .get_user(
            "hang@example.com",
            Some(started + Duration::from_millis(300)),
        )
        .await
        .expect_err("no answer");
    let took = started.elapsed();
    assert!(matches!(err, LookupError::OutOfTime(_)), "{err:?}");
    assert!(
        (Duration::from_millis(250)..Duration::from_secs(2)).contains(&took),
        "{took:?}"
    );
}

#[tokio::test]
async fn okta_5xx_is_transient_then_succeeds() {
    let okta = FakeOkta::start().await;
    let client = okta.client();
    let err = client
        .get_user("flaky@example.com", None)
        .await
        .expect_err("500");
    assert!(
        matches!(&err, LookupError::Transient(t) if t.contains("500")),
        "{err:?}"
    );
    let u = client
        .get_user("flaky@example.com", None)
        .await
        .expect("ok")
        .expect("found");
    assert_eq!(u.id, "00u3flaky");
}

#[tokio::test]
async fn okta_bad_token_is_permanent_without_the_token() {
    let okta = FakeOkta::start().await;
    let client = OktaClient::new(&okta.url, Secret::new("wrong-Zq9-token".into())).expect("client");
    let err = client
        .get_user("jane@example.com", None)
        .await
        .expect_err("401");
    let LookupError::Permanent(text) = &err else {
        panic!("{err:?}")
    };
    assert!(text.contains("401") && text.contains("token"), "{text}");
    for shown in [text.clone(), format!("{err:?}"), format!("{client:?}")] {
        assert!(!shown.contains("Zq9"), "token shown: {shown}");
    }
}

#[tokio::test]
async fn okta_unreachable_is_transient() {
    // A port no other test gets, with nothing listening on it.
    let port = crate::support::free_port();
    let client = OktaClient::new(
        &format!("http://127.0.0.1:{port}"),
        Secret::new(TOKEN.into()),
    )
    .expect("client");
    let err = client
        .get_user("jane@example.com", None)
        .await
        .expect_err("refused");
    assert!(matches!(err, LookupError::Transient(_)), "{err:?}");
    assert!(!err.to_string().contains(TOKEN));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_caches_okta_answers_and_works_blocking() {
    let okta = FakeOkta::start().await;
    let lookup = Arc::new(Lookup::new(None, Some(Arc::new(okta.client()))).expect("lookup"));
    let first = lookup
        .lookup("jane@example.com", None)
        .await
        .expect("ok")
        .expect("found");
    let second = lookup
        .lookup("jane@example.com", None)
        .await
        .expect("ok")
        .expect("found");
    assert_eq!(first, second);
    assert_eq!(
        okta.hits("/api/v1/users/jane%40example.com"),
        1,
        "second lookup is a cache hit"
    );

    // Not found is cached too.
    assert_eq!(lookup.lookup("ghost@example.com", None).await, Ok(None));
    assert_eq!(lookup.lookup("ghost@example.com", None).await, Ok(None));
    assert_eq!(okta.hits("/api/v1/users/ghost%40example.com"), 1);

    // Errors are not cached.
    assert!(lookup.lookup("flaky@example.com", None).await.is_err());
    assert!(
        lookup
            .lookup("flaky@example.com", None)
            .await
            .expect("ok")
            .is_some()
    );

    // From a blocking thread, as the Rhai host function calls it.
    let l = Arc::clone(&lookup);
    let (cached, fresh) = tokio::task::spawn_blocking(move || {
        (
            l.lookup_blocking("jane@example.com", None),
            l.lookup_blocking("00u1jane", None),
        )
    })
    .await
    .expect("join");
    assert_eq!(cached.expect("ok").expect("found").id, "00u1jane");
    assert_eq!(fresh.expect("ok").expect("found").id, "00u1jane");
    assert_eq!(okta.hits("/api/v1/users/jane%40example.com"), 1);
    assert_eq!(okta.hits("/api/v1/users/00u1jane"), 1);
    assert_eq!(lookup.okta_requests(), 5);

    // With caching off every lookup asks Okta.
    let uncached = Lookup::new(None, Some(Arc::new(okta.client())))
        .expect("lookup")
        .with_cache_ttl(Duration::ZERO, Duration::ZERO);
    uncached.lookup("00u1jane", None).await.expect("ok");
    uncached.lookup("00u1jane", None).await.expect("ok");
    assert_eq!(okta.hits("/api/v1/users/00u1jane"), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directory_first_then_okta() {
    let okta = FakeOkta::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("directory.csv");
    std::fs::write(
        &file,
        "id,email,displayName\nd1,jane@example.com,Jane From CSV\n",
    )
    .expect("write");
    let lookup = Lookup::new(
        Some(Directory::load(&file).expect("load")),
        Some(Arc::new(okta.client())),
    )
    .expect("lookup");
    let u = lookup
        .lookup("JANE@example.com", None)
        .await
        .expect("ok")
        .expect("found");
    assert_eq!(u.display_name.as_deref(), Some("Jane From CSV"));
    assert_eq!(okta.total(), 0, "found in the directory: Okta not asked");
    let u = lookup
        .lookup("00u1jane", None)
        .await
        .expect("ok")
        .expect("found in Okta");
    assert_eq!(u.display_name.as_deref(), Some("Jane Doe"));
    assert_eq!(okta.total(), 1);
}

#[test]
fn directory_csv_finds_by_email_login_and_id() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("directory.csv");
    std::fs::write(
        &file,
        "\u{feff}id,status,login,email,first_name,Last Name,displayName,managerId,manager,department,title,costCenter\r\n\
         00u1,ACTIVE,jane.doe,Jane.Doe@Example.com,Jane,Doe,\"Doe, Jane\",00u2,boss@example.com,Finance,\"Senior \"\"Lead\"\" Analyst\",CC-42\r\n\
         00u2,ACTIVE,boss,boss@example.com,Big,Boss,\"The\nBoss\",,,Exec,CEO,\r\n\
         \r\n",
    )
    .expect("write");
    let d = Directory::load(&file).expect("load");
    assert_eq!(d.len(), 2);
    let u = d.find("jane.doe@example.com").expect("by email, any case");
    assert_eq!(u.id, "00u1");
    assert_eq!(u.status.as_deref(), Some("ACTIVE"));
    assert_eq!(u.first_name.as_deref(), Some("Jane"));
    assert_eq!(u.last_name.as_deref(), Some("Doe"));
    assert_eq!(u.display_name.as_deref(), Some("Doe, Jane"));
    assert_eq!(u.title.as_deref(), Some("Senior \"Lead\" Analyst"));
    assert_eq!(u.manager_id.as_deref(), Some("00u2"));
    assert_eq!(u.profile["costCenter"], "CC-42");
    assert_eq!(u.profile["email"], "Jane.Doe@Example.com");
    assert_eq!(d.find("JANE.DOE").expect("by login").id, "00u1");
    let boss = d.find("00u2").expect("by id");
    assert_eq!(boss.display_name.as_deref(), Some("The\nBoss"));
    assert_eq!(boss.manager_id, None);
    assert!(d.find("00U2").is_none(), "ids match exactly");
    assert!(d.find("nobody@example.com").is_none());
}

#[test]
fn directory_json_flat_and_okta_shaped() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("people.json");
    std::fs::write(
        &file,
        serde_json::json!([
            {"id": "u1", "email": "flat@example.com", "firstName": "Flat", "badge": 7},
            okta_user("00u1jane", "jane@example.com"),
        ])
        .to_string(),
    )
    .expect("write");
    let d = Directory::load(&file).expect("load");
    let flat = d.find("FLAT@example.com").expect("flat");
    assert_eq!(flat.first_name.as_deref(), Some("Flat"));
    assert_eq!(flat.profile["badge"], 7);
    let jane = d.find("jane@example.com").expect("okta-shaped");
    assert_eq!(jane.id, "00u1jane");
    assert_eq!(jane.department.as_deref(), Some("Finance"));
    assert!(d.find("ghost@example.com").is_none());
}

#[test]
fn directory_errors_name_file_and_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let csv = dir.path().join("d.csv");
    std::fs::write(&csv, "id,email\nu1,a@example.com\nu2,b@example.com,extra\n").expect("write");
    let err = Directory::load(&csv).expect_err("bad row").to_string();
    assert!(err.contains("d.csv:3:"), "{err}");
    std::fs::write(&csv, "id,email\nu1,\"unterminated\n").expect("write");
    let err = Directory::load(&csv).expect_err("bad quote").to_string();
    assert!(err.contains("d.csv:2:"), "{err}");
    let json = dir.path().join("d.json");
    std::fs::write(&json, "[\n {\"id\": \"u1\"},\n {\"id\": }\n]").expect("write");
    let err = Directory::load(&json).expect_err("bad json").to_string();
    assert!(err.contains("d.json:3:"), "{err}");
    let err = Directory::load(dir.path().join("missing.csv"))
        .expect_err("missing")
        .to_string();
    assert!(err.contains("missing.csv"), "{err}");
}

#[test]
fn directory_reloads_changed_file_and_keeps_old_on_broken_edit() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("directory.csv");
    std::fs::write(&file, "id,email\nu1,old@example.com\n").expect("write");
    let d = Directory::load(&file).expect("load");
    assert!(d.find("old@example.com").is_some());

    // Editors save by writing a new file and renaming it over the old one.
    let tmp = dir.path().join(".directory.csv.swp");
    std::fs::write(
        &tmp,
        "id,email\nu1,old@example.com\nu2,new.person@example.com\n",
    )
    .expect("write");
    std::fs::rename(&tmp, &file).expect("rename");
    std::thread::sleep(engine::lookup::DIRECTORY_CHECK_INTERVAL + Duration::from_millis(100));
    assert_eq!(
        d.find("new.person@example.com").expect("picked up").id,
        "u2"
    );

    std::fs::write(&file, "id,email\nu3,\"broken\n").expect("write");
    std::thread::sleep(engine::lookup::DIRECTORY_CHECK_INTERVAL + Duration::from_millis(100));
    assert_eq!(d.len(), 2, "a broken edit keeps the previous contents");
    assert!(d.find("new.person@example.com").is_some());

    std::fs::remove_file(&file).expect("remove");
    std::thread::sleep(engine::lookup::DIRECTORY_CHECK_INTERVAL + Duration::from_millis(100));
    assert_eq!(d.len(), 2, "a deleted file keeps the previous contents");

    std::fs::write(&file, "id,email\nu9,back@example.com\n").expect("write");
    std::thread::sleep(engine::lookup::DIRECTORY_CHECK_INTERVAL + Duration::from_millis(100));
    assert!(d.find("back@example.com").is_some());
    assert!(d.find("old@example.com").is_none());
}

#[test]
fn lookup_blocking_with_directory_only_needs_no_runtime() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("directory.json");
    std::fs::write(
        &file,
        r#"[{"id":"u1","login":"jd","email":"jd@example.com"}]"#,
    )
    .expect("write");
    let lookup = Lookup::new(Some(Directory::load(&file).expect("load")), None).expect("lookup");
    assert_eq!(
        lookup
            .lookup_blocking("JD", None)
            .expect("ok")
            .expect("found")
            .id,
        "u1"
    );
    assert_eq!(lookup.lookup_blocking("nobody", None), Ok(None));
    assert_eq!(lookup.lookup_blocking("", None), Ok(None));
}
