//! The configuration file as text: its TOML read with positions, so that
//! every error can say on which line it is.
//!
//! The document is parsed once into `toml`'s spanned tables. Syntax errors
//! are all reported where the parser can recover; the shape (unknown keys,
//! wrong types, missing keys) is checked one section at a time so that a
//! mistake in one does not hide the mistakes in the others; and a
//! validation error's field path (`grant[2].queues[0]`) is looked up in
//! the same tables to find its line.

use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeTable, DeValue, Deserializer};

use super::{ConfigFile, Problem};

/// A parsed document and its text.
pub struct Source<'t> {
    text: &'t str,
    root: Spanned<DeTable<'t>>,
}

impl<'t> Source<'t> {
    /// Parses `text`.
    ///
    /// # Errors
    ///
    /// Every syntax error found, in file order.
    pub fn parse(text: &'t str) -> Result<Self, Vec<Problem>> {
        let (root, errors) = DeTable::parse_recoverable(text);
        if errors.is_empty() {
            return Ok(Source { text, root });
        }
        let source = Source { text, root };
        Err(sorted(errors.iter().map(|e| source.problem(e)).collect()))
    }

    /// The document as a [`ConfigFile`].
    ///
    /// # Errors
    ///
    /// One problem per top-level key, or per table of an array of tables
    /// (`[[grant]]`), that has the wrong shape; within one of those, the
    /// first only (serde stops there).
    pub fn config(&self) -> Result<ConfigFile, Vec<Problem>> {
        // TODO: within one table only the first shape error is reported
        // (serde stops there, and keys are seen in sorted order, not file
        // order); reporting all needs a walk of the tables against the
        // schema by hand, which would duplicate the serde derives.
        let whole = self.root.span();
        let mut problems = Vec::new();
        for (key, value) in self.root.get_ref().iter() {
            let parts: Vec<Spanned<DeValue<'t>>> = match value.get_ref() {
                DeValue::Array(items) if items.len() > 1 => items
                    .iter()
                    .map(|item| {
                        let one = std::iter::once(item.clone()).collect();
                        Spanned::new(value.span(), DeValue::Array(one))
                    })
                    .collect(),
                _ => vec![value.clone()],
            };
            for part in parts {
                let mut alone = DeTable::new();
                alone.insert(key.clone(), part);
                if let Err(e) = read(Spanned::new(whole.clone(), alone)) {
                    problems.push(self.problem(&e));
                }
            }
        }
        if !problems.is_empty() {
            return Err(sorted(problems));
        }
        read(self.root.clone()).map_err(|e| vec![self.problem(&e)])
    }

    /// The line on which `field` (a path such as `grant[2].queues[0]` or
    /// `listener[0].tls.cert_file`) is written; when it is not, the line
    /// of the nearest enclosing key or table that is; none when not even
    /// its top-level key is in the file.
    pub fn line_of(&self, field: &str) -> Option<usize> {
        let mut at = None;
        let mut table = Some(self.root.get_ref());
        'path: for segment in field.split('.') {
            let mut parts = segment.split('[');
            let name = parts.next().unwrap_or_default();
            let Some((key, mut value)) =
                table.and_then(|t| t.iter().find(|(k, _)| k.get_ref() == name))
            else {
                break;
            };
            at = Some(key.span().start);
            for index in parts {
                let item = index
                    .strip_suffix(']')
                    .and_then(|n| n.parse::<usize>().ok())
                    .and_then(|n| value.get_ref().as_array()?.get(n));
                let Some(item) = item else {
                    break 'path;
                };
                value = item;
                at = Some(item.span().start);
            }
            table = value.get_ref().as_table();
        }
        at.map(|offset| self.position(offset).0)
    }

    /// 1-based line and column (in characters) of a byte offset.
    fn position(&self, offset: usize) -> (usize, usize) {
        let offset = floor_char_boundary(self.text, offset.min(self.text.len()));
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let start = before.rfind('\n').map_or(0, |i| i + 1);
        (line, before[start..].chars().count() + 1)
    }

    /// A syntax or shape error as a problem, with the line it is on.
    fn problem(&self, e: &toml::de::Error) -> Problem {
        let reason = e.message().trim_end().replace('\n', "; ");
        let Some(span) = e.span() else {
            return Problem {
                line: None,
                column: None,
                field: None,
                reason,
                snippet: None,
            };
        };
        let (line, column) = self.position(span.start);
        Problem {
            line: Some(line),
            column: Some(column),
            field: None,
            reason,
            snippet: Some(self.snippet(line, column, span)),
        }
    }

    /// The line `line`, and a row of carets under the span on it.
    fn snippet(&self, line: usize, column: usize, span: Range<usize>) -> String {
        let content = self
            .text
            .split('\n')
            .nth(line - 1)
            .unwrap_or_default()
            .trim_end_matches('\r');
        let shown_len = content.chars().count();
        let span_len = self.text.get(span).map_or(1, |s| {
            s.split('\n').next().unwrap_or_default().chars().count()
        });
        let carets = span_len.clamp(1, (shown_len + 1).saturating_sub(column - 1).max(1));
        let gutter = line.to_string().len();
        format!(
            "{:gutter$} | {content}\n{:gutter$} | {:pad$}{}",
            line,
            "",
            "",
            "^".repeat(carets),
            pad = column - 1
        )
    }
}

fn read(table: Spanned<DeTable<'_>>) -> Result<ConfigFile, toml::de::Error> {
    ConfigFile::deserialize(Deserializer::from(table))
}

/// In file order, each once.
fn sorted(mut problems: Vec<Problem>) -> Vec<Problem> {
    problems.sort_by_key(|p| (p.line, p.column));
    problems.dedup();
    problems
}

fn floor_char_boundary(text: &str, mut offset: usize) -> usize {
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    offset
}
