//! Building statements with bind parameters: the one place that numbers placeholders and
//! writes comparisons of SYMBOL columns with values.
//!
//! Two facts of QuestDB (9.2) shape it, both checked against the server:
//! - It describes the placeholders of `col IN ($4, $5)` as a varchar *array* (`_varchar`),
//!   so binding Rust `String`s to them fails ("cannot convert between the Rust type String
//!   and the Postgres type _varchar").
//! - A cast placeholder (`station = $1::varchar`) is typed right but turns the comparison
//!   into a per-row string comparison: one series' hourly buckets over a year (210 M rows)
//!   took 8-11 s instead of 0.25-0.35 s with a bare `station = $1`, which QuestDB resolves to
//!   the symbol's key once (benches/questdb_year.rs).
//!
//! So a SYMBOL column is compared with a bare placeholder, and a list of values is written
//! as `(col = $4 OR col = $5)`, which QuestDB plans like an IN list of literals.

use tokio_postgres::types::ToSql;

/// Bind parameters of one statement, in placeholder order.
#[derive(Default)]
pub struct Args<'a> {
    values: Vec<&'a (dyn ToSql + Sync)>,
}

impl<'a> Args<'a> {
    pub fn new() -> Args<'a> {
        Args::default()
    }

    /// Adds a value; returns its placeholder (`$n`) to write into the statement.
    pub fn bind(&mut self, value: &'a (dyn ToSql + Sync)) -> String {
        self.values.push(value);
        format!("${}", self.values.len())
    }

    /// Adds a string value typed as varchar; returns `$n::varchar`.
    pub fn bind_varchar(&mut self, value: &'a (dyn ToSql + Sync)) -> String {
        format!("{}::varchar", self.bind(value))
    }

    /// `column = $n` for a SYMBOL `column` (a bare placeholder: see the module's doc).
    pub fn symbol_eq(&mut self, column: &str, value: &'a (dyn ToSql + Sync)) -> String {
        format!("{column} = {}", self.bind(value))
    }

    /// `(column = $n OR column = $m ...)` for a SYMBOL `column`, each value a bind parameter:
    /// what `column IN (...)` means, in the form QuestDB binds and plans well. An empty list
    /// matches nothing (`false`), as SQL's empty IN would if it were allowed.
    pub fn in_list(&mut self, column: &str, values: &'a [String]) -> String {
        if values.is_empty() {
            return "false".to_owned();
        }
        let list: Vec<String> = values.iter().map(|v| self.symbol_eq(column, v)).collect();
        format!("({})", list.join(" OR "))
    }

    /// The values, for `Client::query`.
    pub fn values(&self) -> &[&'a (dyn ToSql + Sync)] {
        &self.values
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbol_lists_are_ors_of_bare_placeholders_numbered_after_earlier_parameters() {
        let station = "S".to_owned();
        let params = vec!["COD".to_owned(), "pH".to_owned()];
        let mut args = Args::new();
        assert_eq!(args.symbol_eq("station", &station), "station = $1");
        assert_eq!(args.in_list("param", &params), "(param = $2 OR param = $3)");
        assert_eq!(args.bind_varchar(&station), "$4::varchar");
        assert_eq!(args.values().len(), 4);
        assert_eq!(args.in_list("param", &[]), "false");
    }
}
