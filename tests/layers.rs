//! The layering, checked on the source: no module imports one that (directly or not)
//! imports it back, at the level of the top folders (`engine`, `plan`, ...), of their
//! modules (`engine::rollout`, `fleet::probe`, ...) and below (`ui::tui::render`, ...); nothing below the front ends imports
//! `ui`; the shared vocabulary (`model`) imports nothing of ours; transports never see a
//! plan. References are read from `crate::…` and `super::…` paths in code (comments and
//! `#[cfg(test)]` parts left out), so a doc link does not count as a dependency.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Module path (`engine::rollout`) -> source text without comments and tests.
fn modules() -> BTreeMap<String, String> {
    fn walk(dir: &Path, root: &Path, out: &mut BTreeMap<String, String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, root, out);
                continue;
            }
            if p.extension().is_none_or(|x| x != "rs") {
                continue;
            }
            let rel = p.strip_prefix(root).unwrap().with_extension("");
            let mut parts: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if parts == ["lib"] || parts == ["main"] {
                continue;
            }
            if parts.last().is_some_and(|l| l == "mod") {
                parts.pop();
            }
            let text = std::fs::read_to_string(&p).unwrap();
            let code = text.split("#[cfg(test)]").next().unwrap_or("");
            let code: String = code
                .lines()
                .map(|l| match l.find("//") {
                    Some(i) => &l[..i],
                    None => l,
                })
                .collect::<Vec<_>>()
                .join("\n");
            out.insert(parts.join("::"), code);
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = BTreeMap::new();
    walk(&root, &root, &mut out);
    out
}

/// The words of every `PREFIX::a::b…` path in `code`; a group (`PREFIX::a::{b, c::D}`)
/// gives one path per item.
fn paths(code: &str, prefix: &str) -> Vec<Vec<String>> {
    fn word(s: &str) -> String {
        s.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    }
    let mut out = Vec::new();
    let pat = format!("{prefix}::");
    let mut rest = code;
    while let Some(i) = rest.find(&pat) {
        let before = rest[..i].chars().last();
        rest = &rest[i + pat.len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        let mut words = Vec::new();
        let mut at = rest;
        loop {
            if let Some(group) = at.strip_prefix('{') {
                let end = group.find('}').unwrap_or(0);
                for item in group[..end].split(',') {
                    let mut p = words.clone();
                    p.extend(item.trim().split("::").map(word).filter(|w| !w.is_empty()));
                    out.push(p);
                }
                break;
            }
            let w = word(at);
            if w.is_empty() {
                out.push(words);
                break;
            }
            at = &at[w.len()..];
            words.push(w);
            match at.strip_prefix("::") {
                Some(next) => at = next,
                None => {
                    out.push(words);
                    break;
                }
            }
        }
    }
    out
}

/// Edges between modules cut to `level` path segments.
fn graph(level: usize) -> BTreeMap<String, BTreeSet<String>> {
    let mods = modules();
    let cut = |m: &str| m.split("::").take(level).collect::<Vec<_>>().join("::");
    let resolve = |words: &[String]| -> Option<String> {
        (1..=words.len())
            .rev()
            .map(|n| words[..n].join("::"))
            .find(|c| mods.contains_key(c))
    };
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (m, code) in &mods {
        let mut targets = Vec::new();
        for w in paths(code, "crate") {
            targets.extend(resolve(&w));
        }
        let parent: Vec<String> = m.split("::").map(str::to_owned).collect();
        let parent = &parent[..parent.len() - 1];
        for w in paths(code, "super") {
            let full: Vec<String> = parent.iter().cloned().chain(w).collect();
            targets.extend(resolve(&full));
        }
        for t in targets {
            let (from, to) = (cut(m), cut(&t));
            // A module and the folder it sits in (its `mod.rs`) are one unit.
            if from != to
                && !from.starts_with(&format!("{to}::"))
                && !to.starts_with(&format!("{from}::"))
            {
                g.entry(from).or_default().insert(to);
            }
        }
    }
    g
}

/// Strongly connected components with more than one module (Tarjan).
fn cycles(g: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct T<'a> {
        g: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(t: &mut T<'a>, v: &'a str) {
        let i = t.index.len();
        t.index.insert(v, i);
        t.low.insert(v, i);
        t.stack.push(v);
        t.on.insert(v);
        if let Some(ws) = t.g.get(v) {
            for w in ws {
                let w = w.as_str();
                if !t.index.contains_key(w) {
                    visit(t, w);
                    let lw = t.low[w];
                    let lv = t.low[v];
                    t.low.insert(v, lv.min(lw));
                } else if t.on.contains(w) {
                    let iw = t.index[w];
                    let lv = t.low[v];
                    t.low.insert(v, lv.min(iw));
                }
            }
        }
        if t.low[v] == t.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = t.stack.pop() {
                t.on.remove(w);
                comp.push(w.to_owned());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                t.out.push(comp);
            }
        }
    }
    let mut t = T {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: Vec::new(),
    };
    let nodes: BTreeSet<&str> = g
        .iter()
        .flat_map(|(k, vs)| std::iter::once(k.as_str()).chain(vs.iter().map(String::as_str)))
        .collect();
    for v in nodes {
        if !t.index.contains_key(v) {
            visit(&mut t, v);
        }
    }
    t.out
}

#[test]
fn no_module_cycles_at_any_depth() {
    for level in 1..=4 {
        let c = cycles(&graph(level));
        assert!(c.is_empty(), "module cycles at depth {level}: {c:?}");
    }
}

/// The folders in data-flow order (ARCHITECTURE.md): each may import only those before it.
const ORDER: &[&str] = &[
    "model",
    "config",
    "logfile",
    "transport",
    "plan",
    "journal",
    "engine",
    "fleet",
    "watch",
    "session",
    "ui",
];

#[test]
fn layers_point_one_way() {
    let g = graph(1);
    for (i, m) in ORDER.iter().enumerate() {
        for d in g.get(*m).into_iter().flatten() {
            let j = ORDER.iter().position(|o| o == d);
            assert!(
                j.is_some_and(|j| j < i),
                "{m} imports {d}, which is not before it in {ORDER:?}"
            );
        }
    }
    let unknown: Vec<&String> = g.keys().filter(|k| !ORDER.contains(&k.as_str())).collect();
    assert!(
        unknown.is_empty(),
        "folders missing from ORDER: {unknown:?}"
    );
}

#[test]
fn the_checker_sees_a_cycle_when_there_is_one() {
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    g.entry("a".into()).or_default().insert("b".into());
    g.entry("b".into()).or_default().insert("c".into());
    g.entry("c".into()).or_default().insert("a".into());
    g.entry("c".into()).or_default().insert("d".into());
    assert_eq!(cycles(&g), vec![vec!["a", "b", "c"]]);
    assert_eq!(
        paths("use crate::engine::{job::Outcome, rollout};", "crate"),
        vec![vec!["engine", "job", "Outcome"], vec!["engine", "rollout"]]
            .into_iter()
            .map(|v| v.into_iter().map(String::from).collect::<Vec<_>>())
            .collect::<Vec<_>>()
    );
}
