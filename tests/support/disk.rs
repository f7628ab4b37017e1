//! A small tmpfs over a directory, to fill a host's disk on purpose (tests/ftp_peers.rs,
//! tests/full_disk_ssh.rs).

use std::path::PathBuf;
use std::process::Command;

/// A 1 MiB tmpfs mounted (as root) over a directory, owned by the test user so that it
/// can write there; unmounted on drop.
pub struct SmallDisk(pub PathBuf);

impl SmallDisk {
    pub fn mount(dir: PathBuf) -> SmallDisk {
        let user = super::test_user();
        SmallDisk::mount_for(dir, user.uid, user.gid)
    }

    /// [`SmallDisk::mount`] for another login (e.g. Dropbear's).
    pub fn mount_for(dir: PathBuf, uid: u32, gid: u32) -> SmallDisk {
        std::fs::create_dir_all(&dir).unwrap();
        let opts = format!("size=1m,mode=0755,uid={uid},gid={gid}");
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
