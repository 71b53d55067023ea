//! Reading the configuration: the TOML parsed section by section, each problem
//! located (file, line, column, dotted key), the members file, and the deserializers
//! for durations and D-H group names.

use super::*;

/// The parse of a whole configuration: every problem, each with its place in the text
/// for ordering.
pub(super) fn parse_named(text: &str, label: &str) -> Result<Config, Vec<String>> {
    let (doc, errors) = DeTable::parse_recoverable(text);
    if !errors.is_empty() {
        return Err(errors.iter().map(|e| toml_problem(label, text, None, e)).collect());
    }
    let root = doc.get_ref();
    let mut problems: Vec<(usize, String)> = Vec::new();
    for (key, _) in root {
        if !SECTIONS.contains(&key.get_ref().as_ref()) {
            let at = key.span().start;
            problems.push((
                at,
                format!(
                    "{label}: {}: unknown key `{}` at the top level (expected one of {})",
                    line_column(text, at),
                    key.get_ref(),
                    SECTIONS.join(", ")
                ),
            ));
        }
    }
    let mut parser = SectionParser { label, text, root, problems };
    let node = parser.required::<Node>("node", "this node's name and addresses");
    let pki = parser.required::<Pki>("pki", "ca, cert and key");
    let spa = parser.optional::<Spa>("spa");
    let ike = parser.optional::<Ike>("ike");
    let mesh = parser.optional::<Mesh>("mesh");
    let daemon = parser.optional::<Daemon>("daemon");
    let mut problems = parser.problems;
    match (node, pki, spa, ike, mesh, daemon) {
        (Some(node), Some(pki), Some(spa), Some(ike), Some(mesh), Some(daemon))
            if problems.is_empty() =>
        {
            Ok(Config { node, pki, spa, ike, mesh, daemon })
        }
        _ => {
            problems.sort_by_key(|(at, _)| *at);
            Err(problems.into_iter().map(|(_, line)| line).collect())
        }
    }
}

/// Deserializes the top-level tables one by one, so that a problem in one does not hide
/// those of the others.
struct SectionParser<'a, 'i> {
    label: &'a str,
    text: &'a str,
    root: &'a DeTable<'i>,
    problems: Vec<(usize, String)>,
}

impl<'i> SectionParser<'_, 'i> {
    /// The table `name`: `Ok(None)` if absent, `Err` (with the problem recorded) if bad.
    fn section<T: DeserializeOwned>(&mut self, name: &str) -> Result<Option<T>, ()> {
        let Some((_, value)) = self.root.iter().find(|(k, _)| k.get_ref() == name) else {
            return Ok(None);
        };
        let value: Spanned<DeValue<'i>> = value.clone();
        T::deserialize(toml::de::ValueDeserializer::from(value)).map(Some).map_err(|e| {
            let at = e.span().map_or(0, |s| s.start);
            self.problems.push((at, toml_problem(self.label, self.text, Some(self.root), &e)));
        })
    }

    fn required<T: DeserializeOwned>(&mut self, name: &str, what: &str) -> Option<T> {
        match self.section(name) {
            Ok(Some(value)) => Some(value),
            Ok(None) => {
                self.problems.push((
                    self.text.len(),
                    format!("{}: missing table [{name}]: add it, with {what}", self.label),
                ));
                None
            }
            Err(()) => None,
        }
    }

    fn optional<T: DeserializeOwned + Default>(&mut self, name: &str) -> Option<T> {
        match self.section(name) {
            Ok(value) => Some(value.unwrap_or_default()),
            Err(()) => None,
        }
    }
}

/// Reads and parses a members file: its members, or the first problem.
pub(super) fn read_members_file(path: &Path) -> Result<Vec<Member>, String> {
    let key = format!("mesh.members_file {}", path.display());
    let mut problems = Vec::new();
    if !absolute("mesh.members_file", path, &mut problems) {
        return Err(problems.swap_remove(0));
    }
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::InvalidData => {
            return Err(format!("{key}: not UTF-8 text: save it as UTF-8"));
        }
        Err(e) => return Err(file_problem("mesh.members_file", path, &e)),
    };
    let (doc, errors) = DeTable::parse_recoverable(&text);
    if let Some(e) = errors.first() {
        return Err(toml_problem(&key, &text, None, e));
    }
    MembersFile::deserialize(toml::de::Deserializer::from(doc.clone()))
        .map(|file| file.members)
        .map_err(|e| toml_problem(&key, &text, Some(doc.get_ref()), &e))
}

/// One step of the path to a value in a TOML document.
enum Step {
    Key(String),
    Index,
}

/// The path to what is at byte `at`: the deepest key or value whose span holds it.
fn path_at(root: &DeTable<'_>, at: usize) -> Vec<Step> {
    fn holds(span: &Range<usize>, at: usize) -> bool {
        span.start <= at && at < span.end.max(span.start + 1)
    }
    fn in_table(table: &DeTable<'_>, at: usize, path: &mut Vec<Step>) -> bool {
        for (key, value) in table {
            path.push(Step::Key(key.get_ref().to_string()));
            if holds(&key.span(), at) || in_value(value, at, path) {
                return true;
            }
            path.pop();
        }
        false
    }
    fn in_value(value: &Spanned<DeValue<'_>>, at: usize, path: &mut Vec<Step>) -> bool {
        match value.get_ref() {
            DeValue::Table(table) if in_table(table, at, path) => return true,
            DeValue::Array(array) => {
                for item in array {
                    path.push(Step::Index);
                    if in_value(item, at, path) {
                        return true;
                    }
                    path.pop();
                }
            }
            _ => {}
        }
        holds(&value.span(), at)
    }
    let mut path = Vec::new();
    if !in_table(root, at, &mut path) {
        path.clear();
    }
    path
}

/// The dotted key of a path: `mesh.members.addresses` (array positions left out: the
/// line and column say which).
fn dotted(path: &[Step]) -> String {
    let keys: Vec<&str> = path
        .iter()
        .filter_map(|s| match s {
            Step::Key(k) => Some(k.as_str()),
            Step::Index => None,
        })
        .collect();
    keys.join(".")
}

/// The table a path names, as its header is written: `[node]`, `[[mesh.members]]`.
fn table_name(path: &[Step]) -> String {
    match path.last() {
        None => "the top level".into(),
        Some(Step::Index) => format!("[[{}]]", dotted(path)),
        Some(Step::Key(_)) => format!("[{}]", dotted(path)),
    }
}

/// serde's list of expected names (`` `a` or `b` ``, `` one of `a`, `b`, `c` ``) as a
/// plain one: `a, b, c`.
fn plain_list(expected: &str) -> String {
    expected.trim_start_matches("one of ").replace('`', "").replace(" or ", ", ")
}

/// A TOML or deserialization error as one line: `LABEL: line L, column C: message`,
/// the message naming the key and saying what to do where it can.
fn toml_problem(
    label: &str,
    text: &str,
    root: Option<&DeTable<'_>>,
    error: &toml::de::Error,
) -> String {
    let message = one_line(error.message().to_owned());
    let Some(span) = error.span() else { return format!("{label}: {message}") };
    let place = line_column(text, span.start);
    let path = root.map(|root| path_at(root, span.start)).unwrap_or_default();
    let key = dotted(&path);
    let written = text.get(span.clone()).unwrap_or_default().trim().trim_matches(['"', '\'']);
    let message = if let Some(rest) = message.strip_prefix("unknown field `") {
        let (name, expected) = rest.split_once('`').unwrap_or((rest, ""));
        let table = match path.last() {
            Some(Step::Key(k)) if k == name => table_name(&path[..path.len() - 1]),
            _ => table_name(&path),
        };
        match expected.strip_prefix(", expected ") {
            Some(list) => {
                format!("unknown key `{name}` in {table} (expected one of {})", plain_list(list))
            }
            None => format!("unknown key `{name}` in {table} (it takes no keys)"),
        }
    } else if let Some(rest) = message.strip_prefix("missing field `") {
        let name = rest.trim_end_matches('`');
        format!("missing key `{name}` in {}: add it", table_name(&path))
    } else if let Some(rest) = message.strip_prefix("unknown variant `") {
        let (value, expected) = rest.split_once('`').unwrap_or((rest, ""));
        let list = plain_list(expected.trim_start_matches(", expected "));
        format!("{key}: {value:?} is not one of {list}")
    } else if message == "invalid IP address syntax" {
        format!("{key}: {written:?} is not an IP address")
    } else if key.is_empty() {
        message
    } else {
        format!("{key}: {message}")
    };
    format!("{label}: {place}: {message}")
}

/// `line L, column C` of byte `at`, both from 1, columns in characters.
fn line_column(text: &str, at: usize) -> String {
    let at = at.min(text.len());
    let before = text.get(..at).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    format!("line {line}, column {column}")
}

/// A humantime duration: `"30s"`, `"4h"`, `"1h 30m"`.
pub(super) fn duration<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Duration, D::Error> {
    let text = String::deserialize(deserializer)?;
    humantime::parse_duration(&text).map_err(|e| {
        D::Error::custom(format!(
            "{text:?} is not a duration ({e}): write it like \"30s\", \"4h\" or \"1h30m\""
        ))
    })
}

/// One D-H group by name, for [`dh_groups`].
struct GroupName(Group);

impl<'de> Deserialize<'de> for GroupName {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        match name.to_ascii_lowercase().as_str() {
            "x25519" | "curve25519" => Ok(GroupName(Group::Curve25519)),
            "ecp256" => Ok(GroupName(Group::Ecp256)),
            "modp2048" => Ok(GroupName(Group::Modp2048)),
            _ => Err(D::Error::custom(format!(
                "unknown group {name:?}: say x25519, ecp256 or modp2048"
            ))),
        }
    }
}

pub(super) fn dh_groups<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<Group>, D::Error> {
    // Each name on its own, so that an error points at the name.
    let names = Vec::<GroupName>::deserialize(deserializer)?;
    Ok(names.into_iter().map(|g| g.0).collect())
}
