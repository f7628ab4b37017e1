//! A small tmpfs over a directory, to fill a host's disk on purpose (tests/ftp_peers.rs,
//! tests/full_disk_ssh.rs).

use std::path::PathBuf;
use std::process::Command;

/// A 1 MiB tmpfs mounted (as root) over a directory, owned by the test user so that it
/// can write there; unmounted on drop.
pub struct SmallDisk(pub PathBuf);

impl SmallDisk {
    pub fn mount(dir: PathBuf) -> SmallDisk {
        std::fs::create_dir_all(&dir).unwrap();
        let user = super::test_user();
        let opts = format!("size=1m,mode=0755,uid={},gid={}", user.uid, user.gid);
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &opts, "dropship-test"])
            .arg(&dir)
            .status()
            .unwrap();
        assert!(st.success(), "mount tmpfs on {}", dir.display());
        SmallDisk(dir)
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}
