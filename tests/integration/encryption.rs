//! Encrypted, authenticated remotes end to end (issue 17, items 1 and 2): real
//! btrfs, the S3 server (moto on 127.0.0.1, started by
//! integration/with-services.sh) and the real `age` CLI.
//!
//! The attacks are made the way a bucket writer who holds only the public
//! recipient would make them: any stream, compressed, with an unkeyed (or a
//! guessed keyed) trailer, age-encrypted to the recipient; bodies moved between
//! keys; keys planted with valid-looking names.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common::{
    bucket_objects, get_object, new_bucket, put_object, run, s3_endpoint, subvault, tool,
    tree_hash, TestFs,
};
use crate::common::{expect_success as ok, output_text as text};
use sha2::{Digest, Sha256};
use subvault::core::model::Codec;
use subvault::core::object_key::parse_key;
use subvault::stream::send_format::send_crc32c;
use subvault::stream::trailer::{data_digest, encode_trailer, Record};

/// A string that is in the source and must be in no object.
const MARKER: &[u8] = b"SUBVAULT-PLAINTEXT-MARKER-7f3a9c1e-the-cat-sat-on-the-mat";

/// A source, its snapshot dir, a key file and a config on a fresh btrfs.
struct Enc {
    fs: TestFs,
    source: PathBuf,
    snapshots: PathBuf,
    dir: tempfile::TempDir,
    bucket: String,
    key: PathBuf,
    config: PathBuf,
    /// Snapshot name -> tree hash, recorded after each run.
    hashes: BTreeMap<String, String>,
}

/// The command failed with exactly one error line (`subvault: ...`) on
/// stderr (progress lines may precede it); returns it.
fn one_line_failure(out: &Output) -> String {
    assert!(!out.status.success(), "should have failed: {}", text(out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("subvault: "))
        .collect();
    assert_eq!(lines.len(), 1, "one error line expected: {}", text(out));
    lines[0].to_string()
}

/// The config text for `remotes`: (id, bucket, key file or none).
fn config_yaml(
    source: &Path,
    snapshots: &Path,
    policy: &str,
    remotes: &[(&str, &str, Option<&Path>)],
) -> String {
    let mut y = format!(
        "timezone: UTC\nsources:\n  - path: {}\n    snapshots: {}\n    upload_to_remotes:\n",
        source.display(),
        snapshots.display()
    );
    for (id, _, _) in remotes {
        y.push_str(&format!("      - id: {id}\n        preserve: {policy}\n"));
    }
    y.push_str("remotes:\n");
    for (id, bucket, key) in remotes {
        y.push_str(&format!(
            "  - id: {id}\n    s3:\n      bucket: {bucket}\n      endpoint:\n        endpoint_url: {}\n        region_name: us-east-1\n",
            s3_endpoint()
        ));
        if let Some(k) = key {
            y.push_str(&format!(
                "    encryption:\n      key_file: {}\n",
                k.display()
            ));
        }
    }
    y
}

fn random_bytes(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    fastrand::fill(&mut v);
    v
}

impl Enc {
    fn new(policy: &str) -> Enc {
        let fs = TestFs::new(400);
        let source = fs.subvolume("data");
        let snapshots = fs.path().join("snapshots");
        fs::create_dir(&snapshots).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let bucket = new_bucket("enc");
        let key = dir.path().join("keys/main.key");
        let out = ok(Command::new(crate::common::subvault_bin())
            .args(["key", "generate", "--out"])
            .arg(&key)
            .output()
            .unwrap());
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(said.contains("public key: age1"), "{said}");
        assert!(said.contains("offline"), "{said}");
        assert!(said.contains("age -d -i"), "{said}");
        assert_eq!(fs::metadata(&key).unwrap().mode() & 0o777, 0o600);
        let config = dir.path().join("config.yaml");
        fs::write(
            &config,
            config_yaml(
                &source,
                &snapshots,
                policy,
                &[("main", &bucket, Some(&key))],
            ),
        )
        .unwrap();
        // A unique marker between random bytes: zstd keeps it as raw literals,
        // so only the encryption can hide it (checked below).
        let mut marked = random_bytes(200_000);
        marked.extend_from_slice(MARKER);
        marked.extend(random_bytes(200_000));
        fs::write(source.join("marked.bin"), marked).unwrap();
        fs::create_dir_all(source.join("docs/deep")).unwrap();
        for i in 0..20 {
            fs::write(
                source.join(format!("docs/deep/note-{i}.txt")),
                format!("note {i}\n").repeat(500),
            )
            .unwrap();
        }
        fs::write(source.join("random.bin"), random_bytes(3 << 20)).unwrap();
        Enc {
            fs,
            source,
            snapshots,
            dir,
            bucket,
            key,
            config,
            hashes: BTreeMap::new(),
        }
    }

    /// `subvault run --now NOW`; records the hash of the snapshot it took.
    fn run_at(&mut self, now: &str) -> Output {
        let out = ok(subvault(&self.config, &["run", "--now", now]));
        for e in fs::read_dir(&self.snapshots).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.ends_with(".pg.json") && !self.hashes.contains_key(&name) {
                self.hashes.insert(name, tree_hash(&e.path()));
            }
        }
        out
    }

    fn change(&self, day: u32) {
        crate::common::append_line(&self.source.join("docs/log.txt"), &format!("day {day}"));
        fs::write(
            self.source.join(format!("new-{day}.bin")),
            random_bytes(500_000),
        )
        .unwrap();
        let _ = fs::remove_file(self.source.join("docs/deep/note-3.txt"));
    }

    fn keys(&self) -> Vec<String> {
        bucket_objects(&self.bucket).into_keys().collect()
    }

    /// A fresh directory to restore into.
    fn target(&self, name: &str) -> PathBuf {
        let d = self.fs.path().join(name);
        fs::create_dir(&d).unwrap();
        d
    }

    /// Restores with `args` into a fresh `name` and checks the result is the
    /// snapshot `want`.
    fn restore_exactly(&self, name: &str, args: &[&str], want: &str) {
        let dir = self.target(name);
        let mut a = vec!["restore", "--to", dir.to_str().unwrap()];
        a.extend(args);
        let out = ok(subvault(&self.config, &a));
        let got = dir.join(want);
        assert!(got.is_dir(), "{want} not restored: {}", text(&out));
        assert_eq!(&tree_hash(&got), &self.hashes[want], "restore {args:?}");
    }

    /// The key of the backup of snapshot `name` (by its time in the key).
    fn key_of(&self, time: &str) -> String {
        self.keys()
            .into_iter()
            .find(|k| k.contains(&format!(".ctim{time}")))
            .unwrap_or_else(|| panic!("no key at {time} in {:?}", self.keys()))
    }

    fn age(&self) -> PathBuf {
        tool("age")
    }

    /// The recipient of the key file (what a bucket writer may know).
    fn recipient(&self) -> String {
        let text = fs::read_to_string(&self.key).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix("# public key: "))
            .unwrap()
            .trim()
            .to_string()
    }

    /// `age -d` of an object with the key file, by the real CLI.
    fn age_decrypt(&self, obj: &[u8]) -> Vec<u8> {
        let f = self.dir.path().join("obj.age");
        fs::write(&f, obj).unwrap();
        run(Command::new(self.age())
            .arg("-d")
            .arg("-i")
            .arg(&self.key)
            .arg(&f))
        .stdout
    }

    /// `age -r RECIPIENT`, by the real CLI.
    fn age_encrypt(&self, plain: &[u8]) -> Vec<u8> {
        let f = self.dir.path().join("plain");
        fs::write(&f, plain).unwrap();
        run(Command::new(self.age())
            .arg("-r")
            .arg(self.recipient())
            .arg(&f))
        .stdout
    }

    /// The subvolumes in `dir`.
    fn entries(dir: &Path) -> Vec<String> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }
}

fn zstd(args: &[&str], input: &[u8], tmp: &Path) -> Vec<u8> {
    let f = tmp.join("zstd-in");
    fs::write(&f, input).unwrap();
    run(Command::new(tool("zstd"))
        .args(args)
        .arg("-q")
        .arg("-c")
        .arg(&f))
    .stdout
}

const T1: &str = "2026-01-10T12:00:00Z";
const T2: &str = "2026-02-01T12:00:00Z";
const T3: &str = "2026-02-02T12:00:00Z";
const POLICY: &str = "1y 2m 7d";

/// Three runs: a full (yearly), a monthly relative to it, a daily relative to
/// the monthly.
fn three_runs(e: &mut Enc) {
    e.run_at(T1);
    e.change(2);
    e.run_at(T2);
    e.change(3);
    e.run_at(T3);
    assert_eq!(e.keys().len(), 3, "{:?}", e.keys());
}

fn time_in_key(t: &str) -> String {
    // Keys carry the time in the configured zone (UTC here) with its offset.
    t.replace('Z', "+00:00")
}

#[test]
#[ignore = "needs root + btrfs + S3 + age"]
fn encrypted_runs_restore_at_every_point_and_no_object_holds_plaintext() {
    let mut e = Enc::new(POLICY);
    three_runs(&mut e);
    let keys = e.keys();
    for k in &keys {
        let name = k.rsplit('/').next().unwrap();
        let auth = name.rsplit('.').next().unwrap();
        assert!(auth.starts_with("auth") && auth.len() == 4 + 32, "{k}");
        // The key still parses as a btrfs2s3/subvault key (the suffix is ignored).
        parse_key("", k).unwrap();
        let obj = get_object(&e.bucket, k);
        assert!(obj.starts_with(b"age-encryption.org/v1\n"), "{k}");
        assert!(
            !obj.windows(MARKER.len()).any(|w| w == MARKER),
            "the plaintext marker is readable in {k}"
        );
    }
    // The check above can fail: the decrypted object (still compressed) of the
    // full backup shows the marker.
    let full = e.key_of(&time_in_key(T1));
    let plain = e.age_decrypt(&get_object(&e.bucket, &full));
    assert!(plain.windows(MARKER.len()).any(|w| w == MARKER));

    // Restore every point: full, monthly (2-chain), daily (3-chain).
    let names: Vec<String> = e.hashes.keys().cloned().collect();
    assert_eq!(names.len(), 3);
    for (i, (t, name)) in [T1, T2, T3].iter().zip(&names).enumerate() {
        e.restore_exactly(&format!("r{i}"), &["--at", t], name);
    }
    let out = ok(subvault(&e.config, &["verify", "--all"]));
    let said =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(said.matches("body MAC ok").count(), 3, "{said}");
    let out = ok(subvault(&e.config, &["list"]));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("encrypted"), "{said}");
    assert!(!said.contains("foreign"), "{said}");
    // A second run with nothing new does nothing (keys are deterministic).
    let before = e.keys();
    e.run_at("2026-02-02T13:00:00Z");
    assert_eq!(e.keys(), before);

    // The key file's secrets (the identity and the auth key) never reach the
    // output, at the highest verbosity either.
    let key_text = fs::read_to_string(&e.key).unwrap();
    let secrets: Vec<&str> = key_text
        .lines()
        .filter_map(|l| {
            l.strip_prefix("AGE-SECRET-KEY-1").or_else(|| {
                l.trim_start_matches(['#', ' '])
                    .strip_prefix("subvault-auth-key:")
                    .map(str::trim)
            })
        })
        .collect();
    assert_eq!(secrets.len(), 2, "identity and auth key in:\n{key_text}");
    let target = e.target("vv");
    let target = target.to_str().unwrap();
    for args in [
        &["-vv", "run", "--now", "2026-02-02T14:00:00Z"][..],
        &["-vv", "verify", "--all"],
        &["-vv", "restore", "--to", target, "--latest"],
        &["-vv", "config", "check"],
    ] {
        let out = ok(subvault(&e.config, args));
        let said = text(&out);
        for s in &secrets {
            assert!(!said.contains(s), "subvault {args:?} printed a key secret");
        }
    }
}

#[test]
#[ignore = "needs root + btrfs + S3 + age"]
fn age_cli_and_zstd_restore_one_object_by_hand() {
    let mut e = Enc::new(POLICY);
    e.run_at(T1);
    let key = e.key_of(&time_in_key(T1));
    let obj = e.dir.path().join("full.age");
    fs::write(&obj, get_object(&e.bucket, &key)).unwrap();
    let dir = e.target("by-hand");
    // Exactly the documented command.
    let sh = format!(
        "set -o pipefail; {} -d -i {} {} | zstd -d | {} receive {}",
        e.age().display(),
        e.key.display(),
        obj.display(),
        tool("btrfs").display(),
        dir.display()
    );
    let out = run(Command::new("bash").args(["-c", &sh]));
    let name = e.hashes.keys().next().unwrap().clone();
    assert_eq!(Enc::entries(&dir), vec![name.clone()], "{}", text(&out));
    assert_eq!(tree_hash(&dir.join(&name)), e.hashes[&name]);
}

/// Writes a key file with mode 0600.
fn write_key(path: &Path, text: &str) {
    fs::write(path, text).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).unwrap();
}

#[test]
#[ignore = "needs root + btrfs + S3 + age"]
fn a_write_only_host_backs_up_and_reading_needs_the_right_identity() {
    let mut e = Enc::new(POLICY);
    // The write-only copy, as documented.
    let wo = e.dir.path().join("keys/write-only.key");
    ok(Command::new(crate::common::subvault_bin())
        .args(["key", "write-only"])
        .arg(&e.key)
        .arg(&wo)
        .output()
        .unwrap());
    assert_eq!(fs::metadata(&wo).unwrap().mode() & 0o777, 0o600);
    let wo_text = fs::read_to_string(&wo).unwrap();
    assert!(!wo_text.contains("AGE-SECRET-KEY"), "{wo_text}");
    let full_config = fs::read_to_string(&e.config).unwrap();
    let wo_config = full_config.replace(e.key.to_str().unwrap(), wo.to_str().unwrap());
    fs::write(&e.config, &wo_config).unwrap();

    // The write-only host runs backups, plans and lists.
    e.run_at(T1);
    e.change(2);
    e.run_at(T2);
    assert_eq!(e.keys().len(), 2);
    ok(subvault(&e.config, &["plan", "--dry-run", "--now", T3]));
    let out = ok(subvault(&e.config, &["list"]));
    assert!(String::from_utf8_lossy(&out.stdout).contains("2 backup(s)"));
    // It cannot read them: one line naming what is missing.
    let dir = e.target("wo");
    for args in [
        vec!["restore", "--to", dir.to_str().unwrap()],
        vec!["verify", "--all"],
    ] {
        let line = one_line_failure(&subvault(&e.config, &args));
        assert!(line.contains(&*wo.to_string_lossy()), "{line}");
        assert!(line.contains("holds no identity"), "{line}");
    }
    assert!(Enc::entries(&dir).is_empty());

    // Another identity with the right auth key: the keys authenticate, the
    // objects do not decrypt.
    let auth_line = wo_text
        .lines()
        .find(|l| l.starts_with("# subvault-auth-key:"))
        .unwrap()
        .to_string();
    let other = e.dir.path().join("keys/other.key");
    ok(Command::new(crate::common::subvault_bin())
        .args(["key", "generate", "--out"])
        .arg(&other)
        .output()
        .unwrap());
    let other_text: String = fs::read_to_string(&other)
        .unwrap()
        .lines()
        .map(|l| {
            if l.starts_with("# subvault-auth-key:") {
                auth_line.clone()
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let wrong_id = e.dir.path().join("keys/wrong-identity.key");
    write_key(&wrong_id, &other_text);
    fs::write(
        &e.config,
        full_config.replace(e.key.to_str().unwrap(), wrong_id.to_str().unwrap()),
    )
    .unwrap();
    let line = one_line_failure(&subvault(
        &e.config,
        &["restore", "--to", dir.to_str().unwrap()],
    ));
    assert!(line.contains("not encrypted to the identity in"), "{line}");
    assert!(line.contains(&*wrong_id.to_string_lossy()), "{line}");
    assert!(Enc::entries(&dir).is_empty(), "{:?}", Enc::entries(&dir));

    // An entirely different key file: nothing authenticates.
    fs::write(
        &e.config,
        full_config.replace(e.key.to_str().unwrap(), other.to_str().unwrap()),
    )
    .unwrap();
    let line = one_line_failure(&subvault(
        &e.config,
        &["restore", "--to", dir.to_str().unwrap()],
    ));
    assert!(line.contains("no backups that authenticate with"), "{line}");
    assert!(line.contains("2 object(s)"), "{line}");

    // A key file others can read is refused, naming the chmod.
    fs::set_permissions(&e.key, fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(&e.config, &full_config).unwrap();
    for args in [
        vec!["run", "--now", T3],
        vec!["list"],
        vec!["restore", "--to", dir.to_str().unwrap()],
    ] {
        let out = subvault(&e.config, &args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}: {}", text(&out));
        assert!(
            stderr.contains(&format!("run `chmod 600 {}`", e.key.display())),
            "{args:?}: {}",
            text(&out)
        );
    }
    let out = subvault(&e.config, &["config", "check"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));

    // The full key file reads what the write-only host wrote.
    fs::set_permissions(&e.key, fs::Permissions::from_mode(0o600)).unwrap();
    let names: Vec<String> = e.hashes.keys().cloned().collect();
    e.restore_exactly("full", &["--at", T2], &names[1]);
}

/// Finds `needle` in a raw send stream, replaces it with `with` (same length)
/// and fixes the CRC of the command holding it: a valid stream with other content.
fn rewrite_stream(raw: &mut [u8], needle: &[u8], with: &[u8]) {
    assert_eq!(needle.len(), with.len());
    let at = raw
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("needle in the stream");
    // Walk the commands: header 17 bytes, then len u32, cmd u16, crc u32, payload.
    let mut pos = 17;
    loop {
        let len = u32::from_le_bytes(raw[pos..pos + 4].try_into().unwrap()) as usize;
        let end = pos + 10 + len;
        if at >= pos && at + needle.len() <= end {
            raw[at..at + with.len()].copy_from_slice(with);
            raw[pos + 6..pos + 10].copy_from_slice(&[0; 4]);
            let crc = send_crc32c(&raw[pos..end]);
            raw[pos + 6..pos + 10].copy_from_slice(&crc.to_le_bytes());
            return;
        }
        pos = end;
    }
}

/// What a bucket writer who knows only the recipient can upload: `raw`
/// compressed, a trailer with `mac` (`None`: the unkeyed one, SHA-256
/// recomputed), encrypted to the recipient.
fn forge(e: &Enc, raw: &[u8], mac: Option<[u8; 32]>) -> Vec<u8> {
    let mut comp = zstd(&["-3"], raw, e.dir.path());
    let mut crc = data_digest();
    crc.update(&comp);
    let record = Record {
        raw_len: raw.len() as u64,
        raw_sha256: Sha256::digest(raw).into(),
        data_len: comp.len() as u64,
        data_crc32c: crc.finalize() as u32,
        mac,
    };
    comp.extend(encode_trailer(Codec::Zstd, &record));
    e.age_encrypt(&comp)
}

#[test]
#[ignore = "needs root + btrfs + S3 + age"]
fn forged_and_swapped_bodies_are_refused_before_anything_is_finalized() {
    let mut e = Enc::new("1y 7d");
    e.run_at(T1);
    e.change(2);
    e.run_at("2026-01-11T12:00:00Z");
    e.change(3);
    e.run_at("2026-01-12T12:00:00Z");
    let k1 = e.key_of(&time_in_key(T1));
    let k2 = e.key_of("2026-01-11T12:00:00+00:00");
    let k3 = e.key_of("2026-01-12T12:00:00+00:00");
    let (b1, b2, b3) = (
        get_object(&e.bucket, &k1),
        get_object(&e.bucket, &k2),
        get_object(&e.bucket, &k3),
    );
    // The attacker's stream: the full backup with other file content (valid
    // send-stream CRCs), as if it had been read or guessed.
    let mut raw = zstd(&["-d"], &e.age_decrypt(&b1), e.dir.path());
    let evil: Vec<u8> = MARKER.iter().map(|b| b.to_ascii_lowercase()).collect();
    rewrite_stream(&mut raw, MARKER, &evil);

    let names: Vec<String> = e.hashes.keys().cloned().collect();
    // Restores the backup of `uuid_key`, which must fail; only `left` (the
    // earlier steps of its chain, received before the bad one) may remain.
    let restore = |name: &str, uuid_key: &str, left: &[&String]| {
        let dir = e.target(name);
        let uuid = parse_key("", uuid_key).unwrap().uuid.to_string();
        let out = subvault(
            &e.config,
            &["restore", "--to", dir.to_str().unwrap(), "--uuid", &uuid],
        );
        let line = one_line_failure(&out);
        // Nothing finalized, nothing left behind.
        let mut found = Enc::entries(&dir);
        found.sort();
        assert_eq!(
            found,
            left.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            "{line}"
        );
        line
    };

    // 1. Unkeyed trailer with the SHA-256 recomputed.
    put_object(&e.bucket, &k1, forge(&e, &raw, None));
    let line = restore("t1", &k1, &[]);
    assert!(line.contains("no keyed trailer"), "{line}");
    // 2. A keyed trailer under a guessed auth key.
    let guess = subvault::core::auth::AuthKey::from_bytes([42; 32]).body_mac(
        subvault::core::auth::mac_name("", &k1),
        raw.len() as u64,
        &Sha256::digest(&raw).into(),
    );
    put_object(&e.bucket, &k1, forge(&e, &raw, Some(guess)));
    let line = restore("t2", &k1, &[]);
    assert!(line.contains("body MAC does not match"), "{line}");
    put_object(&e.bucket, &k1, b1.clone());

    // 3. Two bodies swapped: the second and third backups (both sent
    //    relative to the first). The first step of the chain is received, the
    //    swapped one is refused.
    put_object(&e.bucket, &k2, b3.clone());
    put_object(&e.bucket, &k3, b2.clone());
    restore("t3", &k3, &[&names[0]]);
    let out = subvault(&e.config, &["verify", "--all"]);
    assert!(!out.status.success(), "{}", text(&out));
    let said = text(&out);
    for k in [&k2, &k3] {
        let line = said
            .lines()
            .find(|l| l.contains(k.as_str()) && l.contains("body MAC does not match"))
            .unwrap_or_else(|| panic!("{k} not refused by its MAC: {said}"));
        assert!(!line.is_empty());
    }
    // Put back, everything is good again (so the refusals were about the bodies).
    put_object(&e.bucket, &k2, b2);
    put_object(&e.bucket, &k3, b3);
    ok(subvault(&e.config, &["verify", "--all"]));
    e.restore_exactly(
        "good",
        &["--uuid", &parse_key("", &k3).unwrap().uuid.to_string()],
        &names[2],
    );
}

#[test]
#[ignore = "needs root + btrfs + S3 + age"]
fn planted_keys_are_foreign_never_planned_and_delete_no_real_backup() {
    let mut e = Enc::new("7d");
    // A second, unencrypted remote with the same policy shows that the planted
    // keys are a real attack there.
    let plain = new_bucket("enc-plain");
    fs::write(
        &e.config,
        config_yaml(
            &e.source,
            &e.snapshots,
            "7d",
            &[("main", &e.bucket, Some(&e.key)), ("plain", &plain, None)],
        ),
    )
    .unwrap();
    let days = [
        "2026-03-01T12:00:00Z",
        "2026-03-02T12:00:00Z",
        "2026-03-03T12:00:00Z",
    ];
    for (i, d) in days.iter().enumerate() {
        if i > 0 {
            e.change(i as u32);
        }
        e.run_at(d);
    }
    let real = e.keys();
    assert_eq!(real.len(), 3);
    let info = parse_key("", &real[0]).unwrap();
    // One planted key per day, earlier in the day with a lower ctransid, so
    // each would represent its day: without a MAC, and with a wrong one.
    let mut planted = BTreeSet::new();
    for (i, day) in ["2026-03-01", "2026-03-02", "2026-03-03"]
        .iter()
        .enumerate()
    {
        let base = format!(
            "data.ctim{day}T06:00:00+00:00.ctid{}.uuid{}.sndp00000000-0000-0000-0000-000000000000.prnt{}.mdvn1.seqn0.cmprzstd",
            i + 1,
            uuid::Uuid::from_u128(fastrand::u128(..)),
            info.source_uuid
        );
        let keys = [
            base.clone(),
            format!("{base}.auth{}", hex::encode(random_bytes(16))),
        ];
        for k in keys {
            for bucket in [&e.bucket, &plain] {
                put_object(bucket, &k, random_bytes(1000));
            }
            planted.insert(k);
        }
    }
    // Against the plain remote the planner would now delete real backups.
    let plan = ok(subvault(
        &e.config,
        &[
            "plan",
            "--dry-run",
            "--json",
            "--now",
            "2026-03-04T12:00:00Z",
        ],
    ));
    let plan: serde_json::Value = serde_json::from_slice(&plan.stdout).unwrap();
    let plan_text = plan.to_string();
    let plain_real: Vec<String> = bucket_objects(&plain)
        .into_keys()
        .filter(|k| !planted.contains(k))
        .collect();
    let deleted_plain = plan["backups"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| {
            b["remote"] == "plain"
                && b["action"]
                    .as_str()
                    .is_some_and(|a| a.to_lowercase().contains("delete"))
        })
        .count();
    assert!(
        deleted_plain >= 1,
        "the attack does nothing even unencrypted: {plan:#}"
    );
    assert!(!plain_real.is_empty());
    // Run on the next day: every real backup is still there, and so is every
    // planted key (never deleted).
    let out = subvault(&e.config, &["run", "--now", "2026-03-04T12:00:00Z"]);
    let after: BTreeSet<String> = e.keys().into_iter().collect();
    for k in &real {
        assert!(after.contains(k), "real backup {k} deleted: {}", text(&out));
    }
    for k in &planted {
        assert!(after.contains(k), "planted {k} deleted");
    }
    // The plan made before the run never mentioned a planted key on the
    // encrypted remote (checked after the deletions, which matter most).
    for k in &planted {
        let main_mentions = plan["backups"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["remote"] == "main" && b.to_string().contains(k.as_str()));
        assert!(
            !main_mentions,
            "planted {k} is in the encrypted remote's plan"
        );
    }
    assert!(plan_text.contains("main"));

    // `list` shows them as foreign, with why.
    let out = ok(subvault(&e.config, &["list", "--remote", "main"]));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains(&format!("foreign ({})", planted.len())),
        "{said}"
    );
    assert!(said.contains("no .auth MAC in its key"), "{said}");
    assert!(
        said.contains("does not match this remote's auth key"),
        "{said}"
    );
    let json = ok(subvault(&e.config, &["list", "--remote", "main", "--json"]));
    let json: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(json[0]["foreign"].as_array().unwrap().len(), planted.len());
    for b in json[0]["backups"].as_array().unwrap() {
        assert!(!planted.contains(b["key"].as_str().unwrap()));
    }
    // Restore of the newest still works.
    let names: Vec<String> = e.hashes.keys().cloned().collect();
    e.restore_exactly("latest", &["--remote", "main"], names.last().unwrap());
}
