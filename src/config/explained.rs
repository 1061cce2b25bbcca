//! Configuration errors in the operator's terms: the key's full path
//! (`issuers[0].leeway_secs`), what was expected said as TOML says it ("a non-negative
//! integer", not `usize`), what was found, the line, and for an unknown key the nearest
//! known one.

use std::fmt;

use super::FileConfig;

/// A configuration text that does not deserialize, explained.
#[derive(Debug)]
pub struct Explained {
    /// The key path, as written in the file (`issuers[0].leeway_secs`); empty at the top.
    pub path: String,
    pub message: String,
    /// 1-based line of the offending text, where known.
    pub line: Option<usize>,
}

impl Explained {
    /// The explanation without its line (which means nothing in a merged text).
    pub fn without_line(&self) -> String {
        if self.path.is_empty() {
            self.message.clone()
        } else {
            format!("{}: {}", self.path, self.message)
        }
    }
}

impl fmt::Display for Explained {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.without_line())?;
        if let Some(line) = self.line {
            write!(f, " (line {line})")?;
        }
        Ok(())
    }
}

pub fn deserialize(text: &str) -> Result<FileConfig, Explained> {
    let deserializer = toml::Deserializer::parse(text).map_err(|error| syntax(text, &error))?;
    serde_path_to_error::deserialize(deserializer).map_err(|error| {
        let inner = error.inner();
        let mut path = error.path().to_string();
        if path == "." {
            path.clear();
        }
        let (path, mut message) = explain(path, inner.message());
        // What was found in a secret's (or URL's) place is not repeated.
        if super::holds_secret_or_url(last_key(&path))
            && let Some((expected, _found)) = message.split_once(", got ")
        {
            message = expected.to_owned();
        }
        Explained {
            path,
            message,
            line: inner.span().map(|span| line_of(text, span.start)),
        }
    })
}

/// `text` as a TOML table; a syntax error says its message and line, never the text.
pub fn parse_table(text: &str) -> Result<toml::Table, Explained> {
    toml::from_str(text).map_err(|error: toml::de::Error| syntax(text, &error))
}

/// A syntax error by its message and line; on the line of a secret (or a URL), without
/// the message, which may quote the value.
fn syntax(text: &str, error: &toml::de::Error) -> Explained {
    let line = error.span().map(|span| line_of(text, span.start));
    let key = line
        .and_then(|line| text.lines().nth(line.saturating_sub(1)))
        .and_then(|line| line.split_once('='))
        .map(|(key, _)| key.trim().trim_matches('"'));
    let message = match key {
        Some(key) if super::holds_secret_or_url(last_key(key)) => {
            format!("{key}: not a valid TOML value")
        }
        _ => error.message().to_owned(),
    };
    Explained {
        path: String::new(),
        message,
        line,
    }
}

/// The last key of a path (`issuers[0].hmac_secret` → `hmac_secret`).
fn last_key(path: &str) -> &str {
    let last = path.rsplit('.').next().unwrap_or(path);
    last.split('[').next().unwrap_or(last)
}

/// Whether an override's segments (`["issuers", "0", "leeway_secs"]`) name `path`.
pub fn same_path(segments: &[String], path: &str) -> bool {
    let mut rendered = String::new();
    for segment in segments {
        if segment.parse::<usize>().is_ok() {
            rendered.push_str(&format!("[{segment}]"));
        } else {
            if !rendered.is_empty() {
                rendered.push('.');
            }
            rendered.push_str(segment);
        }
    }
    rendered == path
        || path.starts_with(&format!("{rendered}."))
        || path.starts_with(&format!("{rendered}["))
}

fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset)
        .map_or(0, |before| before.matches('\n').count())
        + 1
}

/// serde's message, said in TOML's terms; the path may change (an unknown key's own
/// name is not part of the path of the table it is in).
fn explain(path: String, message: &str) -> (String, String) {
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = message.strip_prefix(prefix)
            && let Some((found, expected)) = rest.split_once(", expected ")
        {
            let said = format!(
                "expected {}, got {}",
                expected_in_toml(expected),
                found_in_toml(found)
            );
            return (path, said);
        }
    }
    for (prefix, what) in [("unknown field `", "key"), ("unknown variant `", "value")] {
        if let Some(rest) = message.strip_prefix(prefix)
            && let Some((name, known)) = rest.split_once('`')
        {
            let known: Vec<&str> = known.split('`').skip(1).step_by(2).collect();
            let message = match nearest(name, &known) {
                Some(near) => format!("unknown {what} {name:?}, did you mean {near:?}?"),
                None if known.is_empty() => format!("unknown {what} {name:?}"),
                None => format!(
                    "unknown {what} {name:?}; expected one of: {}",
                    known.join(", ")
                ),
            };
            // serde puts an unknown key's own name at the end of the path.
            let parent = match path.rsplit_once('.') {
                Some((parent, last)) if last == name => parent.to_owned(),
                _ if path == name => String::new(),
                _ => path,
            };
            return (parent, message);
        }
    }
    if let Some(rest) = message.strip_prefix("missing field `")
        && let Some(name) = rest.strip_suffix('`')
    {
        return (path, format!("{name} is required"));
    }
    (path, message.trim().to_owned())
}

fn expected_in_toml(expected: &str) -> String {
    match expected {
        "u8" | "u16" | "u32" | "u64" | "u128" | "usize" => "a non-negative integer".into(),
        "i8" | "i16" | "i32" | "i64" | "i128" | "isize" => "an integer".into(),
        "f32" | "f64" => "a number".into(),
        "a sequence" => "a list".into(),
        "a map" => "a table".into(),
        other if other.starts_with("struct ") => "a table".into(),
        other if other.starts_with("a boolean") || other.starts_with("a string") => other.into(),
        other => other
            .trim_start_matches("an ")
            .trim_start_matches("a ")
            .to_owned(),
    }
}

fn found_in_toml(found: &str) -> String {
    for kind in ["string ", "integer ", "floating point ", "boolean "] {
        if let Some(value) = found.strip_prefix(kind) {
            return value.trim_matches('`').to_owned();
        }
    }
    match found {
        "sequence" => "a list".into(),
        "map" => "a table".into(),
        other => other.to_owned(),
    }
}

/// The known name closest to `name`, if it is close enough to be a typo.
fn nearest<'a>(name: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .map(|candidate| (edit_distance(name, candidate), *candidate))
        .filter(|(distance, candidate)| *distance <= (candidate.len() / 3).clamp(2, 3))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        previous = current;
    }
    previous[b.len()]
}
