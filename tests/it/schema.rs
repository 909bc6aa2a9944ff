//! The committed JSON Schemas under `schema/` must equal what the types generate.

use std::path::Path;

use crafting_table::manifest::schema;

#[test]
fn committed_schemas_match_the_types() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("schema");
    let bless = std::env::var_os("CRAFTING_BLESS").is_some();
    let mut stale = Vec::new();
    for (name, text) in schema::all() {
        let path = dir.join(name);
        if bless {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, &text).unwrap();
            continue;
        }
        match std::fs::read_to_string(&path) {
            Ok(committed) if committed == text => {}
            _ => stale.push(name),
        }
    }
    assert!(
        stale.is_empty(),
        "schema/ is out of date for {stale:?}: run `CRAFTING_BLESS=1 cargo test --test it -- schema::` and commit the result"
    );
}

#[test]
fn schemas_are_valid_json_naming_every_kind() {
    let all = schema::all();
    assert_eq!(all.len(), 5);
    for (name, text) in &all[..4] {
        let v: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(v["type"], "object", "{name} top level is an object");
        assert_eq!(
            v["additionalProperties"], false,
            "{name} rejects unknown fields"
        );
    }
    let combined: serde_json::Value = serde_json::from_str(&all[4].1).unwrap();
    let text = combined.to_string();
    for kind in ["Project", "Recipe", "Schedule", "NotifyRule"] {
        assert!(
            text.contains(&format!("\"{kind}\"")),
            "combined schema names {kind}"
        );
    }
}
