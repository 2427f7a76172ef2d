//! A build job's entries in the forms jobs consume: `KEY=value` lines, JSON,
//! dotenv files, `export` lines for `eval`, and Kubernetes `Secret` manifests.

use std::fmt::Write as _;

use credhost::{CredentialEntry, REDACTED};

use crate::error::{Error, Result};

/// An output form of [`render`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Format {
    /// `KEY=value` lines, values as they are (for humans and simple parsers).
    Env,
    /// One JSON object.
    Json,
    /// A dotenv file: values quoted where needed.
    Dotenv,
    /// `export KEY='value'` lines, safe to `eval` in any POSIX shell.
    Shell,
    /// A Kubernetes `Secret` manifest (`stringData`).
    K8sSecret {
        /// `metadata.name`.
        name: String,
        /// `metadata.namespace`, when given.
        namespace: Option<String>,
        /// `metadata.annotations`, `(key, value)`.
        annotations: Vec<(String, String)>,
    },
}

/// Renders `entries`; secret values print as `<redacted>` unless `show_secrets`.
/// Keys that the form cannot carry (a shell variable name, a Secret key) are
/// an error rather than being mangled.
pub fn render(entries: &[CredentialEntry], show_secrets: bool, format: &Format) -> Result<String> {
    // Values are borrowed and quoted copies wiped: the text is the only
    // copy of a secret made here, and it has room for all of it from the
    // start, so it is never moved (leaving a copy behind) while it grows.
    fn shown(e: &CredentialEntry, show_secrets: bool) -> &str {
        if e.secret && !show_secrets {
            REDACTED
        } else {
            e.value.expose()
        }
    }
    let value = |e| shown(e, show_secrets);
    let room: usize = entries.iter().map(|e| 2 * (e.key.len() + value(e).len()) + 32).sum::<usize>() + 512;
    let mut out = String::with_capacity(room);
    match format {
        Format::Env => {
            for e in entries {
                // A key with a line break in it would forge a line.
                check_variable_name(&e.key)?;
                let _ = writeln!(out, "{}={}", e.key, value(e));
            }
        }
        Format::Json => {
            let map: std::collections::BTreeMap<&str, &str> =
                entries.iter().map(|e| (e.key.as_str(), value(e))).collect();
            let mut bytes = Vec::with_capacity(room);
            serde_json::to_writer_pretty(&mut bytes, &map)
                .map_err(|e| Error::Usage(format!("cannot format JSON: {e}")))?;
            bytes.push(b'\n');
            out = String::from_utf8(bytes).map_err(|e| Error::Usage(format!("cannot format JSON: {e}")))?;
        }
        Format::Dotenv => {
            for e in entries {
                check_variable_name(&e.key)?;
                let quoted = zeroize::Zeroizing::new(dotenv_quote(value(e)));
                let _ = writeln!(out, "{}={}", e.key, quoted.as_str());
            }
        }
        Format::Shell => {
            for e in entries {
                check_variable_name(&e.key)?;
                let quoted = zeroize::Zeroizing::new(shell_quote(value(e)));
                let _ = writeln!(out, "export {}={}", e.key, quoted.as_str());
            }
        }
        Format::K8sSecret { name, namespace, annotations } => {
            check_k8s_name("--name", name, 253, true)?;
            if let Some(ns) = namespace {
                check_k8s_name("--namespace", ns, 63, false)?;
            }
            out.push_str("apiVersion: v1\nkind: Secret\nmetadata:\n");
            let _ = writeln!(out, "  name: {}", yaml_quote(name));
            if let Some(ns) = namespace {
                let _ = writeln!(out, "  namespace: {}", yaml_quote(ns));
            }
            if !annotations.is_empty() {
                out.push_str("  annotations:\n");
                for (k, v) in annotations {
                    let _ = writeln!(out, "    {}: {}", yaml_quote(k), yaml_quote(v));
                }
            }
            out.push_str("  labels:\n    app.kubernetes.io/managed-by: credhost\ntype: Opaque\nstringData:");
            if entries.is_empty() {
                out.push_str(" {}");
            }
            out.push('\n');
            for e in entries {
                check_secret_key(&e.key)?;
                let quoted = zeroize::Zeroizing::new(yaml_quote(value(e)));
                let _ = writeln!(out, "  {}: {}", yaml_quote(&e.key), quoted.as_str());
            }
        }
    }
    Ok(out)
}

/// Checks the form's own options (a Secret's name and namespace).
pub fn check_format(format: &Format) -> Result<()> {
    render(&[], false, format).map(|_| ())
}

/// How many entries [`render`] printed redacted.
pub fn redacted_count(entries: &[CredentialEntry], show_secrets: bool) -> usize {
    if show_secrets {
        0
    } else {
        entries.iter().filter(|e| e.secret).count()
    }
}

fn check_variable_name(key: &str) -> Result<()> {
    let mut chars = key.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(Error::Usage(format!("entry key {key:?} is not a valid environment variable name")))
    }
}

fn check_secret_key(key: &str) -> Result<()> {
    let ok = !key.is_empty()
        && key.len() <= 253
        && key.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && key != "."
        && key != "..";
    if ok {
        Ok(())
    } else {
        Err(Error::Usage(format!("entry key {key:?} cannot be a Kubernetes Secret key")))
    }
}

/// A DNS-1123 subdomain (`dots`) or label: lower-case letters, digits and
/// `-` (and `.`), starting and ending with a letter or digit.
fn check_k8s_name(flag: &str, name: &str, max: usize, dots: bool) -> Result<()> {
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let ok = !name.is_empty()
        && name.len() <= max
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || (dots && c == '.'))
        && edge(name.chars().next())
        && edge(name.chars().last());
    if ok {
        Ok(())
    } else {
        Err(Error::Usage(format!(
            "{flag} {name:?} is not a valid Kubernetes name: at most {max} lower-case letters, digits{} and `-`, starting and ending with a letter or digit",
            if dots { ", `.`" } else { "" }
        )))
    }
}

/// Single quotes keep every byte literal in a POSIX shell; a quote inside is
/// closed, escaped and reopened: `it's` → `'it'\''s'`.
pub fn shell_quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for c in value.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

/// Plain when nothing could be misread, single-quoted (literal in docker
/// compose, python-dotenv and dotenvy) when possible, else double-quoted with
/// backslash escapes for `\`, `"`, line breaks and tabs.
pub fn dotenv_quote(value: &str) -> String {
    let plain =
        |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/' | ':' | '@' | '+' | ',' | '%' | '=');
    if value.chars().all(plain) {
        return value.to_owned();
    }
    if !value.contains('\'') && !value.chars().any(char::is_control) {
        return format!("'{value}'");
    }
    let mut out = String::from("\"");
    for c in value.chars() {
        if !push_escape(&mut out, c) {
            out.push(c);
        }
    }
    out.push('"');
    out
}

/// The backslash escapes double-quoted dotenv values and YAML scalars share;
/// `false` (nothing pushed) for any other character.
fn push_escape(out: &mut String, c: char) -> bool {
    let escaped = match c {
        '\\' => "\\\\",
        '"' => "\\\"",
        '\n' => "\\n",
        '\r' => "\\r",
        '\t' => "\\t",
        _ => return false,
    };
    out.push_str(escaped);
    true
}

/// A YAML double-quoted scalar: always a string (never read as a number,
/// boolean or null), with every character YAML does not allow raw escaped.
pub fn yaml_quote(value: &str) -> String {
    let mut out = String::from("\"");
    for c in value.chars() {
        if push_escape(&mut out, c) {
            continue;
        }
        // C0 and C1 controls, DEL, the BOM and the line/paragraph separators
        // are not printable in YAML.
        if c.is_control() || matches!(c, '\u{feff}' | '\u{2028}' | '\u{2029}') {
            let _ = write!(out, "\\u{:04x}", c as u32);
        } else {
            out.push(c);
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use credhost::Secret;

    use super::*;

    fn entries() -> Vec<CredentialEntry> {
        vec![
            CredentialEntry::plain("REGISTRY", "127.0.0.1:5000"),
            CredentialEntry::plain("ROOT", "/tmp/a dir/it's"),
            CredentialEntry::secret("TOKEN", Secret::new("a\"b'c\nd $HOME `x` \\")),
        ]
    }

    #[test]
    fn shell_lines_quote_everything() {
        let out = render(&entries(), true, &Format::Shell).unwrap();
        assert_eq!(
            out,
            "export REGISTRY='127.0.0.1:5000'\nexport ROOT='/tmp/a dir/it'\\''s'\nexport TOKEN='a\"b'\\''c\nd $HOME `x` \\'\n"
        );
        let redacted = render(&entries(), false, &Format::Shell).unwrap();
        assert!(redacted.ends_with("export TOKEN='<redacted>'\n"), "{redacted}");
        assert_eq!(redacted_count(&entries(), false), 1);
    }

    #[test]
    fn dotenv_quotes_only_when_needed() {
        let out = render(&entries(), true, &Format::Dotenv).unwrap();
        assert_eq!(out, "REGISTRY=127.0.0.1:5000\nROOT=\"/tmp/a dir/it's\"\nTOKEN=\"a\\\"b'c\\nd $HOME `x` \\\\\"\n");
        assert_eq!(dotenv_quote("a b"), "'a b'");
        assert_eq!(dotenv_quote(""), "");
    }

    #[test]
    fn bad_keys_are_refused() {
        let bad = vec![CredentialEntry::plain("1X", "v")];
        assert!(render(&bad, false, &Format::Shell).is_err());
        assert!(render(&bad, false, &Format::Dotenv).is_err());
        let bad = vec![CredentialEntry::plain("a b", "v")];
        let k8s = Format::K8sSecret { name: "s".into(), namespace: None, annotations: Vec::new() };
        assert!(render(&bad, false, &k8s).is_err());
    }

    #[test]
    fn k8s_secret_manifest() {
        let f = Format::K8sSecret {
            name: "build-creds".into(),
            namespace: Some("ci".into()),
            annotations: vec![("credhost.io/expires-at".into(), "2026-12-05T01:02:03Z".into())],
        };
        let out = render(&entries(), true, &f).unwrap();
        assert!(
            out.starts_with("apiVersion: v1\nkind: Secret\nmetadata:\n  name: \"build-creds\"\n  namespace: \"ci\"\n"),
            "{out}"
        );
        assert!(out.contains("stringData:\n  \"REGISTRY\": \"127.0.0.1:5000\"\n"), "{out}");
        assert!(
            out.contains("  annotations:\n    \"credhost.io/expires-at\": \"2026-12-05T01:02:03Z\"\n  labels:"),
            "{out}"
        );
        assert!(out.contains("  \"TOKEN\": \"a\\\"b'c\\nd $HOME `x` \\\\\"\n"), "{out}");
        for bad in ["Build", "-x", "x-", "", "a_b"] {
            let f = Format::K8sSecret { name: bad.into(), namespace: None, annotations: Vec::new() };
            assert!(render(&entries(), false, &f).is_err(), "{bad:?}");
        }
        let f = Format::K8sSecret { name: "x".into(), namespace: Some("a.b".into()), annotations: Vec::new() };
        assert!(render(&entries(), false, &f).is_err());
        assert_eq!(yaml_quote("\u{7f}\u{85}é"), "\"\\u007f\\u0085é\"");
    }
}
