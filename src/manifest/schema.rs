//! JSON Schemas of the manifest kinds, generated from the types in [`super::types`].
//!
//! The files under `schema/` are these values, pretty-printed; a test fails when they
//! drift, and `CRAFTING_BLESS=1 cargo test` rewrites them.

use schemars::{JsonSchema, schema_for};

use super::types::{NotifyRuleDoc, ProjectDoc, RecipeDoc, ScheduleDoc};

/// `(file name, schema text)` for every kind, in a stable order.
pub fn all() -> Vec<(&'static str, String)> {
    vec![
        ("project.schema.json", render::<ProjectDoc>("Project")),
        ("recipe.schema.json", render::<RecipeDoc>("Recipe")),
        ("schedule.schema.json", render::<ScheduleDoc>("Schedule")),
        ("notifyrule.schema.json", render::<NotifyRuleDoc>("NotifyRule")),
    ]
}

fn render<T: JsonSchema>(kind: &str) -> String {
    let mut schema = schema_for!(T);
    schema.insert(
        "$id".to_owned(),
        format!("https://crafting-table.invalid/schema/{}.schema.json", kind.to_lowercase()).into(),
    );
    schema.insert("title".to_owned(), format!("crafting-table {kind} manifest").into());
    let mut text = serde_json::to_string_pretty(&schema).unwrap_or_default();
    text.push('\n');
    text
}
