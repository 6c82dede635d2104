//! A bucket that cannot be trusted and secrets that must not leak (issue 17,
//! items 3-5): crafted send streams that try to write outside the restore
//! directory or claim to be another backup, objects written through
//! `pipe_through` (gpg) read back with `restore_pipe_through`, and the
//! secrets of a config kept out of every log line, error line and child
//! environment.
//!
//! The crafted streams are well formed (valid CRCs, built with
//! `send_format::synthetic`), gzipped and placed in a local remote under a
//! btrfs2s3-style key of the source, as an attacker with write access to the
//! bucket would.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use uuid::Uuid;

use crate::common::gpg::{yaml_command, GpgHome};
use crate::common::{expect_success as ok, output_text as text};
use crate::common::{get_object, new_bucket, put_object, run, s3_endpoint, subvault, tool, TestFs};
use subvault::stream::send_format::synthetic::{command, header};

const CMD_SUBVOL: u16 = 1;
const CMD_SNAPSHOT: u16 = 2;
const CMD_MKFILE: u16 = 3;
const CMD_SYMLINK: u16 = 8;
const CMD_WRITE: u16 = 15;
const CMD_END: u16 = 21;
const ATTR_UUID: u16 = 1;
const ATTR_CTRANSID: u16 = 2;
const ATTR_INO: u16 = 3;
const ATTR_PATH: u16 = 15;
const ATTR_PATH_LINK: u16 = 17;
const ATTR_FILE_OFFSET: u16 = 18;
const ATTR_DATA: u16 = 19;
const ATTR_CLONE_UUID: u16 = 20;
const ATTR_CLONE_CTRANSID: u16 = 21;

fn random_uuid() -> Uuid {
    Uuid::from_u128(fastrand::u128(..))
}

fn attr(ty: u16, data: &[u8]) -> Vec<u8> {
    let mut v = ty.to_le_bytes().to_vec();
    v.extend((data.len() as u16).to_le_bytes());
    v.extend(data);
    v
}

/// A v1 send stream: the commands with valid CRCs, then the end command.
fn crafted(cmds: &[(u16, Vec<u8>)]) -> Vec<u8> {
    let mut s = header(1);
    for (c, payload) in cmds {
        s.extend(command(*c, payload));
    }
    s.extend(command(CMD_END, &[]));
    s
}

/// The first command of a full stream of subvolume `uuid` at `ctransid`.
fn subvol(name: &str, uuid: Uuid, ctransid: u64) -> (u16, Vec<u8>) {
    (
        CMD_SUBVOL,
        [
            attr(ATTR_PATH, name.as_bytes()),
            attr(ATTR_UUID, uuid.as_bytes()),
            attr(ATTR_CTRANSID, &ctransid.to_le_bytes()),
        ]
        .concat(),
    )
}

fn mkfile(path: &str, ino: u64) -> (u16, Vec<u8>) {
    (
        CMD_MKFILE,
        [
            attr(ATTR_PATH, path.as_bytes()),
            attr(ATTR_INO, &ino.to_le_bytes()),
        ]
        .concat(),
    )
}

fn write(path: &str, data: &[u8]) -> (u16, Vec<u8>) {
    (
        CMD_WRITE,
        [
            attr(ATTR_PATH, path.as_bytes()),
            attr(ATTR_FILE_OFFSET, &0u64.to_le_bytes()),
            attr(ATTR_DATA, data),
        ]
        .concat(),
    )
}

fn symlink(path: &str, ino: u64, target: &str) -> (u16, Vec<u8>) {
    (
        CMD_SYMLINK,
        [
            attr(ATTR_PATH, path.as_bytes()),
            attr(ATTR_INO, &ino.to_le_bytes()),
            attr(ATTR_PATH_LINK, target.as_bytes()),
        ]
        .concat(),
    )
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut child = Command::new(tool("gzip"))
        .arg("-c")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(data).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    out.stdout
}

/// Every path below `dir` (relative, sorted), without following symlinks.
fn tree(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            out.push(p.strip_prefix(root).unwrap().display().to_string());
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                walk(root, &p, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// A source subvolume on a fresh btrfs and a local remote in a temp dir, as
/// `restore` of a crafted object needs: the config, the remote directory and
/// the source's uuid (the `.prnt` of btrfs2s3-style keys).
struct Bucket {
    fs: TestFs,
    remote: tempfile::TempDir,
    config: PathBuf,
    source_uuid: Uuid,
    _dir: tempfile::TempDir,
}

fn local_bucket() -> Bucket {
    let fs = TestFs::new(256);
    let source = fs.subvolume("data");
    let snapshots = fs.path().join("snapshots");
    fs::create_dir(&snapshots).unwrap();
    let remote = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    fs::write(
        &config,
        format!(
            "timezone: UTC\nsources:\n  - path: {}\n    snapshots: {}\n    upload_to_remotes:\n      - id: disk\n        preserve: 1y 1m\nremotes:\n  - id: disk\n    local:\n      path: {}\n",
            source.display(),
            snapshots.display(),
            remote.path().display()
        ),
    )
    .unwrap();
    let source_uuid = subvault::sys::btrfs::subvol_info(&source).unwrap().uuid;
    Bucket {
        fs,
        remote,
        config,
        source_uuid,
        _dir: dir,
    }
}

impl Bucket {
    /// Plants `stream`, gzipped, under a btrfs2s3-style key of the source
    /// (no `.cmpr`: its codec is sniffed) for snapshot `uuid` at `ctransid`.
    fn plant(
        &self,
        time: &str,
        uuid: Uuid,
        ctransid: u64,
        parent: Option<Uuid>,
        stream: &[u8],
    ) -> String {
        let key = format!(
            "data.ctim{time}.ctid{ctransid}.uuid{uuid}.sndp{}.prnt{}.mdvn1.seqn0",
            parent.unwrap_or_default(),
            self.source_uuid
        );
        fs::write(self.remote.path().join(&key), gzip(stream)).unwrap();
        key
    }

    /// `subvault restore --to DIR --latest`, which must fail with exit status
    /// 1 and one error line naming `key` and one of `phrases`; DIR must be left
    /// empty (the half-received subvolume deleted).
    fn restore_fails(&self, dir: &Path, key: &str, phrases: &[&str]) -> String {
        let out = subvault(
            &self.config,
            &["restore", "--to", dir.to_str().unwrap(), "--latest"],
        );
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let errors: Vec<&str> = stderr
            .lines()
            .filter(|l| l.starts_with("subvault: "))
            .collect();
        assert_eq!(errors.len(), 1, "one error line: {}", text(&out));
        let line = errors[0];
        assert!(line.contains(key), "names the object: {}", text(&out));
        assert!(
            phrases.iter().any(|p| line.contains(p)),
            "expected one of {phrases:?}: {}",
            text(&out)
        );
        assert_eq!(tree(dir), Vec::<String>::new(), "DIR is left empty");
        line.to_string()
    }
}

#[test]
#[ignore = "needs root + btrfs"]
fn a_symlink_out_of_dir_is_never_followed() {
    let b = local_bucket();
    // The directory the symlink points at, on another filesystem and on the
    // same one as DIR: nothing may appear in either.
    let elsewhere = tempfile::tempdir().unwrap();
    let beside = b.fs.path().join("beside");
    fs::create_dir(&beside).unwrap();
    let dir = b.fs.path().join("restore");
    fs::create_dir(&dir).unwrap();
    for (n, target) in [elsewhere.path(), beside.as_path()].iter().enumerate() {
        let uuid = random_uuid();
        let stream = crafted(&[
            subvol("data.2026-01-01T00:00:00Z", uuid, 100 + n as u64),
            symlink("l", 257, target.to_str().unwrap()),
            mkfile("l/pwned", 258),
            write("l/pwned", b"written outside the restore directory\n"),
        ]);
        let key = b.plant(
            &format!("2026-01-0{}T00:00:00+00:00", n + 1),
            uuid,
            100 + n as u64,
            None,
            &stream,
        );
        // btrfs receive itself fails: in the chroot, the link's target does
        // not exist.
        let line = b.restore_fails(&dir, &key, &["btrfs receive", "No such file"]);
        assert!(line.contains("mkfile l/pwned"), "{line}");
        fs::remove_file(b.remote.path().join(&key)).unwrap();
    }
    assert_eq!(tree(elsewhere.path()), Vec::<String>::new());
    assert_eq!(tree(&beside), Vec::<String>::new());
}

#[test]
#[ignore = "needs root + btrfs"]
fn dot_dot_paths_are_refused_before_receive_sees_them() {
    let b = local_bucket();
    // DIR two levels down, so `..` has somewhere to go on the same filesystem.
    let outer = b.fs.path().join("a");
    let dir = outer.join("b/restore");
    fs::create_dir_all(&dir).unwrap();
    let uuid = random_uuid();
    let stream = crafted(&[
        subvol("data.2026-01-01T00:00:00Z", uuid, 100),
        mkfile("../../../pwned", 257),
        write("../../../pwned", b"written outside the restore directory\n"),
    ]);
    let key = b.plant("2026-01-01T00:00:00+00:00", uuid, 100, None, &stream);
    let line = b.restore_fails(&dir, &key, &["climbs out with `..`"]);
    assert!(line.contains("\"../../../pwned\""), "{line}");
    assert_eq!(tree(&outer), vec!["b", "b/restore"]);
    assert_eq!(
        tree(b.fs.path())
            .iter()
            .filter(|p| p.contains("pwned"))
            .count(),
        0
    );
}

#[test]
#[ignore = "needs root + btrfs"]
fn a_stream_that_is_not_the_backup_its_key_names_is_refused() {
    let b = local_bucket();
    let dir = b.fs.path().join("restore");
    fs::create_dir(&dir).unwrap();
    let (uuid, other) = (random_uuid(), random_uuid());
    let body = |u: Uuid, c: u64| {
        crafted(&[
            subvol("data.2026-01-01T00:00:00Z", u, c),
            mkfile("f", 257),
            write("f", b"planted\n"),
        ])
    };
    // Another subvolume's stream under this key.
    let key = b.plant(
        "2026-01-01T00:00:00+00:00",
        uuid,
        100,
        None,
        &body(other, 100),
    );
    let line = b.restore_fails(&dir, &key, &["does not match its key"]);
    assert!(
        line.contains("subvolume uuid") && line.contains(&other.to_string()),
        "{line}"
    );
    fs::remove_file(b.remote.path().join(&key)).unwrap();
    // The right uuid at another ctransid.
    let key = b.plant(
        "2026-01-01T00:00:00+00:00",
        uuid,
        100,
        None,
        &body(uuid, 99),
    );
    let line = b.restore_fails(&dir, &key, &["does not match its key"]);
    assert!(line.contains("ctransid 99"), "{line}");
    fs::remove_file(b.remote.path().join(&key)).unwrap();
    // An incremental stream under a full backup's key.
    let incremental = crafted(&[
        (
            CMD_SNAPSHOT,
            [
                attr(ATTR_PATH, b"data.2026-01-01T00:00:00Z"),
                attr(ATTR_UUID, uuid.as_bytes()),
                attr(ATTR_CTRANSID, &100u64.to_le_bytes()),
                attr(ATTR_CLONE_UUID, other.as_bytes()),
                attr(ATTR_CLONE_CTRANSID, &90u64.to_le_bytes()),
            ]
            .concat(),
        ),
        mkfile("f", 257),
    ]);
    let key = b.plant("2026-01-01T00:00:00+00:00", uuid, 100, None, &incremental);
    let line = b.restore_fails(&dir, &key, &["does not match its key"]);
    assert!(line.contains("parent uuid"), "{line}");
    // The good stream restores: the checks above were about the mismatch.
    fs::remove_file(b.remote.path().join(&key)).unwrap();
    b.plant(
        "2026-01-01T00:00:00+00:00",
        uuid,
        100,
        None,
        &body(uuid, 100),
    );
    let out = subvault(&b.config, &["restore", "--to", dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        fs::read(dir.join("data.2026-01-01T00:00:00Z/f")).unwrap(),
        b"planted\n"
    );
}

/// Real streams (send protocol 1, and 2 with compressed data) of a tree with
/// every kind of entry, full and incremental with renames, pass the path
/// guard: it refuses only what btrfs send never writes.
#[test]
#[ignore = "needs root + btrfs"]
fn real_send_streams_pass_the_path_guard() {
    let fs_ = TestFs::new(256);
    let src = fs_.subvolume("src");
    fs::create_dir_all(src.join("a/b/c")).unwrap();
    fs::write(src.join("a/b/c/f"), vec![7u8; 300_000]).unwrap();
    fs::write(src.join("top"), "x").unwrap();
    std::os::unix::fs::symlink("/etc/passwd", src.join("abs-link")).unwrap();
    std::os::unix::fs::symlink("../../top", src.join("a/b/rel-link")).unwrap();
    fs::hard_link(src.join("top"), src.join("a/hard")).unwrap();
    let snap = |name: &str| {
        let p = fs_.path().join(name);
        run(Command::new(tool("btrfs"))
            .args(["subvolume", "snapshot", "-r"])
            .arg(&src)
            .arg(&p));
        p
    };
    let s1 = snap("s1");
    fs::rename(src.join("a/b"), src.join("moved")).unwrap();
    fs::remove_file(src.join("top")).unwrap();
    fs::write(src.join("moved/c/g"), vec![9u8; 70_000]).unwrap();
    let s2 = snap("s2");
    for proto in [
        &["--proto", "1"][..],
        &["--proto", "2", "--compressed-data"],
    ] {
        for args in [vec![s1.clone()], vec!["-p".into(), s1.clone(), s2.clone()]] {
            let out = run(Command::new(tool("btrfs"))
                .args(["send", "-q"])
                .args(proto)
                .args(&args));
            let mut guard = subvault::ops::restore::path_guard::PathGuard::new();
            for chunk in out.stdout.chunks(4093) {
                guard
                    .update(chunk)
                    .unwrap_or_else(|e| panic!("{proto:?} {args:?}: {e}"));
            }
        }
    }
}

/// The source tree the pipe tests back up: a marker string that must not
/// appear in any object once gpg encrypted it, and some bulk.
fn fill_source(src: &Path, marker: &str, n: u8) {
    fs::create_dir_all(src.join("dir")).unwrap();
    fs::write(src.join("dir/notes.txt"), format!("{marker} step {n}\n")).unwrap();
    let bulk: Vec<u8> = (0..(1u32 << 20))
        .map(|i| (i.wrapping_mul(2654435761) >> (13 + n as u32 % 3)) as u8)
        .collect();
    fs::write(src.join(format!("bulk-{n}")), bulk).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", src.join(format!("link-{n}"))).unwrap();
}

fn newest_snapshot(dir: &Path) -> PathBuf {
    let mut names: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().map_or(true, |e| e != "json"))
        .collect();
    names.sort();
    names.pop().expect("a snapshot")
}

/// The path in restore's "restored PATH (...)" line.
fn restored_path(out: &Output) -> PathBuf {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("restored "))
        .unwrap_or_else(|| panic!("no result line: {}", text(out)));
    PathBuf::from(line.split(" (").next().unwrap())
}

#[test]
#[ignore = "needs root + btrfs + S3 + gpg"]
fn objects_written_through_gpg_restore_with_restore_pipe_through() {
    let gpg = GpgHome::new();
    let bucket = new_bucket("trust-gpg");
    let fs_ = TestFs::new(512);
    let src = fs_.subvolume("data");
    let snapshots = fs_.path().join("snapshots");
    fs::create_dir(&snapshots).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    let marker = format!("known-plaintext-{:016x}", fastrand::u64(..));
    let write_config = |reverse: bool| {
        let reverse = if reverse {
            format!(
                "        restore_pipe_through: [{}]\n",
                yaml_command(&gpg.decrypt())
            )
        } else {
            String::new()
        };
        fs::write(
            &config,
            format!(
                "timezone: UTC\nsources:\n  - path: {}\n    snapshots: {}\n    upload_to_remotes:\n      - id: main\n        preserve: 1y 3m\n        compression: zstd\n        pipe_through: [{}]\n{reverse}remotes:\n  - id: main\n    s3:\n      bucket: {bucket}\n      endpoint:\n        endpoint_url: {}\n        region_name: us-east-1\n",
                src.display(),
                snapshots.display(),
                yaml_command(&gpg.encrypt()),
                s3_endpoint()
            ),
        )
        .unwrap();
    };

    // Without the reverse command: config check warns, the backups are made
    // and restore cannot read them (and says what to set).
    write_config(false);
    let out = ok(subvault(&config, &["config", "check"]));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("has no restore_pipe_through"),
        "{}",
        text(&out)
    );
    for (n, now) in ["2026-01-05T10:00:00Z", "2026-02-03T10:00:00Z"]
        .iter()
        .enumerate()
    {
        fill_source(&src, &marker, n as u8);
        ok(subvault(&config, &["run", "--now", now]));
    }
    let objects = crate::common::bucket_objects(&bucket);
    assert_eq!(objects.len(), 2, "{objects:?}");
    let mut keys: Vec<String> = objects.into_keys().collect();
    keys.sort_by_key(|k| subvault::core::object_key::parse_key("", k).unwrap().time);
    for key in &keys {
        assert!(
            !key.contains(".cmpr"),
            "a piped object's key names no codec: {key}"
        );
        let body = get_object(&bucket, key);
        assert!(
            !body.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]),
            "{key} is not plain zstd"
        );
        assert!(
            !body.windows(marker.len()).any(|w| w == marker.as_bytes()),
            "{key} holds the plaintext"
        );
    }
    let target = TestFs::new(512);
    let restore_into = |name: &str| {
        let d = target.path().join(name);
        fs::create_dir(&d).unwrap();
        subvault(&config, &["restore", "--to", d.to_str().unwrap()])
    };
    let out = restore_into("without");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("set restore_pipe_through"),
        "{}",
        text(&out)
    );

    // With it: config check is quiet, restore equals the source, verify passes.
    write_config(true);
    let out = ok(subvault(&config, &["config", "check"]));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("restore_pipe_through"));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("read back through gpg"),
        "{}",
        text(&out)
    );
    let out = ok(restore_into("with"));
    assert_eq!(
        crate::common::tree_hash(&restored_path(&out)),
        crate::common::tree_hash(&newest_snapshot(&snapshots))
    );
    let out = ok(subvault(&config, &["verify", "--all"]));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("2 object(s) checked, 0 bad"),
        "{}",
        text(&out)
    );

    // A flipped last byte breaks gpg's integrity check (the MDC) after it
    // wrote out everything it decrypted: only its exit status tells, and the
    // restore must fail on it, leaving the full backup's step only.
    let leaf = &keys[1];
    let mut body = get_object(&bucket, leaf);
    *body.last_mut().unwrap() ^= 0x01;
    put_object(&bucket, leaf, body);
    let out = restore_into("tampered");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.contains(leaf.as_str()) && last.contains("restore_pipe_through command `gpg"),
        "{}",
        text(&out)
    );
    let left: Vec<String> = tree(&target.path().join("tampered"))
        .into_iter()
        .filter(|p| !p.contains('/'))
        .collect();
    assert_eq!(left.len(), 1, "only the full backup's step stays: {left:?}");
    let out = subvault(&config, &["verify", "--all"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!("{leaf}: restore_pipe_through")),
        "{}",
        text(&out)
    );
    drop(target);
}

/// `pipe_through` and `restore_pipe_through` commands see subvault's
/// environment without its secrets.
#[test]
#[ignore = "needs root + btrfs"]
fn pipe_commands_do_not_inherit_secret_variables() {
    let b = local_bucket();
    let src = b.fs.path().join("data");
    fill_source(&src, "x", 0);
    let envs = tempfile::tempdir().unwrap();
    let (sent, read) = (envs.path().join("sent.env"), envs.path().join("read.env"));
    let text_ = fs::read_to_string(&b.config).unwrap().replace(
        "        preserve: 1y 1m\n",
        &format!(
            "        preserve: 1y 1m\n        compression: zstd\n        pipe_through: [[sh, -c, 'env > {}; cat']]\n        restore_pipe_through: [[sh, -c, 'env > {}; cat']]\n",
            sent.display(),
            read.display()
        ),
    );
    fs::write(&b.config, text_).unwrap();
    let secrets = [
        ("AWS_ACCESS_KEY_ID", "env-secret-akid"),
        ("AWS_SECRET_ACCESS_KEY", "env-secret-key"),
        ("AWS_SESSION_TOKEN", "env-secret-token"),
        ("PGPASSWORD", "env-secret-pg"),
        ("SUBVAULT_TEST_TOKEN", "env-secret-subvault"),
    ];
    let with_env = |args: &[&str]| {
        let mut cmd = crate::common::subvault_command(&b.config, args);
        for (k, v) in secrets {
            cmd.env(k, v);
        }
        cmd.env("NOT_A_SECRET", "visible");
        ok(cmd.output().unwrap())
    };
    with_env(&["run", "--now", "2026-01-05T10:00:00Z"]);
    let dir = b.fs.path().join("restore");
    fs::create_dir(&dir).unwrap();
    let out = with_env(&["restore", "--to", dir.to_str().unwrap()]);
    assert_eq!(
        crate::common::tree_hash(&restored_path(&out)),
        crate::common::tree_hash(&newest_snapshot(&b.fs.path().join("snapshots")))
    );
    for file in [&sent, &read] {
        let env = fs::read_to_string(file).unwrap();
        assert!(env.contains("NOT_A_SECRET=visible"), "{env}");
        assert!(env.contains("PATH="), "{env}");
        for (k, v) in secrets {
            assert!(
                !env.contains(k) && !env.contains(v),
                "{} holds {k}:\n{env}",
                file.display()
            );
        }
    }
}

/// A config full of secrets (static keys, a password in the endpoint URL and
/// in the PostgreSQL connection, a gpg passphrase on the pipe_through command
/// line): `-vv` runs of every command, on the happy path against the S3
/// server and on error paths (a store answering 403, PostgreSQL down, a
/// tampered object), print none of them. A config file that holds secrets and
/// others may read gets a warning with the chmod on every command.
#[test]
#[ignore = "needs root + btrfs + S3 + gpg"]
fn secrets_never_reach_output_at_any_verbosity() {
    const SECRETS: [&str; 5] = [
        "url-Secret-51c7",
        "AKID-Secret-9e02",
        "sk-Secret-77d1",
        "pg-Secret-0b3a",
        "gpg-Secret-4f6e",
    ];
    let bucket = new_bucket("trust-secrets");
    let fs_ = TestFs::new(512);
    let data = fs_.subvolume("data");
    let pg = fs_.subvolume("pg");
    let snapshots = fs_.path().join("snapshots");
    fs::create_dir(&snapshots).unwrap();
    fill_source(&data, "x", 0);
    let gpg_home = tempfile::tempdir().unwrap();
    let gpg = |op: &str| {
        format!(
            "[gpg, --homedir, '{}', --batch, --no-tty, --quiet, --pinentry-mode, loopback, \
             --no-symkey-cache, --passphrase, {}, {op}]",
            gpg_home.path().display(),
            SECRETS[4]
        )
    };
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    let write_config = |endpoint: &str| {
        let endpoint = endpoint.replacen("://", &format!("://minio:{}@", SECRETS[0]), 1);
        fs::write(
            &config,
            format!(
                "timezone: UTC
sources:
  - path: {data}
    snapshots: {snapshots}
    upload_to_remotes:
      - id: s3
        preserve: 1y 1m
        compression: zstd
        pipe_through: [{enc}]
        restore_pipe_through: [{dec}]
  - path: {pg}
    snapshots: {snapshots}
    postgres:
      connection: 'host=127.0.0.1 port=1 user=backup password={pgpw} dbname=postgres'
      timeout: 5s
    upload_to_remotes:
      - id: s3
        preserve: 1d
remotes:
  - id: s3
    s3:
      bucket: {bucket}
      endpoint:
        endpoint_url: '{endpoint}'
        aws_access_key_id: {akid}
        aws_secret_access_key: {sk}
        region_name: us-east-1
",
                data = data.display(),
                pg = pg.display(),
                snapshots = snapshots.display(),
                enc = gpg("--symmetric"),
                dec = gpg("--decrypt"),
                pgpw = SECRETS[3],
                akid = SECRETS[1],
                sk = SECRETS[2],
            ),
        )
        .unwrap();
    };
    let seen = std::sync::Mutex::new(String::new());
    let vv = |args: &[&str]| -> Output {
        let mut full = vec!["-vv"];
        full.extend_from_slice(args);
        let out = crate::common::subvault_command(&config, &full)
            .env_remove("SUBVAULT_LOG")
            .output()
            .unwrap();
        let all = text(&out);
        for s in SECRETS {
            assert!(!all.contains(s), "subvault {args:?} printed {s}:\n{all}");
        }
        seen.lock().unwrap().push_str(&all);
        out
    };

    // The happy path (and PostgreSQL down) against the S3 server.
    write_config(&s3_endpoint());
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&config, fs::Permissions::from_mode(0o644)).unwrap();
    let out = vv(&["config", "check"]);
    assert!(out.status.success());
    let warning = format!("chmod 600 {}", config.display());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&warning),
        "{}",
        text(&out)
    );
    let out = vv(&["run", "--now", "2026-01-05T10:00:00Z"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "the pg source fails: {}",
        text(&out)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&warning),
        "every command warns: {}",
        text(&out)
    );
    assert!(stderr.contains("source pg:"), "{}", text(&out));
    fs::set_permissions(&config, fs::Permissions::from_mode(0o600)).unwrap();
    let out = vv(&["plan"]);
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("chmod"),
        "{}",
        text(&out)
    );
    ok(vv(&["list"]));
    ok(vv(&["verify", "--all"]));
    let target = fs_.path().join("restored");
    fs::create_dir(&target).unwrap();
    ok(vv(&[
        "restore",
        "--source",
        "data",
        "--to",
        target.to_str().unwrap(),
    ]));
    // A tampered object: the failing gpg command is named, its passphrase not.
    let key = crate::common::bucket_objects(&bucket)
        .into_keys()
        .next()
        .unwrap();
    let mut body = get_object(&bucket, &key);
    *body.last_mut().unwrap() ^= 1;
    put_object(&bucket, &key, body);
    let again = fs_.path().join("again");
    fs::create_dir(&again).unwrap();
    let out = vv(&[
        "restore",
        "--source",
        "data",
        "--to",
        again.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--passphrase ***"),
        "{}",
        text(&out)
    );
    assert_eq!(vv(&["verify", "--all"]).status.code(), Some(1));

    // Error paths: a store that refuses every request.
    let proxy = crate::common::proxy::FaultProxy::start(std::sync::Arc::new(|_, _| Some(403)));
    write_config(&proxy.url);
    // In parallel: each retries its requests for a while before it gives up.
    let again = again.to_str().unwrap();
    let restore = ["restore", "--source", "data", "--to", again];
    let commands: [&[&str]; 6] = [
        &["config", "check"],
        &["plan"],
        &["run", "--now", "2026-01-06T10:00:00Z"],
        &["list"],
        &["verify"],
        &restore,
    ];
    std::thread::scope(|scope| {
        for args in commands {
            let vv = &vv;
            scope.spawn(move || {
                let out = vv(args);
                if args[0] != "config" {
                    assert_ne!(out.status.code(), Some(0), "{args:?}: {}", text(&out));
                }
            });
        }
    });
    assert!(proxy.injected() > 0);
    // The error paths did run: the refusal and the unreachable server were
    // reported (with the redacted endpoint).
    let seen = seen.into_inner().unwrap();
    assert!(seen.contains("403"), "{seen}");
    assert!(seen.contains(&proxy.url.replace("http://", "")), "{seen}");
    assert!(seen.contains("PostgreSQL at 127.0.0.1:1"), "{seen}");
}
