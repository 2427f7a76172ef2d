//! Small rules the host and every plugin must apply the same way: what a
//! registry host is, what an endpoint URL may look like, what "now" is, and
//! when cached credentials must be replaced. Pure functions, no I/O.

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, in Unix seconds (0 if the clock is before 1970).
pub fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// The UTC calendar fields of Unix time `t`: year, month, day, hour,
/// minute, second (proleptic Gregorian).
pub fn utc_fields(t: i64) -> (i64, u32, u32, u32, u32, u32) {
    let days = t.div_euclid(86_400);
    let secs = t.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    // Every field but the year is within its small range by construction.
    let small = |v: i64| u32::try_from(v).unwrap_or(0);
    (year, small(month), small(day), small(h), small(m), small(s))
}

/// Unix time `t` as RFC 3339 UTC: `2026-12-05T01:02:03Z`.
pub fn format_rfc3339(t: i64) -> String {
    let (y, mo, d, h, mi, s) = utc_fields(t);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

/// Parses an RFC 3339 time (UTC offsets and fractions accepted, as token
/// servers and Google's APIs send them) into Unix seconds.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let s = s.trim();
    let (date, time) = s.split_once(['T', 't', ' '])?;
    let mut d = date.split('-');
    let (y, m, day): (i64, i64, i64) = (d.next()?.parse().ok()?, d.next()?.parse().ok()?, d.next()?.parse().ok()?);
    let (clock, offset) = if let Some(stripped) = time.strip_suffix(['Z', 'z']) {
        (stripped, 0)
    } else {
        let idx = time.rfind(['+', '-'])?;
        let (c, o) = time.split_at(idx);
        let sign = if o.starts_with('-') { -1 } else { 1 };
        let (oh, om) = o[1..].split_once(':')?;
        (c, sign * (oh.parse::<i64>().ok()? * 3600 + om.parse::<i64>().ok()? * 60))
    };
    let clock = clock.split('.').next()?;
    let mut c = clock.split(':');
    let (hh, mm, ss): (i64, i64, i64) = (c.next()?.parse().ok()?, c.next()?.parse().ok()?, c.next()?.parse().ok()?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) {
        return None;
    }
    // Days from civil date (Howard Hinnant's algorithm).
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = if y2 >= 0 { y2 } else { y2 - 399 } / 400;
    let yoe = y2 - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss - offset)
}

/// Credentials are replaced at the latest this many seconds before they expire...
pub const MAX_REFRESH_MARGIN_SECS: i64 = 300;
/// ...or after `(SHARE - 1) / SHARE` of their lifetime, when that is sooner.
pub const REFRESH_MARGIN_SHARE: i64 = 4;

/// Until when credentials obtained at `now` and expiring at `expires_at`
/// (Unix seconds) may be handed out: 5 minutes before they expire, or a
/// quarter of their lifetime before, for short-lived ones. `None` when they
/// must not be reused at all (already expired, or about to).
pub fn reuse_until(now: i64, expires_at: i64) -> Option<i64> {
    let lifetime = expires_at - now;
    if lifetime <= 0 {
        return None;
    }
    let margin = refresh_margin(lifetime).max(1);
    let until = expires_at - margin;
    (until > now).then_some(until)
}

/// How long before their expiry credentials living `lifetime` seconds are
/// replaced: 5 minutes, or a quarter of the lifetime when that is shorter.
pub fn refresh_margin(lifetime: i64) -> i64 {
    MAX_REFRESH_MARGIN_SECS.min(lifetime.max(0) / REFRESH_MARGIN_SHARE)
}

/// `host[:port]` of a registry URL or host, in lower case, without scheme,
/// user information, path, query, trailing dot or surrounding whitespace.
/// Registry clients pass both forms (`https://index.docker.io/v1/`,
/// `127.0.0.1:5000`); every comparison of registry hosts goes through this.
pub fn registry_host(server: &str) -> String {
    let lower = server.trim().to_ascii_lowercase();
    let rest = match lower.find("://") {
        Some(i) => &lower[i + 3..],
        None => lower.as_str(),
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit('@').next().unwrap_or("");
    host.trim_end_matches('.').to_owned()
}

/// Checks an endpoint URL setting: `http://` or `https://`, a host, and no
/// user information, whitespace or control characters. Returns why not; the
/// reason never repeats a URL that may hold a password.
pub fn check_http_url(url: &str) -> Result<(), String> {
    let quoted = || {
        if url.contains('@') {
            "the URL".to_owned()
        } else {
            format!("{:?}", url.chars().take(120).collect::<String>())
        }
    };
    let rest = match url.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https") => rest,
        _ => return Err(format!("{} is not an http(s) URL", quoted())),
    };
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("{} contains spaces or control characters", quoted()));
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.contains('@') {
        return Err("the URL holds a user name or password; give credentials through their own settings".into());
    }
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => authority.split(':').next().unwrap_or(""),
    };
    if host.is_empty() {
        return Err(format!("{} has no host", quoted()));
    }
    Ok(())
}

/// `text` with every URL in it reduced to scheme, host and path: user
/// information (`user:password@`), queries (signed URLs, upload session ids)
/// and fragments removed. Transport errors quote the URL they failed on, and
/// such URLs can be credentials in themselves.
pub fn scrub_urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        // The scheme: the letters right before `://`.
        let scheme_start = rest[..i]
            .char_indices()
            .rev()
            .take_while(|(_, c)| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
            .last()
            .map_or(i, |(j, _)| j);
        out.push_str(&rest[..i + 3]);
        let after = &rest[i + 3..];
        // The URL ends at whitespace, a quote or a closing bracket.
        let end =
            after.find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | ')' | '>' | '`')).unwrap_or(after.len());
        let url = &after[..end];
        let (authority, path) = match url.find(['/', '?', '#']) {
            Some(p) => url.split_at(p),
            None => (url, ""),
        };
        let host = authority.rsplit('@').next().unwrap_or("");
        let path = path.split(['?', '#']).next().unwrap_or("");
        if scheme_start < i {
            out.push_str(host);
            out.push_str(path);
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339_round_trips() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("2015-01-01T00:00:00Z"), Some(1_420_070_400));
        assert_eq!(parse_rfc3339("2015-01-01T01:00:00.123456+01:00"), Some(1_420_070_400));
        assert_eq!(parse_rfc3339("garbage"), None);
        for t in [0, 951_782_400, 1_796_432_523, 4_107_542_399] {
            assert_eq!(parse_rfc3339(&format_rfc3339(t)), Some(t));
        }
        assert_eq!(format_rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn urls_lose_credentials_and_queries() {
        assert_eq!(
            scrub_urls("error sending request for url (https://u:pw@host:1/a/b?upload_id=SECRET&x=1#f): reset"),
            "error sending request for url (https://host:1/a/b): reset"
        );
        assert_eq!(scrub_urls("GET http://h/p?X-Amz-Signature=abc failed"), "GET http://h/p failed");
        assert_eq!(scrub_urls("no urls here"), "no urls here");
        assert_eq!(scrub_urls("a://"), "a://");
        assert_eq!(scrub_urls("two: http://a?s=1 'https://b/c?d'"), "two: http://a 'https://b/c'");
    }

    use super::*;

    #[test]
    fn reuse_margins() {
        assert_eq!(reuse_until(1000, 1000 + 3600), Some(1000 + 3600 - 300));
        assert_eq!(reuse_until(1000, 1000 + 60), Some(1000 + 45));
        assert_eq!(reuse_until(1000, 999), None);
        assert_eq!(reuse_until(1000, 1000), None);
        assert_eq!(reuse_until(1000, 1001), None);
    }

    #[test]
    fn registry_hosts() {
        assert_eq!(registry_host("https://Index.Docker.io/v1/"), "index.docker.io");
        assert_eq!(registry_host(" 127.0.0.1:5000\n"), "127.0.0.1:5000");
        assert_eq!(registry_host("http://reg.example.com./x"), "reg.example.com");
        assert_eq!(registry_host("https://user:pw@reg.example.com:5000/v2/"), "reg.example.com:5000");
        assert_eq!(registry_host("123.DKR.ecr.us-east-1.amazonaws.com/"), "123.dkr.ecr.us-east-1.amazonaws.com");
        assert_eq!(registry_host(""), "");
    }

    #[test]
    fn http_urls() {
        for good in ["http://127.0.0.1:9000", "https://s3.example.com/", "HTTP://h:1/path", "http://[::1]:9000"] {
            assert!(check_http_url(good).is_ok(), "{good}");
        }
        for bad in ["ftp://x", "127.0.0.1:9000", "http://", "http://:9000", "http://u:p@h", "http://h x", "https:/h"] {
            assert!(check_http_url(bad).is_err(), "{bad}");
        }
        assert!(!check_http_url("http://user:hunter2@h").unwrap_err().contains("hunter2"));
    }
}
