//! JSON Schemas of the manifest kinds, generated from the types in [`super::types`].
//!
//! The files under `schema/` are these values, pretty-printed: one per kind, and
//! `manifest.schema.json` that accepts any of the four (for editors, whose files mix
//! kinds). A test fails when the committed files drift from the types;
//! `CRAFTING_BLESS=1 cargo test` rewrites them.

use schemars::{JsonSchema, schema_for};
use serde::Serialize;

use super::types::{NotifyRuleDoc, ProjectDoc, RecipeDoc, ScheduleDoc};

/// Any crafting-table manifest document: a Project, Recipe, Schedule or NotifyRule.
#[derive(Serialize, JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum AnyManifest {
    Project(ProjectDoc),
    Recipe(RecipeDoc),
    Schedule(ScheduleDoc),
    NotifyRule(NotifyRuleDoc),
}

/// `(file name, schema text)` for every kind and the combined schema, in a stable
/// order.
pub fn all() -> Vec<(&'static str, String)> {
    vec![
        (
            "project.schema.json",
            render::<ProjectDoc>("project", "Project"),
        ),
        (
            "recipe.schema.json",
            render::<RecipeDoc>("recipe", "Recipe"),
        ),
        (
            "schedule.schema.json",
            render::<ScheduleDoc>("schedule", "Schedule"),
        ),
        (
            "notifyrule.schema.json",
            render::<NotifyRuleDoc>("notifyrule", "NotifyRule"),
        ),
        (
            "manifest.schema.json",
            render::<AnyManifest>("manifest", "any"),
        ),
    ]
}

fn render<T: JsonSchema>(file: &str, kind: &str) -> String {
    let mut schema = schema_for!(T);
    schema.insert(
        "$id".to_owned(),
        format!("https://crafting-table.invalid/schema/{file}.schema.json").into(),
    );
    schema.insert(
        "title".to_owned(),
        format!("crafting-table/v1 {kind} manifest").into(),
    );
    // Plain data with string keys: serialising cannot fail.
    let mut text = serde_json::to_string_pretty(&schema).unwrap_or_default();
    text.push('\n');
    text
}
