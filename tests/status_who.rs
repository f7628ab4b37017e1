//! `--status` says who started each host's last dispatch, and from which machine, after the
//! version matrix: the real binary, a `protocol = local` rule, the journal a real dispatch
//! wrote.

mod support;

use support::home::{Home, text};

#[test]
fn status_names_who_started_each_hosts_last_dispatch_from_where() {
    let home = Home::new();
    let dest = home.path("dest");
    home.write(
        "dispatch.cfg",
        format!(
            "[app-(?P<version>[0-9.]+)\\.tgz]\nhost = h1, h2\nprotocol = local\n\
             dest_dir = {d}/{{host}}\nupgrade = echo {{version}} > {d}/{{host}}/.version\n\
             version_cmd = cat {d}/{{host}}/.version\n",
            d = dest.display()
        ),
    );
    home.write("app-1.2.tgz", "bundle bytes");
    let o = home.run(&["--config", "dispatch.cfg", "--dispatch", "app-1.2.tgz"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    let o = home.run(&["--config", "dispatch.cfg", "--status"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    let sh = |cmd: &str| {
        let o = std::process::Command::new("sh")
            .args(["-c", cmd])
            .output()
            .unwrap();
        String::from_utf8(o.stdout).unwrap().trim().to_owned()
    };
    let me = format!("{}@{}", sh("id -un"), sh("uname -n"));
    let lines: Vec<&str> = out.lines().collect();
    let at = lines
        .iter()
        .position(|l| *l == "last dispatch per host:")
        .unwrap_or_else(|| panic!("no last-dispatch table:\n{out}"));
    assert!(
        lines[at + 1].starts_with("HOST") && lines[at + 1].contains(" BY "),
        "{out}"
    );
    for (i, host) in ["h1", "h2"].iter().enumerate() {
        let row = lines[at + 2 + i];
        assert!(row.starts_with(host), "{out}");
        assert!(row.contains("#1") && row.contains("succeeded"), "{out}");
        assert!(row.contains(&format!(" {me} ")), "{me} in:\n{out}");
        assert!(row.contains("app-1.2.tgz"), "{out}");
    }
    // The matrix is still first, unchanged.
    assert!(lines[0].starts_with("HOST"), "{out}");
    assert!(
        lines[1].starts_with("h1") && lines[1].contains("1.2"),
        "{out}"
    );
}
