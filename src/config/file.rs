//! The configuration file (`--config FILE`, TOML): every command-line option is a key named
//! after its long flag (`idle-timeout = "30s"`; `idle_timeout` too), read generically from
//! the clap command so that no option can lack one. The file is turned into the command-line
//! words it stands for and parsed by the same parser, then the flags actually given on the
//! command line override it. `[[upstream]]` tables are the structured form of `--upstream`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgAction, CommandFactory, FromArgMatches};
use sha2::{Digest, Sha256};

use super::cli::Args;

/// Keys that have no place in a file: where the file is, and what only a terminal asks.
const NOT_IN_A_FILE: [&str; 3] = ["config", "help", "version"];

/// Command-line words by argument id, one entry per key of a file.
pub type Words = Vec<(String, Vec<String>)>;

/// A configuration file as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileInfo {
    /// Where it is.
    pub path: PathBuf,
    /// SHA-256 of its bytes, in hex.
    pub sha256: String,
}

/// One `[[upstream]]` table.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct UpstreamTable {
    addr: String,
    weight: Option<u32>,
    #[serde(default)]
    backup: bool,
    #[serde(alias = "max_connections", alias = "max-conns")]
    max_connections: Option<u64>,
}

/// The arguments of command line `argv` (`argv[0]` first) with the file it names under
/// `--config` read in, if any; every problem found, one line each, naming its key.
pub fn resolve(argv: &[OsString]) -> Result<(Args, Option<FileInfo>), Vec<String>> {
    let cli = Args::try_parse_words(argv).map_err(|e| vec![e])?;
    let Some(path) = cli.config.clone() else {
        return Ok((cli, None));
    };
    let (words, info) = read(&path)?;
    let matches = Args::command()
        .try_get_matches_from(argv)
        .map_err(|e| vec![first_line(&e)])?;
    let given: Vec<String> = matches
        .ids()
        .filter(|id| matches.value_source(id.as_str()) == Some(ValueSource::CommandLine))
        .map(|id| id.to_string())
        .collect();
    let mut merged: Vec<OsString> = argv.iter().take(1).cloned().collect();
    for (id, w) in words {
        if !given.contains(&id) {
            merged.extend(w.into_iter().map(OsString::from));
        }
    }
    merged.extend(argv.iter().skip(1).cloned());
    let args = Args::try_parse_words(&merged).map_err(|e| vec![e])?;
    Ok((args, Some(info)))
}

/// Checks the file at `path` as `ringd --config FILE` would use it (`--engine auto`
/// resolved by `pick`), without starting anything; every problem, one line each.
pub fn check(path: &Path, pick: super::cli::PickEngine) -> Result<(), Vec<String>> {
    let argv = [
        "ringd".into(),
        "--config".into(),
        path.as_os_str().to_owned(),
    ];
    let (args, _) = resolve(&argv)?;
    args.into_config(pick).map(drop).map_err(|e| vec![e])
}

/// The command-line words of the file at `path`, by argument id, and what it is.
pub fn read(path: &Path) -> Result<(Words, FileInfo), Vec<String>> {
    let bytes =
        std::fs::read(path).map_err(|e| vec![format!("cannot read {}: {e}", path.display())])?;
    let info = FileInfo {
        path: path.to_path_buf(),
        sha256: Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
    };
    let text = String::from_utf8(bytes)
        .map_err(|_| vec![format!("{}: not UTF-8 text", path.display())])?;
    Ok((words(&text)?, info))
}

/// The command-line words of a file's text, by argument id; every problem, one line each.
pub fn words(text: &str) -> Result<Words, Vec<String>> {
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| vec![toml_error(text, &e)])?;
    let cmd = Args::command();
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for (key, value) in &table {
        let name = key.replace('_', "-");
        let arg = cmd.get_arguments().find(|a| {
            a.get_long() == Some(name.as_str()) && !NOT_IN_A_FILE.contains(&name.as_str())
        });
        let Some(arg) = arg else {
            problems.push(unknown(key, &cmd));
            continue;
        };
        let flag = format!("--{name}");
        let checked = match (arg.get_action(), value) {
            (ArgAction::SetTrue, toml::Value::Boolean(b)) => {
                Ok(if *b { vec![flag] } else { vec![] })
            }
            (ArgAction::SetTrue, _) => Err("expected true or false".to_string()),
            (ArgAction::Append, toml::Value::Array(items)) => items
                .iter()
                .map(|v| scalar(&name, v).map(|s| [flag.clone(), s]))
                .collect::<Result<Vec<_>, _>>()
                .map(|pairs| pairs.concat()),
            (_, v) => scalar(&name, v).map(|s| vec![flag, s]),
        };
        // Each key alone through the parser, so that a bad value is reported with its key.
        let parsed = checked.and_then(|w| {
            let mut argv = vec!["ringd".to_string()];
            argv.extend(w.iter().cloned());
            Args::command()
                .try_get_matches_from(&argv)
                .map(|_| w)
                .map_err(|e| first_line(&e))
        });
        match parsed {
            Ok(w) => out.push((arg.get_id().to_string(), w)),
            Err(e) => problems.push(format!("{key}: {e}")),
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

/// A TOML error in one line: where, and what.
fn toml_error(text: &str, e: &toml::de::Error) -> String {
    let what = e.message().trim().replace('\n', " ");
    match e.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!("line {line}: {what}")
        }
        None => what,
    }
}

/// One value as a command-line word (an `[[upstream]]` table in its string form).
fn scalar(name: &str, v: &toml::Value) -> Result<String, String> {
    match v {
        toml::Value::String(s) => Ok(s.clone()),
        toml::Value::Integer(i) => Ok(i.to_string()),
        toml::Value::Float(f) => Ok(f.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        toml::Value::Table(t) if name == "upstream" => {
            let u: UpstreamTable = t
                .clone()
                .try_into()
                .map_err(|e: toml::de::Error| e.message().trim().replace('\n', " "))?;
            let mut s = u.addr;
            if let Some(w) = u.weight {
                s += &format!(",weight={w}");
            }
            if u.backup {
                s += ",backup";
            }
            if let Some(m) = u.max_connections {
                s += &format!(",max-conns={m}");
            }
            Ok(s)
        }
        toml::Value::Array(_) => Err("takes one value, not a list".into()),
        _ => Err("expected a string, a number or true/false".into()),
    }
}

/// The line for an unknown key, with the closest known one if it is close.
fn unknown(key: &str, cmd: &clap::Command) -> String {
    let name = key.replace('_', "-");
    let best = cmd
        .get_arguments()
        .filter_map(|a| a.get_long())
        .filter(|l| !NOT_IN_A_FILE.contains(l))
        .map(|l| (strsim::jaro_winkler(&name, l), l))
        .max_by(|a, b| a.0.total_cmp(&b.0));
    match best {
        Some((score, l)) if score >= 0.8 => format!("{key}: unknown key (did you mean {l}?)"),
        _ => format!("{key}: unknown key"),
    }
}

/// The first line of a clap error, without its `error: ` prefix.
pub fn first_line(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let line = text.lines().next().unwrap_or("invalid arguments");
    line.strip_prefix("error: ").unwrap_or(line).to_string()
}

impl Args {
    /// Parses `argv` (`argv[0]` first) without exiting on an error.
    pub fn try_parse_words(argv: &[OsString]) -> Result<Args, String> {
        let matches = Args::command()
            .try_get_matches_from(argv)
            .map_err(|e| first_line(&e))?;
        Args::from_arg_matches(&matches).map_err(|e| first_line(&e))
    }
}

#[cfg(test)]
mod tests;
