//! Time and text helpers: `now()`, the static `time` module (`time::parse`, `time::format` with
//! IANA zones, `time::add`, `time::since`) and `html_escape`. Times are RFC 3339 strings in
//! scripts (as Okta's `published`); "now" is the run's ([`RunCtx::now_ms`](super::engine::RunCtx)),
//! read once as it starts, so dry runs can fix it.

use rhai::{
    Dynamic, EvalAltResult, FuncRegistration, INT, ImmutableString, Module, NativeCallContext,
};

use super::duration::duration_value;
use super::engine::{not_in_run, with_ctx};
use super::state::rfc3339_ms;

/// Longest pattern `time::format` takes: patterns are a line of text, not a document.
const MAX_PATTERN_CHARS: usize = 256;

fn error(ctx: &NativeCallContext, name: &str, message: String) -> Box<EvalAltResult> {
    Box::new(EvalAltResult::ErrorRuntime(
        format!("{name}: {message}").into(),
        ctx.call_position(),
    ))
}

fn run_now(name: &str) -> Result<u64, Box<EvalAltResult>> {
    with_ctx(|c| c.now_ms).ok_or_else(|| not_in_run(name))
}

/// A time a script gave: an RFC 3339 string.
fn timestamp(
    ctx: &NativeCallContext,
    name: &str,
    t: &Dynamic,
) -> Result<jiff::Timestamp, Box<EvalAltResult>> {
    let Some(s) = t.read_lock::<ImmutableString>() else {
        return Err(error(
            ctx,
            name,
            format!(
                "a time must be an RFC 3339 string like \"2026-12-05T09:00:00Z\", not {}",
                t.type_name()
            ),
        ));
    };
    s.trim().parse::<jiff::Timestamp>().map_err(|e| {
        error(
            ctx,
            name,
            format!(
                "{:?} is not an RFC 3339 time like \"2026-12-05T09:00:00Z\" ({e})",
                s.as_str()
            ),
        )
    })
}

fn millis(ts: jiff::Timestamp) -> u64 {
    u64::try_from(ts.as_millisecond()).unwrap_or(0)
}

fn now(ctx: NativeCallContext) -> Result<ImmutableString, Box<EvalAltResult>> {
    let _ = ctx;
    Ok(rfc3339_ms(run_now("now")?).into())
}

fn parse(ctx: NativeCallContext, t: Dynamic) -> Result<ImmutableString, Box<EvalAltResult>> {
    let ts = timestamp(&ctx, "time::parse", &t)?;
    if ts.as_millisecond() < 0 {
        return Err(error(
            &ctx,
            "time::parse",
            "times before 1970 are not supported".into(),
        ));
    }
    Ok(rfc3339_ms(millis(ts)).into())
}

fn format(
    ctx: NativeCallContext,
    t: Dynamic,
    pattern: ImmutableString,
    tz: Option<ImmutableString>,
) -> Result<ImmutableString, Box<EvalAltResult>> {
    let name = "time::format";
    let ts = timestamp(&ctx, name, &t)?;
    if pattern.chars().count() > MAX_PATTERN_CHARS {
        return Err(error(
            &ctx,
            name,
            format!("the pattern is longer than {MAX_PATTERN_CHARS} characters"),
        ));
    }
    let zone = match &tz {
        None => jiff::tz::TimeZone::UTC,
        Some(z) => jiff::tz::TimeZone::get(z).map_err(|_| {
            let names: Vec<String> = jiff::tz::db().available().map(|n| n.to_string()).collect();
            let hint = super::suggest::nearest(z, &names)
                .map(|n| format!(" (did you mean {n:?}?)"))
                .unwrap_or_default();
            error(&ctx, name, format!("unknown time zone {:?}{hint}: use an IANA name like \"Europe/Berlin\" or \"America/New_York\"", z.as_str()))
        })?,
    };
    let zoned = ts.to_zoned(zone);
    jiff::fmt::strtime::format(pattern.as_str(), &zoned)
        .map(Into::into)
        .map_err(|e| {
            error(
                &ctx,
                name,
                format!(
                    "bad pattern {:?}: {e} (strftime: %Y-%m-%d %H:%M %Z)",
                    pattern.as_str()
                ),
            )
        })
}

fn add(
    ctx: NativeCallContext,
    t: Dynamic,
    d: Dynamic,
) -> Result<ImmutableString, Box<EvalAltResult>> {
    let name = "time::add";
    let ts = timestamp(&ctx, name, &t)?;
    // "-3d" (or a negative number of seconds) goes back.
    let negative_text = d
        .read_lock::<ImmutableString>()
        .and_then(|s| s.trim_start().strip_prefix('-').map(str::to_string));
    let (back, d) = match (negative_text, d.as_int()) {
        (Some(rest), _) => (true, Dynamic::from(rest)),
        (None, Ok(n)) if n < 0 => (true, Dynamic::from_int(n.saturating_neg())),
        _ => (false, d),
    };
    let d = duration_value(&d).map_err(|m| error(&ctx, name, m))?;
    let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    let base = ts.as_millisecond();
    let out = if back {
        base.saturating_sub(ms)
    } else {
        base.saturating_add(ms)
    };
    if out < 0 {
        return Err(error(&ctx, name, "the result is before 1970".into()));
    }
    Ok(rfc3339_ms(out as u64).into())
}

fn since(ctx: NativeCallContext, t: Dynamic) -> Result<INT, Box<EvalAltResult>> {
    let ts = timestamp(&ctx, "time::since", &t)?;
    let now = i64::try_from(run_now("time::since")?).unwrap_or(i64::MAX);
    Ok(now.saturating_sub(ts.as_millisecond()).div_euclid(1000))
}

/// `&`, `<`, `>`, `"` and `'` as HTML entities: payload text placed into an HTML mail body.
pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const NOW_DOC: &str = "/// The run's time (RFC 3339, UTC, milliseconds), read once as the run starts. Dry runs\n/// (`engine run`, `engine check`) use a fixed one.";
const PARSE_DOC: &str = "/// An RFC 3339 time (any offset) as RFC 3339 UTC with milliseconds; an error when it is not one.";
const FORMAT_DOC: &str = "/// `t` written with a strftime `pattern` (`\"%Y-%m-%d %H:%M %Z\"`), in UTC or in the IANA\n/// zone `tz` (`\"Europe/Berlin\"`), daylight saving time included.";
const ADD_DOC: &str =
    "/// `t` plus a duration (`\"3d\"`, `\"90m\"`, seconds; `\"-1h\"` goes back), as RFC 3339 UTC.";
const SINCE_DOC: &str =
    "/// Whole seconds from `t` to the run's now (negative for a time still to come).";
const ESCAPE_DOC: &str =
    "/// `s` with `& < > \" '` as HTML entities: for payload text in an `html` mail body.";

/// Registers `now`, `html_escape` and the static `time` module.
pub(crate) fn register(engine: &mut rhai::Engine) {
    FuncRegistration::new("now")
        .with_params_info(["String"])
        .with_comments([NOW_DOC])
        .register_into_engine(engine, now);
    FuncRegistration::new("html_escape")
        .with_params_info(["s: String", "String"])
        .with_comments([ESCAPE_DOC])
        .register_into_engine(engine, |s: ImmutableString| -> ImmutableString {
            html_escape(&s).into()
        });
    let mut m = Module::new();
    FuncRegistration::new("parse")
        .with_params_info(["t: String", "String"])
        .with_comments([PARSE_DOC])
        .set_into_module(&mut m, parse);
    FuncRegistration::new("format")
        .with_params_info(["t: String", "pattern: String", "String"])
        .with_comments([FORMAT_DOC])
        .set_into_module(
            &mut m,
            |ctx: NativeCallContext, t: Dynamic, p: ImmutableString| format(ctx, t, p, None),
        );
    FuncRegistration::new("format")
        .with_params_info(["t: String", "pattern: String", "tz: String", "String"])
        .with_comments([FORMAT_DOC])
        .set_into_module(
            &mut m,
            |ctx: NativeCallContext, t: Dynamic, p: ImmutableString, z: ImmutableString| {
                format(ctx, t, p, Some(z))
            },
        );
    FuncRegistration::new("add")
        .with_params_info(["t: String", "duration: ?", "String"])
        .with_comments([ADD_DOC])
        .set_into_module(&mut m, add);
    FuncRegistration::new("since")
        .with_params_info(["t: String", "int"])
        .with_comments([SINCE_DOC])
        .set_into_module(&mut m, since);
    engine.register_static_module("time", m.into());
}

#[cfg(test)]
mod tests {
    use super::html_escape;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            html_escape("<b>\"Tom\" & 'Jerry'</b>"),
            "&lt;b&gt;&quot;Tom&quot; &amp; &#39;Jerry&#39;&lt;/b&gt;"
        );
    }
}
