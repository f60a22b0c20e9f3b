//! How fleet commands print the controller's JSON: `--output json` prints exactly what the
//! controller answered; tables are columns for lists and `label  value` rows for one object.

use serde::{Serialize, Serializer};
use serde_json::Value;

use crate::output::{Report, Table};

/// A JSON answer and its table form.
#[derive(Debug)]
pub struct Answer {
    /// What `--output json` prints.
    pub json: Value,
    /// What the table form prints, one line each.
    pub lines: Vec<String>,
}

impl Serialize for Answer {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.json.serialize(s)
    }
}

impl Report for Answer {
    fn table(&self) -> Table {
        // Rows with empty labels print just their value (see `Table::render`).
        let mut t = Table::new();
        for l in &self.lines {
            t.row("", l);
        }
        t
    }
}

/// A JSON value as a short cell: strings bare, null as `-`, objects as `k=v,...`.
pub fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".to_owned(),
        Value::String(s) if s.is_empty() => "-".to_owned(),
        Value::String(s) => s.clone(),
        Value::Object(m) if m.is_empty() => "-".to_owned(),
        Value::Object(m) => m
            .iter()
            .map(|(k, v)| format!("{k}={}", cell(v)))
            .collect::<Vec<_>>()
            .join(","),
        Value::Array(a) if a.is_empty() => "-".to_owned(),
        Value::Array(a) => a.iter().map(cell).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

/// Aligned columns: a header line, then one line per row; `empty` when there are no rows.
pub fn columns(headers: &[&str], rows: &[Vec<String>], empty: &str) -> Vec<String> {
    if rows.is_empty() {
        return vec![empty.to_owned()];
    }
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut s = String::new();
        for (c, w) in cells.zip(&widths) {
            s.push_str(&format!("{c:<w$}  "));
        }
        s.trim_end().to_owned()
    };
    let mut out = vec![line(&mut headers.iter().copied())];
    for r in rows {
        out.push(line(&mut r.iter().map(String::as_str)));
    }
    out
}

/// One object as `label  value` lines, keys in order; nested objects flattened with
/// dotted labels.
pub fn details(v: &Value) -> Vec<String> {
    let mut rows = Vec::new();
    flatten("", v, &mut rows);
    let width = rows
        .iter()
        .map(|(l, _)| l.chars().count())
        .max()
        .unwrap_or(0);
    rows.into_iter()
        .map(|(l, v)| format!("{l:<width$}  {v}").trim_end().to_owned())
        .collect()
}

fn flatten(prefix: &str, v: &Value, rows: &mut Vec<(String, String)>) {
    match v {
        Value::Object(m) if !m.is_empty() && (prefix.is_empty() || m.len() <= 8) => {
            for (k, v) in m {
                let label = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&label, v, rows);
            }
        }
        other => rows.push((prefix.to_owned(), cell(other))),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn columns_align_and_say_when_empty() {
        let rows = vec![
            vec!["dev-1".to_owned(), "idle".to_owned()],
            vec!["d2".to_owned(), "-".to_owned()],
        ];
        assert_eq!(
            columns(&["ID", "STATE"], &rows, "no devices"),
            ["ID     STATE", "dev-1  idle", "d2     -"]
        );
        assert_eq!(columns(&["ID"], &[], "no devices"), ["no devices"]);
    }

    #[test]
    fn details_flatten_nested_objects() {
        let v = json!({"id": "a", "running": {"version": "1.0.0", "slot": "a"}, "tags": {}});
        assert_eq!(
            details(&v),
            [
                "id               a",
                "running.slot     a",
                "running.version  1.0.0",
                "tags             -"
            ]
        );
    }
}
