//! The README and the example config document every key the parser accepts.

use dropship::config::rules::KEYS;

fn read(name: &str) -> String {
    std::fs::read_to_string(format!("{}/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

#[test]
fn readme_lists_every_key() {
    let readme = read("README.md");
    let missing: Vec<&str> = KEYS
        .iter()
        .map(|(k, _)| *k)
        .filter(|k| !readme.contains(&format!("| `{k}` |")))
        .collect();
    assert!(
        missing.is_empty(),
        "README.md's key table lacks {missing:?}"
    );
}

#[test]
fn example_config_documents_every_key() {
    let example = read("dispatch.cfg.example");
    let missing: Vec<&str> = KEYS
        .iter()
        .map(|(k, _)| *k)
        .filter(|k| !example.contains(&format!("# {k}:")) && !example.contains(&format!("# {k},")))
        .collect();
    assert!(
        missing.is_empty(),
        "dispatch.cfg.example does not document {missing:?}"
    );
}
