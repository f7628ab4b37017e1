//! Names in the versioned release layout (`layout = releases`, see
//! [`crate::engine::releases`]): where a target's tree lives, what a release may be called,
//! and the placeholders its commands get. Pure, so a plan can name a release before anything
//! is shipped.

/// Where the release tree of one target lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tree {
    /// `dest_dir` as planned (relative paths are relative to the login's home).
    pub base: String,
}

impl Tree {
    pub fn new(base: &str) -> Tree {
        Tree {
            base: base.to_owned(),
        }
    }

    fn join(&self, rest: &str) -> String {
        match self.base.as_str() {
            "." => rest.to_owned(),
            "/" => format!("/{rest}"),
            b => format!("{b}/{rest}"),
        }
    }

    /// `DEST_DIR/releases/NAME`.
    pub fn release_dir(&self, name: &str) -> String {
        self.join(&format!("releases/{name}"))
    }

    /// `DEST_DIR/current`.
    pub fn current(&self) -> String {
        self.join("current")
    }
}

/// Checks that `name` can be a directory name under `releases/` and a line of the history
/// file: no path separators, no leading dot (those are dropship's temporaries), no control
/// characters or spaces. Returns why not.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || "._+-@~:".contains(c);
    if name.is_empty() {
        return Err("the release name is empty".into());
    }
    if name.len() > 128 {
        return Err(format!(
            "the release name `{name}` is longer than 128 characters"
        ));
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(format!(
            "the release name `{name}` must start with a letter or digit"
        ));
    }
    if let Some(c) = name.chars().find(|&c| !ok_char(c)) {
        return Err(format!(
            "the release name `{}` contains `{}`: only letters, digits and . _ + - @ ~ : are allowed",
            name.escape_debug(),
            c.escape_debug()
        ));
    }
    Ok(())
}

/// The release name of a bundle: the rule regex's `version` capture, else the dispatch's
/// `{timestamp}` (one per dispatch, pinned with `--timestamp`).
pub fn release_name(version: Option<&str>, timestamp: &str) -> Result<String, String> {
    let name = version.unwrap_or(timestamp).to_owned();
    check_name(&name)?;
    Ok(name)
}

/// The placeholders a `layout = releases` rule's commands get.
pub fn placeholders(tree: &Tree, release: &str) -> [(&'static str, String); 3] {
    [
        ("release", release.to_owned()),
        ("release_dir", tree.release_dir(release)),
        ("current", tree.current()),
    ]
}
