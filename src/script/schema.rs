//! The documented shape of what scripts read: the Okta LogEvent (`event`), the envelope
//! (`delivery`) and the `lookup_user` map, each field with its type, an example and a line of
//! documentation, from Okta's LogEvent reference and the engine's own contract.
//!
//! `engine tokens` shows it when no sample exists, `engine check` checks paths against it, and
//! `engine definitions` writes it into the editor definition files. The field names are the ones
//! [`build_event_map`](super::build_event_map) fills in (a unit test keeps them equal).

/// The type Okta (or the engine) documents for a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DocType {
    String,
    Int,
    Float,
    Boolean,
    /// A map; its documented fields are [`FieldDoc::fields`] (none: keys vary).
    Object,
    /// An array of maps with the documented fields [`FieldDoc::fields`].
    Array,
}

impl DocType {
    /// The name `engine tokens` shows (`int`, `float`: Rhai's two number types).
    pub fn name(self) -> &'static str {
        match self {
            DocType::String => "string",
            DocType::Int => "int",
            DocType::Float => "float",
            DocType::Boolean => "boolean",
            DocType::Object => "object",
            DocType::Array => "array",
        }
    }

    /// The Rhai type name, as definition files write it.
    pub fn rhai_name(self) -> &'static str {
        match self {
            DocType::String => "String",
            DocType::Int => "int",
            DocType::Float => "float",
            DocType::Boolean => "bool",
            DocType::Object => "Map",
            DocType::Array => "Array",
        }
    }
}

/// One documented field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldDoc {
    pub name: &'static str,
    pub ty: DocType,
    /// An example value as JSON text (`"\"INFO\""`, `0`), if a useful one exists.
    pub example: Option<&'static str>,
    pub doc: &'static str,
    /// The fields of an object, or of each item of an array.
    pub fields: &'static [FieldDoc],
}

const fn field(
    name: &'static str,
    ty: DocType,
    example: Option<&'static str>,
    doc: &'static str,
) -> FieldDoc {
    FieldDoc {
        name,
        ty,
        example,
        doc,
        fields: &[],
    }
}

const fn object(
    name: &'static str,
    ty: DocType,
    doc: &'static str,
    fields: &'static [FieldDoc],
) -> FieldDoc {
    FieldDoc {
        name,
        ty,
        example: None,
        doc,
        fields,
    }
}

use DocType::{Array, Boolean, Float, Int, Object, String as Str};

/// An `actor` and each `target[]` item.
pub const ENTITY: &[FieldDoc] = &[
    field("id", Str, Some("\"00u1abcdEFGHijkl0h7\""), "the Okta id"),
    field(
        "type",
        Str,
        Some("\"User\""),
        "`User`, `UserGroup`, `AppInstance`, `AuthenticatorEnrollment`, …",
    ),
    field(
        "alternateId",
        Str,
        Some("\"jane.doe@example.com\""),
        "a login or email for users; `unknown` for some types",
    ),
    field("displayName", Str, Some("\"Jane Doe\""), "a readable name"),
    field(
        "detailEntry",
        Object,
        None,
        "more details; keys vary by type",
    ),
];

const GEOLOCATION: &[FieldDoc] = &[
    field("lat", Float, Some("43.6567"), "latitude"),
    field("lon", Float, Some("-79.34"), "longitude"),
];

const GEO: &[FieldDoc] = &[
    field("city", Str, Some("\"Toronto\""), "city"),
    field("state", Str, Some("\"Ontario\""), "state or province"),
    field("country", Str, Some("\"Canada\""), "country"),
    field("postalCode", Str, Some("\"M4M\""), "postal code"),
    object("geolocation", Object, "coordinates", GEOLOCATION),
];

const USER_AGENT: &[FieldDoc] = &[
    field(
        "rawUserAgent",
        Str,
        Some("\"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7)\""),
        "the User-Agent header",
    ),
    field("os", Str, Some("\"Mac OS X\""), "operating system"),
    field("browser", Str, Some("\"CHROME\""), "browser"),
];

const IP_ADDRESS: &[FieldDoc] = &[
    field("ip", Str, Some("\"142.126.158.61\""), "the address"),
    object("geographicalContext", Object, "where the address is", GEO),
    field("version", Str, Some("\"V4\""), "`V4` or `V6`"),
    field("source", Str, None, "how the address was learnt"),
];

const CLIENT: &[FieldDoc] = &[
    object("userAgent", Object, "the client's browser", USER_AGENT),
    field(
        "zone",
        Str,
        Some("\"null\""),
        "network zone; often the string \"null\"",
    ),
    field(
        "device",
        Str,
        Some("\"Computer\""),
        "`Computer`, `Mobile`, `Unknown`, …",
    ),
    field("id", Str, None, "the OAuth client id, for apps"),
    field(
        "ipAddress",
        Str,
        Some("\"142.126.158.61\""),
        "the client's IP address",
    ),
    object("geographicalContext", Object, "where the client is", GEO),
];

const DEVICE: &[FieldDoc] = &[
    field("id", Str, Some("\"guo4a5u7JHHhjXrMK0g4\""), "device id"),
    field("name", Str, Some("\"Jane's MacBook\""), "device name"),
    field("os_platform", Str, Some("\"OSX\""), "platform"),
    field("os_version", Str, Some("\"14.2\""), "OS version"),
    field("managed", Boolean, Some("true"), "managed by the org"),
    field("registered", Boolean, Some("true"), "registered with Okta"),
    field("device_integrator", Object, None, "integrations"),
    field(
        "disk_encryption_type",
        Str,
        Some("\"ALL_INTERNAL_VOLUMES\""),
        "disk encryption",
    ),
    field(
        "screen_lock_type",
        Str,
        Some("\"BIOMETRIC\""),
        "screen lock",
    ),
    field("jailbreak", Boolean, Some("false"), "rooted or jailbroken"),
    field(
        "secure_hardware_present",
        Boolean,
        Some("true"),
        "has a secure enclave or TPM",
    ),
];

const AUTH_CONTEXT: &[FieldDoc] = &[
    field(
        "authenticationProvider",
        Str,
        Some("\"OKTA_AUTHENTICATION_PROVIDER\""),
        "who authenticated",
    ),
    field(
        "credentialProvider",
        Str,
        Some("\"OKTA_CREDENTIAL_PROVIDER\""),
        "who holds the credential",
    ),
    field(
        "credentialType",
        Str,
        Some("\"PASSWORD\""),
        "`PASSWORD`, `OTP`, `SMS`, …",
    ),
    field("issuer", Object, None, "`#{ id, type }` of the issuer"),
    field("interface", Str, None, "the interface used"),
    field(
        "authenticationStep",
        Int,
        Some("0"),
        "the step of a multi-step authentication",
    ),
    field(
        "externalSessionId",
        Str,
        Some("\"idxyNcxVX2ESsSL0u462548Qg\""),
        "the session id",
    ),
];

const OUTCOME: &[FieldDoc] = &[
    field(
        "result",
        Str,
        Some("\"SUCCESS\""),
        "`SUCCESS`, `FAILURE`, `SKIPPED`, `ALLOW`, `DENY`, `CHALLENGE`, `UNKNOWN`",
    ),
    field(
        "reason",
        Str,
        Some("\"INVALID_CREDENTIALS\""),
        "why, when not a success",
    ),
];

const TRANSACTION: &[FieldDoc] = &[
    field("type", Str, Some("\"WEB\""), "`WEB` or `JOB`"),
    field(
        "id",
        Str,
        Some("\"ZCCzm8j2wTvzwele2NwLnwAADSc\""),
        "the request or job id",
    ),
    field("detail", Object, None, "more details; keys vary"),
];

const DEBUG_CONTEXT: &[FieldDoc] = &[field(
    "debugData",
    Object,
    None,
    "keys vary by event type: `requestUri`, `url`, `threatSuspected`, …; test with `\"key\" in …`",
)];

const SECURITY_CONTEXT: &[FieldDoc] = &[
    field("asNumber", Int, Some("577"), "autonomous system number"),
    field("asOrg", Str, Some("\"example\""), "its organization"),
    field(
        "isp",
        Str,
        Some("\"exampleISP\""),
        "internet service provider",
    ),
    field("domain", Str, Some("\"example.com\""), "domain"),
    field(
        "isProxy",
        Boolean,
        Some("false"),
        "the request came through a proxy",
    ),
];

const REQUEST: &[FieldDoc] = &[object(
    "ipChain",
    Array,
    "every IP address the request passed through",
    IP_ADDRESS,
)];

/// The documented fields of a LogEvent (`event`).
pub const LOGEVENT: &[FieldDoc] = &[
    field(
        "uuid",
        Str,
        Some("\"f1d0b993-cc19-11ed-a688-db22c99ef6c4\""),
        "the event's id",
    ),
    field(
        "published",
        Str,
        Some("\"2023-03-26T21:05:32.159Z\""),
        "when it happened, ISO 8601",
    ),
    field(
        "eventType",
        Str,
        Some("\"user.lifecycle.create\""),
        "the event type",
    ),
    field("version", Str, Some("\"0\""), "the event's schema version"),
    field(
        "severity",
        Str,
        Some("\"INFO\""),
        "`DEBUG`, `INFO`, `WARN`, `ERROR`",
    ),
    field(
        "legacyEventType",
        Str,
        Some("\"core.user_auth.login_success\""),
        "the older name of the event type",
    ),
    field(
        "displayMessage",
        Str,
        Some("\"User login to Okta\""),
        "a readable summary",
    ),
    object("actor", Object, "who did it", ENTITY),
    object("client", Object, "the client that made the request", CLIENT),
    object("device", Object, "the device, when Okta knows it", DEVICE),
    object(
        "authenticationContext",
        Object,
        "how the actor authenticated",
        AUTH_CONTEXT,
    ),
    object("outcome", Object, "the result", OUTCOME),
    object(
        "target",
        Array,
        "what it was done to; order is not stable: pick one by type with `okta::target(event, \"User\")`",
        ENTITY,
    ),
    object("transaction", Object, "the request or job", TRANSACTION),
    object("debugContext", Object, "diagnostic data", DEBUG_CONTEXT),
    object(
        "securityContext",
        Object,
        "where the request came from",
        SECURITY_CONTEXT,
    ),
    object("request", Object, "the request", REQUEST),
];

/// The fields of `delivery`: the envelope the event came in.
pub const DELIVERY: &[FieldDoc] = &[
    field(
        "id",
        Str,
        Some("\"85b60edb-4263-4e13-993b-818e26201052\""),
        "the envelope's `eventId`",
    ),
    field(
        "time",
        Str,
        Some("\"2023-03-26T21:05:33.000Z\""),
        "the envelope's `eventTime`",
    ),
    field(
        "hook",
        Str,
        Some("\"default\""),
        "the id of the hook it came in on",
    ),
    field(
        "source",
        Str,
        Some("\"https://example.okta.com/api/v1/eventHooks/who7hphp39JoHLni81d7\""),
        "the envelope's `source`; `system-log` for backfilled events",
    ),
];

/// The fields of the map `lookup_user` returns (see [`User`](super::User)).
pub const USER: &[FieldDoc] = &[
    field(
        "id",
        Str,
        Some("\"00u1abcdEFGHijkl0h7\""),
        "the Okta user id",
    ),
    field(
        "status",
        Str,
        Some("\"ACTIVE\""),
        "`ACTIVE`, `SUSPENDED`, …",
    ),
    field("login", Str, Some("\"jane.doe@example.com\""), "the login"),
    field("email", Str, Some("\"jane.doe@example.com\""), "the email"),
    field("firstName", Str, Some("\"Jane\""), "first name"),
    field("lastName", Str, Some("\"Doe\""), "last name"),
    field("displayName", Str, Some("\"Jane Doe\""), "display name"),
    field(
        "managerId",
        Str,
        Some("\"00u9zyxwVUTSrqpo0h7\""),
        "the manager's user id or login",
    ),
    field(
        "manager",
        Str,
        Some("\"Max Mustermann\""),
        "the manager's name",
    ),
    field("department", Str, Some("\"IT\""), "department"),
    field("title", Str, Some("\"Engineer\""), "job title"),
    field(
        "profile",
        Object,
        None,
        "every profile attribute, custom ones too",
    ),
];

/// The documented field `path` (names from `fields`, items of arrays stepped through).
pub fn lookup<'a>(fields: &'a [FieldDoc], path: &[&str]) -> Option<&'a FieldDoc> {
    let (first, rest) = path.split_first()?;
    let f = fields.iter().find(|f| f.name == *first)?;
    if rest.is_empty() {
        Some(f)
    } else {
        lookup(f.fields, rest)
    }
}

#[cfg(test)]
mod tests {
    use super::super::event::{
        ACTOR_FIELDS, AUTH_CONTEXT_FIELDS, CLIENT_FIELDS, DEBUG_CONTEXT_FIELDS, DEVICE_FIELDS,
        GEO_FIELDS, GEOLOCATION_FIELDS, IP_ADDRESS_FIELDS, LOGEVENT_FIELDS, OUTCOME_FIELDS,
        REQUEST_FIELDS, SECURITY_CONTEXT_FIELDS, TRANSACTION_FIELDS, USER_AGENT_FIELDS,
    };
    use super::*;

    fn names(f: &[FieldDoc]) -> Vec<&str> {
        f.iter().map(|f| f.name).collect()
    }

    /// The schema documents exactly the fields `build_event_map` fills in.
    #[test]
    fn schema_matches_the_event_map() {
        let sub = |path: &[&str]| lookup(LOGEVENT, path).map(|f| names(f.fields)).unwrap();
        assert_eq!(names(LOGEVENT), LOGEVENT_FIELDS);
        assert_eq!(sub(&["actor"]), ACTOR_FIELDS);
        assert_eq!(sub(&["target"]), ACTOR_FIELDS);
        assert_eq!(sub(&["client"]), CLIENT_FIELDS);
        assert_eq!(sub(&["client", "userAgent"]), USER_AGENT_FIELDS);
        assert_eq!(sub(&["client", "geographicalContext"]), GEO_FIELDS);
        assert_eq!(
            sub(&["client", "geographicalContext", "geolocation"]),
            GEOLOCATION_FIELDS
        );
        assert_eq!(sub(&["device"]), DEVICE_FIELDS);
        assert_eq!(sub(&["authenticationContext"]), AUTH_CONTEXT_FIELDS);
        assert_eq!(sub(&["outcome"]), OUTCOME_FIELDS);
        assert_eq!(sub(&["transaction"]), TRANSACTION_FIELDS);
        assert_eq!(sub(&["debugContext"]), DEBUG_CONTEXT_FIELDS);
        assert_eq!(sub(&["securityContext"]), SECURITY_CONTEXT_FIELDS);
        assert_eq!(sub(&["request"]), REQUEST_FIELDS);
        assert_eq!(sub(&["request", "ipChain"]), IP_ADDRESS_FIELDS);
        assert_eq!(
            sub(&["request", "ipChain", "geographicalContext"]),
            GEO_FIELDS
        );
        let user: Vec<String> = match super::super::user_to_dynamic(&super::super::User::default())
            .try_cast::<rhai::Map>()
        {
            Some(m) => m.keys().map(|k| k.to_string()).collect(),
            None => Vec::new(),
        };
        let mut want: Vec<&str> = names(USER);
        want.sort();
        assert_eq!(user, want);
        for f in LOGEVENT.iter().chain(DELIVERY).chain(USER) {
            if let Some(e) = f.example {
                assert!(serde_json::from_str::<serde_json::Value>(e).is_ok(), "{e}");
            }
        }
    }
}
