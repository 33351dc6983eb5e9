//! `[[user]]` and `[[group]]` (issue 10): written into /etc/passwd,
//! /etc/group and /etc/shadow with locked passwords; homes on the root are
//! owned by their user. Read back from the image with debugfs (e2fsprogs).

mod images;

use images::{Recipe, build, keygen, run_ok};
use std::process::Command;

fn debugfs(rootfs: &std::path::Path, request: &str) -> String {
    let out = run_ok(Command::new("debugfs").arg("-R").arg(request).arg(rootfs));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn declared_accounts_are_in_the_image() {
    if !images::have_apt("declared_accounts")
        || images::shared::skip_without("declared_accounts", &["debugfs"])
    {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let (_, public) = keygen(d.path(), "k");
    let mut r = Recipe::counter("1.0.0", &public);
    r.extra.push_str(
        "\n[[group]]\nname = \"app\"\ngid = 900\n\n[[user]]\nname = \"svc\"\nuid = 901\n\
         groups = [\"app\"]\nhome = \"/var/lib/svc\"\nshell = \"/bin/sh\"\n",
    );
    let out = build(d.path(), "img", &r);
    let rootfs = out.join("rootfs.ext4");
    let passwd = debugfs(&rootfs, "cat /etc/passwd");
    assert!(
        passwd.contains("\nsvc:x:901:901::/var/lib/svc:/bin/sh\n"),
        "{passwd}"
    );
    let group = debugfs(&rootfs, "cat /etc/group");
    assert!(group.contains("\napp:x:900:svc\n"), "{group}");
    assert!(group.contains("\nsvc:x:901:\n"), "{group}");
    let shadow = debugfs(&rootfs, "cat /etc/shadow");
    assert!(shadow.contains("\nsvc:!:"), "password locked: {shadow}");
    let st = debugfs(&rootfs, "stat /etc/shadow");
    assert!(st.contains("Mode:  0600"), "{st}");
    let home = debugfs(&rootfs, "stat /var/lib/svc");
    assert!(home.contains("User:   901   Group:   901"), "{home}");
    assert!(home.contains("Mode:  0700"), "{home}");
}
