//! Building statements with bind parameters: the one place that numbers placeholders and
//! writes `IN` lists.
//!
//! QuestDB describes the placeholders of `col IN ($4, $5)` as a varchar *array* (`_varchar`),
//! so binding Rust `String`s to them fails ("cannot convert between the Rust type String and
//! the Postgres type _varchar"). Cast each placeholder (`$4::varchar`) and QuestDB types it
//! as one varchar, which compares with a SYMBOL column as expected. Checked against QuestDB
//! 9.2 by the storage suite (`tests/storage_questdb.rs`).

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

    /// `column IN ($n::varchar, ...)` for `values`, each value a bind parameter. An empty
    /// list matches nothing (`false`), as SQL's empty IN would if it were allowed.
    pub fn in_list(&mut self, column: &str, values: &'a [String]) -> String {
        if values.is_empty() {
            return "false".to_owned();
        }
        let list: Vec<String> = values.iter().map(|v| self.bind_varchar(v)).collect();
        format!("{column} IN ({})", list.join(", "))
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
    fn in_lists_cast_each_placeholder_to_varchar_and_number_after_earlier_parameters() {
        let station = "S".to_owned();
        let params = vec!["COD".to_owned(), "pH".to_owned()];
        let mut args = Args::new();
        assert_eq!(args.bind(&station), "$1");
        assert_eq!(
            args.in_list("param", &params),
            "param IN ($2::varchar, $3::varchar)"
        );
        assert_eq!(args.bind_varchar(&station), "$4::varchar");
        assert_eq!(args.values().len(), 4);
        assert_eq!(args.in_list("param", &[]), "false");
    }
}
