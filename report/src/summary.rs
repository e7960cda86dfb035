//! `summary.json` as `scripts/compare` writes it, read loosely: a missing figure draws as 0
//! and a missing name as `?`, so that summaries from older versions of the script still
//! draw. Only a summary with no scenarios or no engines is refused.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::Value;

/// A summary and the directory its relative file names (`median_run_hgrm`) start from.
#[derive(Debug)]
pub struct Summary {
    /// The whole document.
    pub json: Value,
    /// Where the summary lies; the plots are written there too.
    pub dir: PathBuf,
}

impl Summary {
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let json = serde_json::from_slice(&bytes).context("summary.json is not valid JSON")?;
        let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        Ok(Summary { json, dir })
    }

    pub fn scenarios(&self) -> anyhow::Result<&[Value]> {
        let list = self.json["scenarios"].as_array();
        Ok(list.context("summary.json has no scenarios")?.as_slice())
    }

    /// Every row of any scenario in the order they are drawn: the engines as listed, then
    /// the rows only some scenarios have (references such as nginx) as they first appear.
    pub fn rows(&self) -> anyhow::Result<Vec<String>> {
        let mut rows = names(&self.json["engines"]);
        if rows.is_empty() {
            anyhow::bail!("summary.json has no engines");
        }
        for sc in self.scenarios()? {
            for row in names(&sc["rows"]) {
                if !rows.contains(&row) {
                    rows.push(row);
                }
            }
        }
        Ok(rows)
    }

    /// The engine the ratios are taken of (`uring` in summaries that do not say).
    pub fn subject(&self) -> &str {
        self.json["subject"].as_str().unwrap_or("uring")
    }
}

/// The strings of a JSON array; anything else in it is skipped.
fn names(v: &Value) -> Vec<String> {
    let list = v.as_array().map(Vec::as_slice).unwrap_or_default();
    list.iter()
        .filter_map(|e| e.as_str().map(String::from))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(json: Value) -> Summary {
        Summary {
            json,
            dir: PathBuf::from("."),
        }
    }

    #[test]
    fn rows_are_the_engines_then_references_in_first_seen_order() {
        let s = summary(serde_json::json!({
            "engines": ["uring", "epoll"],
            "scenarios": [
                {"name": "a", "rows": ["uring", "epoll", "nginx"]},
                {"name": "b", "rows": ["haproxy", "uring", "nginx"]},
            ],
        }));
        assert_eq!(s.rows().unwrap(), ["uring", "epoll", "nginx", "haproxy"]);
        assert_eq!(s.subject(), "uring");
    }

    #[test]
    fn a_summary_without_engines_or_scenarios_is_refused() {
        let no_engines = summary(serde_json::json!({"engines": [], "scenarios": []}));
        assert!(no_engines
            .rows()
            .unwrap_err()
            .to_string()
            .contains("no engines"));
        let no_scenarios = summary(serde_json::json!({"engines": ["uring"]}));
        assert!(no_scenarios
            .rows()
            .unwrap_err()
            .to_string()
            .contains("no scenarios"));
    }
}
