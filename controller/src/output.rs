//! How commands print what they did: aligned `label  value` lines for people, or one JSON
//! object for scripts (`--output json`). Every report is a serializable struct that renders
//! both ways, so the two never disagree.

use std::io::Write;

use serde::Serialize;

use crate::error::Error;

/// The output format of every command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum OutputFormat {
    /// Aligned human-readable text.
    #[default]
    Table,
    /// One pretty-printed JSON object.
    Json,
}

/// Rows of `label  value`, the labels padded to one width. A row with an empty label continues
/// the one above (a list of key ids, one per line).
#[derive(Debug, Default)]
pub struct Table {
    rows: Vec<(String, String)>,
}

impl Table {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a row.
    pub fn row(&mut self, label: impl Into<String>, value: impl ToString) -> &mut Self {
        self.rows.push((label.into(), value.to_string()));
        self
    }

    /// Adds `label` with the first of `values`, and the rest on continuation rows; `empty` if
    /// there are none.
    pub fn list<I>(&mut self, label: impl Into<String>, values: I, empty: &str) -> &mut Self
    where
        I: IntoIterator,
        I::Item: ToString,
    {
        let mut label = Some(label.into());
        for v in values {
            self.rows
                .push((label.take().unwrap_or_default(), v.to_string()));
        }
        if let Some(label) = label {
            self.rows.push((label, empty.to_owned()));
        }
        self
    }

    /// The table as text, one row per line.
    pub fn render(&self) -> String {
        let width = self
            .rows
            .iter()
            .map(|(l, _)| l.chars().count())
            .max()
            .unwrap_or(0);
        let mut out = String::new();
        for (label, value) in &self.rows {
            let line = if width == 0 {
                value.clone()
            } else {
                format!("{label:<width$}  {value}")
            };
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// A command's result, printable either way.
pub trait Report: Serialize {
    /// The human-readable form.
    fn table(&self) -> Table;
}

/// Prints `report` to `out` in `format`.
pub fn emit(out: &mut dyn Write, format: OutputFormat, report: &impl Report) -> Result<(), Error> {
    let text = match format {
        OutputFormat::Table => report.table().render(),
        OutputFormat::Json => {
            // Serializing these plain structs cannot fail; if it ever did, say so rather than
            // print nothing.
            let mut s = serde_json::to_string_pretty(report).map_err(|e| {
                Error::Output(std::io::Error::other(format!("cannot encode JSON: {e}")))
            })?;
            s.push('\n');
            s
        }
    };
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(Error::Output)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligns_labels_and_continues_lists() {
        let mut t = Table::new();
        t.row("name", "gateway-os")
            .list("hardware", ["a", "b"], "none")
            .list("keys", [""; 0], "-");
        assert_eq!(
            t.render(),
            "name      gateway-os\nhardware  a\n          b\nkeys      -\n"
        );
    }
}
