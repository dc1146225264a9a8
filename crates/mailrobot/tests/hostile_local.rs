//! Hostile local input: the data directory's modes, a drop folder whose
//! writer swaps files for symlinks, and mail text that tries to drive the
//! operator's terminal.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use common::*;

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().permissions().mode() & 0o777
}

fn drop_mail(drop: &Path, name: &str, mail: &[u8]) {
    fs::write(drop.join("tmp").join(name), mail).unwrap();
    fs::rename(drop.join("tmp").join(name), drop.join("inbox").join(name)).unwrap();
}

#[test]
fn a_new_data_directory_and_everything_in_it_are_private() {
    let robot = Robot::new();
    let drop = robot.dir.path().join("drop");
    robot.add_drop_folder("drop", &drop);
    drop_mail(&drop, "1.eml", &simple_mail("1@x", "Hello", "", "hi"));
    robot.run(&["run-once"]);
    assert_eq!(robot.tickets().len(), 1);

    let data = robot.data_dir();
    assert_eq!(mode(&data), 0o700);
    let mut seen = Vec::new();
    for entry in fs::read_dir(&data).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(mode(&path), 0o600, "{name} must be owner-only");
        seen.push(name);
    }
    // On PostgreSQL the data directory holds no database file.
    let expected: &[&str] = if robot.database.is_some() { &["master.key"] } else { &["mailrobot.db", "master.key"] };
    for expected in expected {
        assert!(seen.iter().any(|n| n == *expected), "{expected} in {seen:?}");
    }
}

#[test]
fn an_existing_open_data_directory_is_tightened() {
    let robot = Robot::new();
    let data = robot.data_dir();
    robot.run(&["mailbox", "list"]);
    // As an old version (or a careless umask) left it.
    fs::set_permissions(&data, fs::Permissions::from_mode(0o755)).unwrap();
    for entry in fs::read_dir(&data).unwrap() {
        fs::set_permissions(entry.unwrap().path(), fs::Permissions::from_mode(0o644)).unwrap();
    }
    fs::write(data.join("mailrobot.db-wal"), b"").unwrap();
    fs::set_permissions(data.join("mailrobot.db-wal"), fs::Permissions::from_mode(0o644)).unwrap();

    robot.run(&["mailbox", "list"]);
    assert_eq!(mode(&data), 0o700);
    for entry in fs::read_dir(&data).unwrap() {
        let path = entry.unwrap().path();
        assert_eq!(mode(&path), 0o600, "{} tightened", path.display());
    }
}

#[test]
fn a_data_directory_of_another_user_that_others_can_read_is_refused_with_the_fix() {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        // Giving a directory to another user needs root; CI runs as root.
        eprintln!("not root: cannot make a directory of another user here");
        return;
    }
    let robot = Robot::new();
    let data = robot.data_dir();
    robot.run(&["mailbox", "list"]);
    fs::set_permissions(&data, fs::Permissions::from_mode(0o755)).unwrap();
    // SAFETY: chown of a path we made.
    let c = std::ffi::CString::new(data.as_os_str().as_encoded_bytes()).unwrap();
    assert_eq!(unsafe { libc::chown(c.as_ptr(), 65534, 65534) }, 0);
    assert_eq!(fs::metadata(&data).unwrap().uid(), 65534);

    let out = robot.run_raw(&["mailbox", "list"], &[]);
    assert!(!out.status.success(), "must refuse");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("chown root") && stderr.contains("chmod 700"), "{stderr}");
    assert_eq!(mode(&data), 0o755, "left as it was");
}

/// The writer of a drop folder swaps a file for a symlink to the robot's
/// master key while the robot polls: the key must never be ingested.
#[test]
fn a_symlink_swapped_in_while_the_robot_polls_is_never_read() {
    let robot = Robot::new();
    let drop = robot.dir.path().join("drop");
    robot.add_drop_folder("drop", &drop);
    robot.run(&["mailbox", "list"]);
    let key = robot.data_dir().join("master.key");
    let key_bytes = fs::read(&key).unwrap();
    assert!(key_bytes.len() >= 32);

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flipper = {
        let (inbox, key, stop) = (drop.join("inbox"), key.clone(), stop.clone());
        std::thread::spawn(move || {
            // Each name is a regular file for a moment (so a listing may
            // see it), then a link to the key (so the fetch may meet it).
            for n in 0..3000u32 {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let name = format!("m{n:05}.eml");
                let file = inbox.join(format!(".f{n}"));
                fs::write(&file, simple_mail(&format!("{n}@x"), "innocent", "", "hi")).unwrap();
                fs::rename(&file, inbox.join(&name)).unwrap();
                std::thread::sleep(std::time::Duration::from_micros(300));
                let link = inbox.join(format!(".l{n}"));
                std::os::unix::fs::symlink(&key, &link).unwrap();
                fs::rename(&link, inbox.join(&name)).unwrap();
                std::thread::sleep(std::time::Duration::from_micros(300));
            }
        })
    };
    // What each pass said about its leases and listing, for a failure.
    let mut said = Vec::new();
    let mut pass = |n: usize| {
        let out = robot.run_raw(&["run-once"], &[]);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "pass {n}: {}\n{stderr}", String::from_utf8_lossy(&out.stdout));
        said.extend(
            stderr
                .lines()
                .filter(|l| ["pass leases taken", "listed", "WARN", "ERROR"].iter().any(|w| l.contains(w)))
                .map(|l| format!("pass {n}: {l}")),
        );
    };
    for n in 0..20 {
        pass(n);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    flipper.join().unwrap();
    // Once more, with the links standing still.
    pass(20);

    let messages = robot.messages();
    assert!(!messages.is_empty(), "no pass journaled a mail; the passes said:\n{}", said.join("\n"));
    let refused: Vec<_> = messages
        .iter()
        .filter(|m| m["state"] == "failed")
        .map(|m| m["reason"].as_str().unwrap_or("").to_string())
        .collect();
    eprintln!("{} copies journaled, {} refused", messages.len(), refused.len());
    assert!(!refused.is_empty(), "the race never hit a symlink: nothing was tested");
    for reason in &refused {
        assert!(reason.contains("symbolic link"), "refused with its reason: {reason}");
    }
    // Nowhere in the journal or its blobs: the database holds no key bytes.
    assert!(!robot.database_contains(&key_bytes), "the master key was ingested");
    let listed = robot.run(&["messages", "list"]);
    assert!(!listed.contains(String::from_utf8_lossy(&key_bytes[..16]).as_ref()));
}

#[test]
fn mail_text_cannot_drive_the_operators_terminal_but_json_stays_exact() {
    let robot = Robot::new();
    let drop = robot.dir.path().join("drop");
    robot.add_drop_folder("drop", &drop);
    // An encoded word decodes to ESC ] 0 ; … BEL (retitle the terminal)
    // and ESC [ 2 J (clear the screen).
    drop_mail(&drop, "1.eml", &simple_mail("1@x", "=?utf-8?q?=1B]0;pwned=07Invoice=1B[2J?=", "", "hi"));
    robot.run(&["run-once"]);

    let tickets = robot.tickets();
    assert_eq!(tickets[0]["subject"], "\u{1b}]0;pwned\u{7}Invoice\u{1b}[2J", "--json is exact");
    for args in [&["tickets", "list"][..], &["tickets", "show", "TKT-000001"], &["messages", "list"]] {
        let human = robot.run(args);
        assert!(!human.contains('\u{1b}') && !human.contains('\u{7}'), "{args:?}: {human:?}");
        assert!(human.contains("\\x1b]0;pwned\\x07Invoice"), "{args:?} shows the escapes visibly: {human}");
    }
}
