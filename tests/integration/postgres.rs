//! PostgreSQL sources against a real PostgreSQL 15 (Debian packages) whose data
//! directory lives in a subvolume of a loop-mounted btrfs.
//!
//! The snapshots are taken while pgbench writes, moved to a second btrfs with
//! `btrfs send | btrfs receive`, prepared with `prepare_restored_datadir` on a
//! writable snapshot and started on another port; the checks are PostgreSQL's own
//! (pg_amcheck) plus pgbench's bookkeeping invariant, which any torn or
//! inconsistent copy breaks. Fault tests check each error, that no half-made
//! snapshot is left, and that no backup is left running on the server.
//!
//! The tests share the machine's two cores with pgbench, so they run one at a time.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{run, tool, TestFs};
use subvault::config::{PgMode, PostgresConfig, Secret, SslMode};
use subvault::postgres::{prepare_restored_datadir, snapshot_with, PgError, PgSnapshotInfo};

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";
/// pgbench scale: 10 is ~150 MB of tables, enough for many dirty pages in flight.
const SCALE: &str = "10";

/// One PostgreSQL test at a time (see the module comment). A tokio mutex: each
/// test has its own runtime, and the guard is held across awaits.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn pg_sh() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("integration/pg.sh")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Make `dir` (created if missing) owned by the postgres OS user.
fn postgres_dir(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    run(Command::new("chown").arg("postgres:postgres").arg(dir));
}

/// A running cluster, stopped on drop (declare it after the TestFs it lives on).
struct Cluster {
    datadir: PathBuf,
    port: u16,
    log: PathBuf,
}

impl Cluster {
    /// Start (initdb first if needed) a cluster on `datadir` with extra `env`
    /// for pg.sh (PG_ARCHIVE_DIR, PG_RESTORE_FROM, PG_INITDB_OPTS).
    fn start(datadir: &Path, env: &[(&str, &Path)]) -> Cluster {
        let port = free_port();
        let log = PathBuf::from(format!("/tmp/subvault-pg-test-{port}.log"));
        let cluster = Cluster {
            datadir: datadir.to_path_buf(),
            port,
            log: log.clone(),
        };
        let mut cmd = Command::new(pg_sh());
        cmd.arg("start")
            .arg(datadir)
            .arg(port.to_string())
            .env("PG_LOG", &log);
        for (k, v) in env {
            cmd.env(k, v);
        }
        run(&mut cmd);
        cluster
    }

    fn stop(&self) {
        run(Command::new(pg_sh()).arg("stop").arg(&self.datadir));
    }

    /// Connection string for `user` (the superuser `postgres` needs no password).
    fn connection(&self, user: &str, password: Option<&str>) -> String {
        let mut s = format!(
            "host=127.0.0.1 port={} user={user} dbname=postgres",
            self.port
        );
        if let Some(p) = password {
            s.push_str(&format!(" password={p}"));
        }
        s
    }

    /// Run SQL as the superuser; returns unaligned, tuples-only output.
    fn psql(&self, db: &str, sql: &str) -> String {
        psql_at(self.port, db, sql)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Wait until no session of subvault is left: the server aborts a
    /// non-exclusive backup when its session ends, so this means "no backup of
    /// ours runs".
    fn assert_no_subvault_session(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let n = self.psql(
                "postgres",
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'subvault'",
            );
            if n == "0" {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "a subvault session is still open ({n})"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Runs `sql` through psql on the server at `port`; its output, trimmed.
fn psql_at(port: u16, db: &str, sql: &str) -> String {
    let out = run(Command::new(format!("{PG_BIN}/psql"))
        .args([
            "-X",
            "-At",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
        ])
        .args(["-p", &port.to_string(), "-d", db, "-c", sql]));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new(pg_sh())
            .arg("stop")
            .arg(&self.datadir)
            .status();
        // Keep the server log of a failed test for diagnosis.
        if !std::thread::panicking() {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}

/// A background process killed on drop.
struct Background(Child);

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn pg_config(connection: String, mode: PgMode) -> PostgresConfig {
    PostgresConfig {
        connection: Secret::new(connection),
        mode,
        timeout: Duration::from_secs(60),
        pitr_window: None,
        sslmode: None,
        sslrootcert: None,
    }
}

/// The callback the runner passes: a btrfs snapshot of `source` into `dir`.
fn btrfs_snapshot(
    source: &Path,
    dir: &Path,
    name: &str,
) -> impl FnOnce(bool) -> anyhow::Result<PathBuf> {
    let (source, dir, name) = (source.to_path_buf(), dir.to_path_buf(), name.to_string());
    move |readonly| {
        Ok(subvault::sys::btrfs::create_snapshot(
            &source, &dir, &name, readonly,
        )?)
    }
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// The source side: a subvolume `pg` with the data directory at `pg/data`,
/// pg_wal at `pg/wal` (a symlink inside the subvolume) and a tablespace at
/// `pg/ts`, so the layout checks and the link re-pointing on restore are used.
struct Source {
    subvol: PathBuf,
    snaps: PathBuf,
    archive: PathBuf,
    cluster: Cluster,
}

fn source_cluster(fs: &TestFs, archive: bool) -> Source {
    source_cluster_with(fs, archive, None)
}

/// [`source_cluster`] with `archive_command` = `archive_command` when given.
fn source_cluster_with(fs: &TestFs, archive: bool, archive_command: Option<&str>) -> Source {
    let subvol = fs.subvolume("pg");
    let snaps = fs.path().join("snapshots");
    std::fs::create_dir_all(&snaps).unwrap();
    let archive_dir = fs.path().join("wal-archive");
    postgres_dir(&subvol.join("wal"));
    postgres_dir(&subvol.join("ts"));
    let waldir = format!("--waldir={}", subvol.join("wal").display());
    let mut env: Vec<(&str, &Path)> = vec![("PG_INITDB_OPTS", Path::new(&waldir))];
    if archive {
        env.push(("PG_ARCHIVE_DIR", &archive_dir));
    }
    if let Some(c) = archive_command {
        env.push(("PG_ARCHIVE_COMMAND", Path::new(c)));
    }
    let cluster = Cluster::start(&subvol.join("data"), &env);
    cluster.psql(
        "postgres",
        &format!(
            "CREATE TABLESPACE ts LOCATION '{}'",
            subvol.join("ts").display()
        ),
    );
    cluster.psql(
        "postgres",
        "CREATE TABLE ts_check TABLESPACE ts AS SELECT g AS id FROM generate_series(1, 1000) g",
    );
    run(Command::new(format!("{PG_BIN}/pgbench"))
        .args(["-i", "-q", "-s", SCALE, "-h", "127.0.0.1", "-U", "postgres"])
        .args(["-p", &cluster.port.to_string(), "postgres"])
        .stdout(Stdio::null()));
    Source {
        subvol,
        snaps,
        archive: archive_dir,
        cluster,
    }
}

/// Rows in `pgbench_history`: one per committed pgbench transaction.
fn history_rows(cluster: &Cluster) -> u64 {
    let n = cluster.psql("postgres", "SELECT count(*) FROM pgbench_history");
    n.trim()
        .parse()
        .unwrap_or_else(|_| panic!("not a count: {n}"))
}

/// pgbench has not exited (it exits at once when it cannot connect or run).
fn assert_pgbench_running(load: &mut Background) {
    if let Some(status) = load.0.try_wait().unwrap() {
        let mut err = String::new();
        if let Some(mut e) = load.0.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut err);
        }
        panic!("pgbench exited early ({status}): {err}");
    }
}

fn start_pgbench(cluster: &Cluster) -> Background {
    let child = Command::new(format!("{PG_BIN}/pgbench"))
        .args([
            "-c",
            "4",
            "-j",
            "2",
            "-T",
            "600",
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
        ])
        .args(["-p", &cluster.port.to_string(), "postgres"])
        .stdout(Stdio::null())
        // Read only when pgbench exited early (its progress output is small).
        .stderr(Stdio::piped())
        .spawn()
        .expect("start pgbench");
    Background(child)
}

/// Take `n` snapshots while pgbench runs.
async fn snapshots_under_load(src: &Source, mode: PgMode, n: usize) -> Vec<PgSnapshotInfo> {
    let mut load = start_pgbench(&src.cluster);
    let cfg = pg_config(src.cluster.connection("postgres", None), mode);
    let mut infos = Vec::new();
    let mut future_left_out = 0;
    let mut committed = history_rows(&src.cluster);
    for i in 0..n {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        // "Under load" must hold: pgbench is still running and committed
        // transactions since the last snapshot (on an idle database every
        // invariant below would hold trivially).
        assert_pgbench_running(&mut load);
        let now = history_rows(&src.cluster);
        assert!(
            now > committed,
            "pgbench committed nothing before snapshot {i} ({now} history rows)"
        );
        committed = now;
        let name = format!("pg.{i}");
        let info = snapshot_with(
            &cfg,
            &src.subvol,
            &name,
            btrfs_snapshot(&src.subvol, &src.snaps, &name),
        )
        .await
        .unwrap_or_else(|e| panic!("snapshot {i} in {mode:?} mode: {e}"));
        future_left_out += assert_lean_pg_wal(src, &info);
        infos.push(info);
    }
    drop(load);
    assert!(
        future_left_out > 0,
        "the live pg_wal never held recycled segments past the insert position, so nothing \
         showed that the snapshots leave them out"
    );
    infos
}

/// Segment names (24 hex digits) in `dir`, sorted.
fn segments_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.len() == 24 && n.bytes().all(|b| b.is_ascii_hexdigit()))
        .collect();
    v.sort();
    v
}

/// A snapshot's pg_wal holds only what recovery from it can read: the
/// segments from its recorded start (the redo point's segment, which is
/// there) to the insert position now (later than when it was trimmed), and
/// it is read-only. Returns how many segments the live pg_wal holds past the
/// insert position (recycled ones the snapshot left out).
fn assert_lean_pg_wal(src: &Source, info: &PgSnapshotInfo) -> usize {
    assert!(crate::common::is_readonly(&info.snapshot));
    let insert = src.cluster.psql(
        "postgres",
        "SELECT pg_walfile_name(pg_current_wal_insert_lsn())",
    );
    let pos = |s: &str| s[8..].to_string();
    let start = info
        .wal_start
        .clone()
        .expect("the start segment is recorded");
    let snap = segments_in(&info.snapshot.join("wal"));
    assert!(snap.contains(&start), "{start} missing from {snap:?}");
    for s in &snap {
        assert!(
            pos(s) >= pos(&start) && pos(s) <= pos(&insert),
            "{s} is outside {start} .. {insert} in the snapshot's pg_wal: {snap:?}"
        );
    }
    segments_in(&src.subvol.join("wal"))
        .iter()
        .filter(|s| pos(s) > pos(&insert))
        .count()
}

/// Send every snapshot (each relative to the one before) into `dest`, as the
/// received read-only subvolumes `dest/recv/pg.N`.
fn send_receive_all(infos: &[PgSnapshotInfo], dest: &TestFs) -> Vec<PathBuf> {
    let recv = dest.path().join("recv");
    std::fs::create_dir_all(&recv).unwrap();
    let mut parent: Option<&Path> = None;
    let mut received = Vec::new();
    for info in infos {
        let mut send = Command::new(tool("btrfs"));
        send.args(["send", "-q"]);
        if let Some(p) = parent {
            send.arg("-p").arg(p);
        }
        let mut sender = send
            .arg(&info.snapshot)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let status = Command::new(tool("btrfs"))
            .args(["receive", "-q"])
            .arg(&recv)
            .stdin(sender.stdout.take().unwrap())
            .status()
            .unwrap();
        assert!(
            status.success() && sender.wait().unwrap().success(),
            "send/receive failed"
        );
        received.push(recv.join(info.snapshot.file_name().unwrap()));
        parent = Some(&info.snapshot);
    }
    received
}

/// Writable snapshot of a received subvolume, prepared to start.
fn writable_copy(received: &Path, dest: &TestFs) -> PathBuf {
    let rw = dest.path().join(format!(
        "rw-{}",
        received.file_name().unwrap().to_string_lossy()
    ));
    run(Command::new(tool("btrfs"))
        .args(["subvolume", "snapshot"])
        .arg(received)
        .arg(&rw));
    let done =
        prepare_restored_datadir(&rw).unwrap_or_else(|e| panic!("prepare {}: {e}", rw.display()));
    assert!(
        done.iter().any(|l| l.contains("postmaster.pid")),
        "a snapshot of a running server has a postmaster.pid to remove: {done:?}"
    );
    assert!(
        done.iter()
            .any(|l| l.contains("re-pointed") && l.contains("pg_wal")),
        "pg_wal's absolute link into the original subvolume must be re-pointed: {done:?}"
    );
    rw
}

/// The restored server passes amcheck and pgbench's invariant holds; returns
/// its `pgbench_history` row count (transactions committed before the copy).
fn check_restored(cluster: &Cluster) -> u64 {
    let out = Command::new(format!("{PG_BIN}/pg_amcheck"))
        .args([
            "--all",
            "--install-missing",
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
        ])
        .args(["-p", &cluster.port.to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pg_amcheck found problems:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let sums = cluster.psql(
        "postgres",
        "SELECT (SELECT sum(abalance) FROM pgbench_accounts), \
                (SELECT sum(tbalance) FROM pgbench_tellers), \
                (SELECT sum(bbalance) FROM pgbench_branches), \
                (SELECT coalesce(sum(delta), 0) FROM pgbench_history), \
                (SELECT count(*) FROM pgbench_history)",
    );
    let v: Vec<&str> = sums.split('|').collect();
    assert_eq!(v.len(), 5, "{sums}");
    assert!(
        v[0] == v[1] && v[1] == v[2] && v[2] == v[3],
        "pgbench invariant broken (accounts|tellers|branches|history|n): {sums}"
    );
    assert_eq!(
        cluster.psql("postgres", "SELECT count(*) FROM ts_check"),
        "1000"
    );
    v[4].trim().parse().unwrap()
}

/// Each restored copy holds transactions the one before it did not: the
/// snapshots really were taken while pgbench wrote.
fn assert_grows(prev: &mut Option<u64>, rows: u64, what: &str) {
    if let Some(p) = *prev {
        assert!(
            rows > p,
            "{what}: {rows} pgbench_history rows, not more than the previous copy's {p}"
        );
    }
    *prev = Some(rows);
}

fn lsn(text: &str) -> u64 {
    let (hi, lo) = text
        .trim()
        .split_once('/')
        .unwrap_or_else(|| panic!("not an LSN: {text}"));
    (u64::from_str_radix(hi, 16).unwrap() << 32) | u64::from_str_radix(lo, 16).unwrap()
}

/// A source cluster under pgbench load, five snapshots of it taken in one mode
/// (all checked read-only), the source stopped, and an empty second btrfs to
/// restore into. Field order is drop order: servers stop before unmounting.
struct Scenario {
    src: Source,
    infos: Vec<PgSnapshotInfo>,
    dst_fs: TestFs,
    _src_fs: TestFs,
}

impl Scenario {
    async fn run(mode: PgMode) -> Scenario {
        let src_fs = TestFs::new(3072);
        let dst_fs = TestFs::new(3072);
        let src = source_cluster(&src_fs, mode == PgMode::Backup);
        let infos = snapshots_under_load(&src, mode, 5).await;
        src.cluster.stop();
        for info in &infos {
            assert!(
                crate::common::is_readonly(&info.snapshot),
                "{} must be read-only",
                info.snapshot.display()
            );
        }
        Scenario {
            src,
            infos,
            dst_fs,
            _src_fs: src_fs,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root + btrfs + postgresql-15"]
async fn checkpoint_mode_snapshots_under_load_restore_and_start() {
    let _serial = SERIAL.lock().await;
    let Scenario { infos, dst_fs, .. } = &Scenario::run(PgMode::Checkpoint).await;

    for info in infos {
        assert!(!info.snapshot.join("data/backup_label").exists());
        assert_eq!(info.server_version_num / 10000, 15);
        assert_eq!(info.timeline, 1);
        assert!(info.stop_lsn.is_none() && info.backup_label.is_none());
    }
    assert!(
        infos.windows(2).all(|w| lsn(&w[0].lsn) < lsn(&w[1].lsn)),
        "checkpoints advance"
    );

    let received = send_receive_all(infos, dst_fs);
    let mut rows = None;
    for (i, rec) in received.iter().enumerate() {
        let rw = writable_copy(rec, dst_fs);
        let restored = Cluster::start(&rw.join("data"), &[]);
        assert_grows(
            &mut rows,
            check_restored(&restored),
            &format!("snapshot {i}"),
        );
        let log = restored.log_text();
        assert!(
            log.contains("database system was interrupted")
                || log.contains("not properly shut down"),
            "snapshot {i} should start with crash recovery:\n{log}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root + btrfs + postgresql-15"]
async fn backup_mode_snapshots_under_load_restore_from_archive_and_start() {
    let _serial = SERIAL.lock().await;
    let Scenario {
        src, infos, dst_fs, ..
    } = &Scenario::run(PgMode::Backup).await;

    for info in infos {
        let label = std::fs::read_to_string(info.snapshot.join("data/backup_label")).unwrap();
        assert_eq!(Some(&label), info.backup_label.as_ref());
        assert!(
            label.contains(&format!("START WAL LOCATION: {}", info.lsn)),
            "{label}"
        );
        let map = std::fs::read_to_string(info.snapshot.join("data/tablespace_map")).unwrap();
        assert!(
            map.contains(&src.subvol.join("ts").display().to_string()),
            "{map}"
        );
        assert!(lsn(info.stop_lsn.as_deref().unwrap()) > lsn(&info.lsn));
    }

    let received = send_receive_all(infos, dst_fs);
    let mut rows = None;
    for (info, rec) in infos.iter().zip(&received) {
        let rw = writable_copy(rec, dst_fs);
        let restored = Cluster::start(&rw.join("data"), &[("PG_RESTORE_FROM", &src.archive)]);
        let what = rec.display().to_string();
        assert_grows(&mut rows, check_restored(&restored), &what);
        // Recovery stopped at consistency (the end of the backup) and promoted to
        // timeline 2: the switch point in the history file is at or after the
        // LSN pg_backup_stop returned.
        let history =
            std::fs::read_to_string(rw.join("wal/00000002.history")).unwrap_or_else(|e| {
                panic!(
                    "no timeline 2 history after recovery: {e}\n{}",
                    restored.log_text()
                )
            });
        let switch = history.split_whitespace().nth(1).unwrap();
        assert!(
            lsn(switch) >= lsn(info.stop_lsn.as_deref().unwrap()),
            "recovered to {switch}, before the end of the backup {:?}",
            info.stop_lsn
        );
        assert!(
            rw.join("data/backup_label.old").exists(),
            "the server consumed backup_label"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root + btrfs + postgresql-15"]
async fn faults_give_their_error_and_leave_nothing_behind() {
    let _serial = SERIAL.lock().await;
    let fs = TestFs::new(1024);
    let subvol = fs.subvolume("pg");
    let snaps = fs.path().join("snapshots");
    std::fs::create_dir_all(&snaps).unwrap();
    let archive = fs.path().join("wal-archive");
    let cluster = Cluster::start(&subvol.join("data"), &[("PG_ARCHIVE_DIR", &archive)]);
    cluster.psql(
        "postgres",
        "CREATE ROLE backup LOGIN PASSWORD 'right' IN ROLE pg_checkpoint, pg_read_all_settings; \
         CREATE ROLE weak LOGIN PASSWORD 'weak'",
    );
    let never_called = |_: bool| -> anyhow::Result<PathBuf> { panic!("no snapshot may be taken") };

    // Wrong password.
    let cfg = pg_config(
        cluster.connection("backup", Some("Wr0ngPassw0rd")),
        PgMode::Checkpoint,
    );
    let err = snapshot_with(&cfg, &subvol, "x", never_called)
        .await
        .unwrap_err();
    assert!(matches!(err, PgError::Authentication { .. }), "{err}");
    assert!(
        !err.to_string().contains("Wr0ngPassw0rd"),
        "the password leaked: {err}"
    );

    // The right password from a pgpass file, and the least privileges checkpoint
    // mode needs.
    let pgpass = fs.path().join("pgpass");
    std::fs::write(
        &pgpass,
        format!("127.0.0.1:{}:*:backup:right\n", cluster.port),
    )
    .unwrap();
    std::fs::set_permissions(&pgpass, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    std::env::set_var("PGPASSFILE", &pgpass);
    let cfg = pg_config(cluster.connection("backup", None), PgMode::Checkpoint);
    let info = snapshot_with(&cfg, &subvol, "ok", btrfs_snapshot(&subvol, &snaps, "ok"))
        .await
        .unwrap_or_else(|e| panic!("checkpoint as pg_checkpoint member: {e}"));
    std::env::remove_var("PGPASSFILE");
    assert!(crate::common::is_readonly(&info.snapshot));
    subvault::sys::btrfs::destroy_subvolume(&info.snapshot).unwrap();

    // Insufficient privilege names what is needed.
    let cfg = pg_config(cluster.connection("weak", Some("weak")), PgMode::Checkpoint);
    let err = snapshot_with(&cfg, &subvol, "x", never_called)
        .await
        .unwrap_err();
    match &err {
        PgError::InsufficientPrivilege { needed, .. } => {
            assert!(needed.contains("pg_read_all_settings"), "{err}")
        }
        other => panic!("expected insufficient privilege, got {other}"),
    }

    let superuser = pg_config(cluster.connection("postgres", None), PgMode::Backup);
    let aborts_before = cluster.log_text().matches("aborting backup").count();

    // The snapshot fails after pg_backup_start: the backup is stopped explicitly.
    let err = snapshot_with(&superuser, &subvol, "x", |_| anyhow::bail!("disk on fire"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, PgError::Snapshot(_)) && err.to_string().contains("disk on fire"),
        "{err}"
    );
    cluster.assert_no_subvault_session();
    assert_eq!(
        cluster.log_text().matches("aborting backup").count(),
        aborts_before,
        "stopped, not aborted"
    );
    assert!(entries(&snaps).is_empty(), "{:?}", entries(&snaps));

    // The session is killed between start and stop: the server aborts the
    // backup and the snapshot taken meanwhile is destroyed.
    let port = cluster.port;
    let (sv, sd) = (subvol.clone(), snaps.clone());
    let err = snapshot_with(&superuser, &subvol, "killed", move |ro| {
        let path = subvault::sys::btrfs::create_snapshot(&sv, &sd, "killed", ro)?;
        let out = Command::new(format!("{PG_BIN}/psql"))
            .args(["-X", "-At", "-h", "127.0.0.1", "-U", "postgres", "-p", &port.to_string()])
            .args(["-d", "postgres", "-c"])
            .arg("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = 'subvault'")
            .output()?;
        anyhow::ensure!(String::from_utf8_lossy(&out.stdout).trim() == "1", "no backend to kill");
        Ok(path)
    })
    .await
    .unwrap_err();
    assert!(matches!(err, PgError::BackupAborted { .. }), "{err}");
    assert!(
        entries(&snaps).is_empty(),
        "half-made snapshot left: {:?}",
        entries(&snaps)
    );
    cluster.assert_no_subvault_session();
    assert!(
        cluster.log_text().matches("aborting backup").count() > aborts_before,
        "the server must have aborted the backup when the session died"
    );

    // SIGINT while the backup runs: stopped, snapshot discarded.
    let (sv, sd) = (subvol.clone(), snaps.clone());
    let err = snapshot_with(&superuser, &subvol, "sig", move |ro| {
        let path = subvault::sys::btrfs::create_snapshot(&sv, &sd, "sig", ro)?;
        // SAFETY: raise has no preconditions; snapshot_with handles SIGINT now.
        unsafe { libc::raise(libc::SIGINT) };
        std::thread::sleep(Duration::from_millis(100));
        Ok(path)
    })
    .await
    .unwrap_err();
    assert!(matches!(err, PgError::Interrupted("SIGINT")), "{err}");
    assert!(entries(&snaps).is_empty(), "{:?}", entries(&snaps));
    cluster.assert_no_subvault_session();

    // pg_wal outside the subvolume: refused before anything happens on the server.
    let outside_wal = fs.path().join("wal-outside");
    postgres_dir(&outside_wal);
    let waldir = format!("--waldir={}", outside_wal.display());
    let subvol2 = fs.subvolume("pg2");
    let cluster2 = Cluster::start(
        &subvol2.join("data"),
        &[("PG_INITDB_OPTS", Path::new(&waldir))],
    );
    for mode in [PgMode::Checkpoint, PgMode::Backup] {
        let cfg = pg_config(cluster2.connection("postgres", None), mode);
        let err = snapshot_with(&cfg, &subvol2, "x", never_called)
            .await
            .unwrap_err();
        match &err {
            PgError::OutsideSubvolume { what, location, .. } => {
                assert_eq!(what, "pg_wal");
                assert_eq!(location, &outside_wal.canonicalize().unwrap());
            }
            other => panic!("expected pg_wal outside the subvolume, got {other}"),
        }
        cluster2.assert_no_subvault_session();
    }
    drop(cluster2);

    // Server stopped before the run.
    cluster.stop();
    for mode in [PgMode::Checkpoint, PgMode::Backup] {
        let cfg = pg_config(cluster.connection("postgres", None), mode);
        let err = snapshot_with(&cfg, &subvol, "x", never_called)
            .await
            .unwrap_err();
        assert!(matches!(err, PgError::Unreachable { .. }), "{err}");
    }
    assert!(entries(&snaps).is_empty());
}

/// The whole path through the CLI, for one mode: `subvault run --now` five times
/// while pgbench runs, `list --json` shows the recorded server version, LSN,
/// timeline and mode of every backup, and `restore --to --at` brings back each of
/// the five points; the prepared writable copy `restore` makes of each starts
/// (backup mode: from the WAL archive) and passes amcheck and pgbench's invariant.
async fn cli_run_list_restore_and_start(mode: PgMode) {
    let src_fs = TestFs::new(3072);
    let dst_fs = TestFs::new(3072);
    let backup = mode == PgMode::Backup;
    let src = source_cluster(&src_fs, backup);
    let store = src_fs.path().join("store");
    std::fs::create_dir_all(&store).unwrap();
    let cfg_dir = tempfile::tempdir().unwrap();
    let cfg = cfg_dir.path().join("config.yaml");
    std::fs::write(
        &cfg,
        format!(
            "timezone: UTC\nsources:\n  - path: {}\n    snapshots: {}\n    postgres:\n      connection: \"{}\"\n      mode: {}\n    upload_to_remotes:\n      - id: disk\n        preserve: 1y 1m 7d 24h\nremotes:\n  - id: disk\n    local:\n      path: {}\n",
            src.subvol.display(),
            src.snaps.display(),
            src.cluster.connection("postgres", None),
            mode.as_str(),
            store.display()
        ),
    )
    .unwrap();
    let subvault = |args: &[&str]| {
        let out = Command::new(crate::common::subvault_bin())
            .arg("-c")
            .arg(&cfg)
            .args(args)
            .env("SUBVAULT_LOCK_DIR", cfg_dir.path().join("locks"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "subvault {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let mut bench = start_pgbench(&src.cluster);
    let times: Vec<String> = (0..5).map(|h| format!("2026-01-01T0{h}:00:00Z")).collect();
    for now in &times {
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_pgbench_running(&mut bench);
        let out = subvault(&["run", "--now", now]);
        assert!(out.contains("uploaded 1 object"), "{out}");
    }
    drop(bench);
    src.cluster.assert_no_subvault_session();
    src.cluster.stop();

    let listing: serde_json::Value = serde_json::from_str(&subvault(&["list", "--json"])).unwrap();
    let text = listing.to_string();
    let entries: Vec<&serde_json::Value> = listing
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["backups"].as_array().into_iter().flatten())
        .collect();
    assert_eq!(entries.len(), 5, "{text}");
    let mut lsns = Vec::new();
    for e in &entries {
        let pg = &e["postgres"];
        assert_eq!(
            pg["server_version_num"].as_u64().unwrap() / 10000,
            15,
            "{e}"
        );
        assert_eq!(pg["mode"], mode.as_str());
        assert_eq!(pg["timeline"], 1);
        lsns.push(lsn(pg["lsn"].as_str().unwrap()));
    }
    lsns.sort();
    lsns.dedup();
    assert_eq!(lsns.len(), 5, "five distinct LSNs: {text}");

    let mut rows = None;
    for now in &times {
        let out = subvault(&[
            "restore",
            "--to",
            dst_fs.path().to_str().unwrap(),
            "--at",
            now,
        ]);
        let restored_line = out
            .lines()
            .find(|l| l.starts_with("restored "))
            .unwrap_or_else(|| panic!("{out}"));
        let received = PathBuf::from(restored_line.split_whitespace().nth(1).unwrap());
        assert!(
            crate::common::is_readonly(&received),
            "the restore point stays read-only"
        );
        // restore made a prepared writable copy next to it.
        assert!(
            out.contains("postmaster.pid"),
            "stale postmaster.pid handled: {out}"
        );
        let ready = out
            .lines()
            .find_map(|l| l.strip_prefix("PostgreSQL: ready to start: "))
            .unwrap_or_else(|| panic!("{out}"));
        let rw = PathBuf::from(ready.split_whitespace().next().unwrap());
        assert!(!crate::common::is_readonly(&rw));
        let env: Vec<(&str, &Path)> = if backup {
            vec![("PG_RESTORE_FROM", src.archive.as_path())]
        } else {
            vec![]
        };
        let restored = Cluster::start(&rw.join("data"), &env);
        assert_grows(&mut rows, check_restored(&restored), now);
        drop(restored);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root + btrfs + postgresql-15"]
async fn cli_run_list_restore_and_start_backup_mode() {
    let _serial = SERIAL.lock().await;
    cli_run_list_restore_and_start(PgMode::Backup).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root + btrfs + postgresql-15"]
async fn cli_run_list_restore_and_start_checkpoint_mode() {
    let _serial = SERIAL.lock().await;
    cli_run_list_restore_and_start(PgMode::Checkpoint).await;
}

/// Inserts one row with its insert time into `pitr_rows` every 100 ms, each
/// in its own transaction, until dropped.
fn start_inserter(cluster: &Cluster) -> Inserter {
    cluster.psql(
        "postgres",
        "CREATE TABLE pitr_rows (id bigint PRIMARY KEY, at timestamptz NOT NULL)",
    );
    let child = Command::new(format!("{PG_BIN}/psql"))
        .args(["-X", "-q", "-h", "127.0.0.1", "-U", "postgres"])
        .args(["-p", &cluster.port.to_string(), "-d", "postgres", "-c"])
        .arg(
            "DO $$ BEGIN FOR i IN 1..100000 LOOP \
             INSERT INTO pitr_rows VALUES (i, clock_timestamp()); COMMIT; \
             PERFORM pg_sleep(0.1); END LOOP; END $$",
        )
        .env("PGAPPNAME", INSERTER_APP)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the inserter");
    Inserter {
        client: Some(Background(child)),
        port: cluster.port,
    }
}

const INSERTER_APP: &str = "subvault-test-inserter";

/// The inserter of [`start_inserter`]. Killing its psql is not enough: the
/// server runs the DO block on after the client is gone (it notices only
/// when it next writes to the socket, never during the loop), so a test
/// that took "the last row" would see rows committed after it. CI failed
/// that way ("recovery ended before configured recovery target was
/// reached"). Dropping it ends the backend too and waits until it is gone.
struct Inserter {
    client: Option<Background>,
    port: u16,
}

impl Drop for Inserter {
    fn drop(&mut self) {
        drop(self.client.take());
        if std::thread::panicking() {
            // The server may be gone; a second panic here would abort.
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = psql_at(
                self.port,
                "postgres",
                &format!(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                     WHERE application_name = '{INSERTER_APP}'"
                ),
            );
            if left == "0" {
                return;
            }
            assert!(Instant::now() < deadline, "the inserter did not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Waits until the server has archived the segment it was writing when
/// called (after switching to a new one).
fn switch_and_wait_archived(cluster: &Cluster) -> String {
    let seg = cluster.psql("postgres", "SELECT pg_walfile_name(pg_switch_wal())");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let last = cluster.psql(
            "postgres",
            "SELECT coalesce(last_archived_wal, '') || '|' || failed_count || '|' || coalesce(last_failed_wal, '') FROM pg_stat_archiver",
        );
        let done = last.split('|').next().unwrap_or("");
        if done.len() == 24 && done[8..] >= seg[8..] {
            return seg;
        }
        assert!(
            Instant::now() < deadline,
            "{seg} not archived within 120 s (archiver: {last}); server log:\n{}",
            cluster.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Writes the PITR tests' config to `cfg` (readable by `postgres` only,
/// whose `archive_command` runs wal-push with it): one checkpoint-mode
/// source at `subvol` uploading to `bucket` under `host1/`.
fn write_pitr_config(cfg: &Path, bucket: &str, subvol: &Path, snaps: &Path, connection: &str) {
    std::fs::write(
        cfg,
        format!(
            "timezone: UTC\nsources:\n  - path: {}\n    snapshots: {}\n    postgres:\n      connection: \"{connection}\"\n      mode: checkpoint\n    upload_to_remotes:\n      - id: s3\n        preserve: 1y 1m 7d 24h\nremotes:\n  - id: s3\n    s3:\n      bucket: {bucket}\n      prefix: host1/\n      endpoint:\n        endpoint_url: {}\n        region_name: us-east-1\n        aws_access_key_id: testing\n        aws_secret_access_key: testing\n",
            subvol.display(),
            snaps.display(),
            crate::common::s3_endpoint()
        ),
    )
    .unwrap();
    run(Command::new("chown").arg("postgres:postgres").arg(cfg));
    run(Command::new("chmod").arg("600").arg(cfg));
}

/// Point-in-time recovery end to end, through the CLI, on S3: a cluster under
/// pgbench archives its WAL with `subvault wal-push` while a table gets one
/// timestamped row per 100 ms; four `subvault run --now` (hourly-simulated)
/// take checkpoint-mode backups; `restore --pitr` at five times (between
/// backups, right after one became consistent, at the newest archived row)
/// gives exactly the rows committed by each time, and the copy passes
/// pg_amcheck and pgbench's invariant. Out-of-range times name the possible
/// range. A segment pushed twice succeeds; with other content it fails; a
/// corrupted WAL object is refused by wal-fetch with exit 126.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root + btrfs + S3 + postgresql-15"]
async fn pitr_restores_exactly_the_rows_up_to_each_time() {
    let _serial = SERIAL.lock().await;
    let src_fs = TestFs::new(3072);
    // Five restores of ~350 MiB each, plus the WAL each replays.
    let dst_fs = TestFs::new(8192);
    let bucket = crate::common::new_bucket_async("pitr").await;
    // The server runs wal-push as `postgres`: it must read the config.
    let cfg_dir = tempfile::tempdir().unwrap();
    let cfg = cfg_dir.path().join("config.yaml");
    postgres_dir(cfg_dir.path());
    let bin = crate::common::subvault_bin();
    let archive_command = format!("{} -c {} wal-push %p", bin.display(), cfg.display());
    let write_config = |subvol: &Path, snaps: &Path, connection: &str| {
        write_pitr_config(&cfg, &bucket, subvol, snaps, connection)
    };
    // The config names the subvolume before the cluster exists (initdb runs
    // in pg.sh); the connection is filled in once the port is known.
    let subvol_path = src_fs.path().join("pg");
    let snaps_path = src_fs.path().join("snapshots");
    write_config(&subvol_path, &snaps_path, "host=127.0.0.1");
    let src = source_cluster_with(&src_fs, false, Some(&archive_command));
    write_config(
        &src.subvol,
        &src.snaps,
        &src.cluster.connection("postgres", None),
    );

    let subvault = |args: &[&str]| {
        Command::new(&bin)
            .arg("-c")
            .arg(&cfg)
            .args(args)
            .env("SUBVAULT_LOCK_DIR", cfg_dir.path().join("locks"))
            .output()
            .unwrap()
    };
    let ok = |args: &[&str]| {
        let out = subvault(args);
        assert!(
            out.status.success(),
            "subvault {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };

    let inserter = start_inserter(&src.cluster);
    let bench = start_pgbench(&src.cluster);
    for h in 0..4 {
        tokio::time::sleep(Duration::from_secs(6)).await;
        let out = ok(&["run", "--now", &format!("2026-01-01T0{h}:00:00Z")]);
        assert!(out.contains("uploaded 1 object"), "{out}");
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    drop(inserter);
    drop(bench);
    // Recovery to a time stops at the first commit after it; with none in the
    // archive it ends in "recovery ended before configured recovery target
    // was reached". The last target is 50 ms after the last row, and pgbench
    // may stop before committing anything later: one commit well after it
    // (outside pitr_rows) makes that target reachable in every run.
    tokio::time::sleep(Duration::from_millis(300)).await;
    src.cluster
        .psql("postgres", "CREATE TABLE pitr_after_the_last_row ()");
    let last_segment = switch_and_wait_archived(&src.cluster);
    let rows: Vec<(u64, chrono::DateTime<chrono::Utc>)> = src
        .cluster
        .psql(
            "postgres",
            "SELECT id || '|' || to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') FROM pitr_rows ORDER BY id",
        )
        .lines()
        .map(|l| {
            let (id, at) = l.split_once('|').unwrap();
            (id.parse().unwrap(), at.parse().unwrap())
        })
        .collect();
    assert!(rows.len() > 150, "{} rows", rows.len());
    assert_eq!(rows.last().unwrap().0 as usize, rows.len(), "ids are dense");

    // When each backup became consistent, from list --json.
    let listing: serde_json::Value = serde_json::from_str(&ok(&["list", "--json"])).unwrap();
    let mut consistent: Vec<chrono::DateTime<chrono::Utc>> = listing
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["backups"].as_array().into_iter().flatten())
        .map(|b| {
            b["postgres"]["consistent_at"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    consistent.sort();
    assert_eq!(consistent.len(), 4, "{listing}");

    // Targets halfway between two rows, so "the rows up to the time" is exact.
    let between = |t: chrono::DateTime<chrono::Utc>| {
        let i = rows.iter().rposition(|r| r.1 <= t).expect("a row before t");
        (rows[i].1 + chrono::TimeDelta::milliseconds(50), rows[i].0)
    };
    let mid = |a: chrono::DateTime<chrono::Utc>, b: chrono::DateTime<chrono::Utc>| a + (b - a) / 2;
    let last_row = rows.len() - 1;
    let targets = [
        between(mid(consistent[0], consistent[1])),
        between(consistent[1] + chrono::TimeDelta::milliseconds(300)),
        between(mid(consistent[2], consistent[3])),
        between(consistent[3] + chrono::TimeDelta::seconds(2)),
        (
            rows[last_row].1 + chrono::TimeDelta::milliseconds(50),
            rows[last_row].0,
        ),
    ];
    src.cluster.stop();

    for (i, (time, want)) in targets.iter().enumerate() {
        let to = dst_fs.path().join(format!("t{i}"));
        std::fs::create_dir(&to).unwrap();
        let time_arg = time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        // One target through `restore --start` (subvault starts the copy and
        // waits for the target), the others started by the harness.
        let start_it = i == 2;
        let port = free_port().to_string();
        let mut args = vec![
            "restore",
            "--to",
            to.to_str().unwrap(),
            "--source",
            "pg",
            "--pitr",
            &time_arg,
        ];
        if start_it {
            args.extend([
                "--start",
                "--port",
                &port,
                "--pg-setting",
                "listen_addresses=127.0.0.1",
                "--pg-setting",
                "unix_socket_directories=",
            ]);
        }
        let out = ok(&args);
        let start = out
            .lines()
            .find_map(|l| l.split_once("pg_ctl -D ").map(|(_, r)| r))
            .unwrap_or_else(|| panic!("{out}"));
        let datadir = PathBuf::from(start.split_whitespace().next().unwrap());
        assert!(
            datadir.join("recovery.signal").is_file() || start_it,
            "{out}"
        );
        let restored = if start_it {
            // It returned once promoted: no waiting here.
            assert!(
                out.contains(&format!("promoted (open for writes); port {port}")),
                "{out}"
            );
            let restored = Cluster {
                datadir: datadir.clone(),
                port: port.parse().unwrap(),
                log: datadir.join("subvault-start.log"),
            };
            assert_eq!(restored.psql("postgres", "SELECT pg_is_in_recovery()"), "f");
            // wal-fetch (its lines are in the server log) spooled segments
            // ahead and served them from the spool; recovery_end_command
            // removed the spool at the end.
            let log = restored.log_text();
            let spooled_some = log.lines().any(|l| {
                l.split_once("; prefetched ")
                    .is_some_and(|(_, n)| !n.starts_with('0'))
            });
            assert!(
                !spooled_some || log.contains("from the prefetch spool"),
                "{log}"
            );
            eprintln!(
                "--start: {} segment(s) from the archive, {} from the prefetch spool",
                log.matches("from remote s3").count(),
                log.matches("from the prefetch spool").count()
            );
            assert!(
                !datadir.join("pg_wal/.subvault-prefetch").exists(),
                "recovery_end_command removes the spool"
            );
            restored
        } else {
            Cluster::start(&datadir, &[])
        };
        let deadline = Instant::now() + Duration::from_secs(180);
        while restored.psql("postgres", "SELECT pg_is_in_recovery()") != "f" {
            assert!(
                Instant::now() < deadline,
                "target {time_arg}: recovery did not end; log:\n{}",
                restored.log_text()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
        let got = restored.psql(
            "postgres",
            "SELECT count(*) || '|' || coalesce(max(id), 0) FROM pitr_rows",
        );
        assert_eq!(
            got,
            format!("{want}|{want}"),
            "target {time_arg} ({i}): rows up to id {want}; log:\n{}",
            restored.log_text()
        );
        assert!(
            restored
                .log_text()
                .contains("recovery stopping before commit")
                || restored
                    .log_text()
                    .contains("recovery stopping after commit"),
            "recovery stopped at the target, not at the end of the archive: {}",
            restored.log_text()
        );
        if i == 1 || i == 4 {
            check_restored(&restored);
        }
        drop(restored);
    }

    // Out of range: before the oldest backup, after the newest WAL.
    for (time, what) in [
        (
            consistent[0] - chrono::TimeDelta::seconds(1),
            "before the oldest backup",
        ),
        (
            chrono::Utc::now() + chrono::TimeDelta::hours(1),
            "after the newest archived WAL",
        ),
    ] {
        let to = dst_fs.path().join("out-of-range");
        std::fs::create_dir_all(&to).unwrap();
        let out = subvault(&[
            "restore",
            "--to",
            to.to_str().unwrap(),
            "--source",
            "pg",
            "--pitr",
            &time.to_rfc3339(),
        ]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains(what) && err.contains("possible: "), "{err}");
        assert_eq!(entries(&to), Vec::<String>::new(), "nothing restored");
    }

    // The same segment pushed twice, then with other content.
    let datadir = src.subvol.join("data");
    let fetched = cfg_dir.path().join(&last_segment);
    let fetch = |name: &str, dest: &Path| {
        subvault(&[
            "wal-fetch",
            "--source",
            "pg",
            "--pgdata",
            datadir.to_str().unwrap(),
            name,
            dest.to_str().unwrap(),
        ])
    };
    let out = fetch(&last_segment, &fetched);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let push = || {
        subvault(&[
            "wal-push",
            "--pgdata",
            datadir.to_str().unwrap(),
            fetched.to_str().unwrap(),
        ])
    };
    let out = push();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut bytes = std::fs::read(&fetched).unwrap();
    bytes[100_000] ^= 1;
    std::fs::write(&fetched, &bytes).unwrap();
    let out = push();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("different content"), "{err}");

    // A missing segment: exit 1, nothing on stderr.
    let out = fetch("0000000100000000000000FF", &fetched);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");

    // A corrupted WAL object: exit 126 (PostgreSQL stops recovery), named.
    let s3 = crate::common::s3_client();
    let objects = crate::common::bucket_objects(&bucket);
    let key = objects
        .keys()
        .find(|k| k.ends_with(&format!("{last_segment}.cmprzstd")))
        .unwrap_or_else(|| panic!("{last_segment} in {objects:?}"))
        .clone();
    let body = s3
        .get_object()
        .bucket(&bucket)
        .key(&key)
        .send()
        .await
        .unwrap()
        .body
        .collect()
        .await
        .unwrap()
        .into_bytes();
    let mut bad = body.to_vec();
    let at = bad.len() / 2;
    bad[at] ^= 0x10;
    s3.put_object()
        .bucket(&bucket)
        .key(&key)
        .body(bad.into())
        .send()
        .await
        .unwrap();
    let out = fetch(&last_segment, &fetched);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(126), "{err}");
    assert!(
        err.contains(&key) && err.contains("recovery must stop"),
        "{err}"
    );
}

/// `subvault check`: passes on a cluster archiving through `subvault
/// wal-push` (the switched segment arrives on both remotes), and on a
/// misconfigured one names the setting, exit 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root + btrfs + postgresql-15"]
async fn check_names_the_setting_or_sees_the_segment_arrive() {
    let _serial = SERIAL.lock().await;
    let fs = TestFs::new(1024);
    let subvol = fs.subvolume("pg");
    let cfg_dir = tempfile::tempdir().unwrap();
    postgres_dir(cfg_dir.path());
    let cfg = cfg_dir.path().join("config.yaml");
    let stores = [fs.path().join("store-a"), fs.path().join("store-b")];
    for s in &stores {
        postgres_dir(s);
    }
    let write_config = |connection: &str| {
        std::fs::write(
            &cfg,
            format!(
                "timezone: UTC\nsources:\n  - path: {}\n    snapshots: {}\n    postgres: {{connection: \"{connection}\"}}\n    upload_to_remotes:\n      - {{id: a, preserve: 1d}}\n      - {{id: b, preserve: 1d}}\nremotes:\n  - id: a\n    local: {{path: {}}}\n  - id: b\n    local: {{path: {}}}\n",
                subvol.display(),
                fs.path().join("snaps").display(),
                stores[0].display(),
                stores[1].display()
            ),
        )
        .unwrap();
        run(Command::new("chown").arg("postgres:postgres").arg(&cfg));
    };
    write_config("host=127.0.0.1");
    let command = format!(
        "{} -c {} wal-push %p",
        crate::common::subvault_bin().display(),
        cfg.display()
    );
    let cluster = Cluster::start(
        &subvol.join("data"),
        &[("PG_ARCHIVE_COMMAND", Path::new(&command))],
    );
    write_config(&cluster.connection("postgres", None));
    let check = || {
        Command::new(crate::common::subvault_bin())
            .arg("-c")
            .arg(&cfg)
            .args(["check", "--source", "pg", "--timeout", "60"])
            .output()
            .unwrap()
    };
    let out = check();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{text}\nserver log:\n{}",
        cluster.log_text()
    );
    assert!(text.contains("arrived on every remote (a, b)"), "{text}");

    // pg.sh gives the settings on the command line, where ALTER SYSTEM
    // cannot override them: restart with another archive_command.
    cluster.stop();
    drop(cluster);
    let cluster = Cluster::start(
        &subvol.join("data"),
        &[("PG_ARCHIVE_COMMAND", Path::new("cp %p /nowhere/%f"))],
    );
    write_config(&cluster.connection("postgres", None));
    let out = check();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("archive_command is \"cp %p /nowhere/%f\""),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "one line: {err}");
}

/// The segment names in `objects` (a bucket listing) archived under
/// `.wal/`, and the `.pgrs` start segments of the backups there (as names).
fn archive_and_starts(objects: &[String]) -> (Vec<String>, Vec<String>) {
    let mut segments: Vec<String> = objects
        .iter()
        .filter(|k| k.contains(".wal/"))
        .filter_map(|k| k.rsplit('/').next()?.strip_suffix(".cmprzstd"))
        .filter(|n| n.len() == 24)
        .map(String::from)
        .collect();
    segments.sort();
    let starts = objects
        .iter()
        .filter(|k| !k.contains(".wal/"))
        .filter_map(|k| {
            // `.pgrs<log>-<seg>` (hex), on timeline 1 here.
            let v = k.split(".pgrs").nth(1)?.split('.').next()?;
            let (log, seg) = v.split_once('-')?;
            let hex = |h: &str| u32::from_str_radix(h, 16).ok();
            Some(format!("00000001{:08X}{:08X}", hex(log)?, hex(seg)?))
        })
        .collect();
    (segments, starts)
}

/// WAL retention through `run` on S3: a cluster archives with `subvault
/// wal-push` (a few segments a simulated hour), and `run --now` keeps two
/// hourlies (`preserve: 2h`). After every run the archive holds exactly the
/// segments from the oldest kept backup's start (its `.pgrs`) on, without a
/// gap; `plan --dry-run` shows the archive and what a run would delete,
/// including when that is over the prune budget, and then a run deletes the
/// oldest the budget allows and the next run the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root + btrfs + postgresql-15 + S3"]
async fn wal_retention_keeps_exactly_what_the_kept_backups_need() {
    let _serial = SERIAL.lock().await;
    let fs = TestFs::new(1024);
    let subvol = fs.subvolume("pg");
    let bucket = crate::common::new_bucket_async("walret").await;
    let cfg_dir = tempfile::tempdir().unwrap();
    postgres_dir(cfg_dir.path());
    let cfg = cfg_dir.path().join("config.yaml");
    let write_config = |connection: &str| {
        std::fs::write(
            &cfg,
            format!(
                "timezone: UTC\nsources:\n  - path: {}\n    snapshots: {}\n    postgres: {{connection: \"{connection}\"}}\n    upload_to_remotes:\n      - {{id: s3, preserve: 2h}}\nremotes:\n  - id: s3\n    s3:\n      bucket: {bucket}\n      endpoint:\n        endpoint_url: {}\n        region_name: us-east-1\n        aws_access_key_id: testing\n        aws_secret_access_key: testing\n",
                subvol.display(),
                fs.path().join("snaps").display(),
                crate::common::s3_endpoint()
            ),
        )
        .unwrap();
        run(Command::new("chown").arg("postgres:postgres").arg(&cfg));
        run(Command::new("chmod").arg("600").arg(&cfg));
    };
    write_config("host=127.0.0.1");
    let command = format!(
        "{} -c {} wal-push %p",
        crate::common::subvault_bin().display(),
        cfg.display()
    );
    let cluster = Cluster::start(
        &subvol.join("data"),
        &[("PG_ARCHIVE_COMMAND", Path::new(&command))],
    );
    write_config(&cluster.connection("postgres", None));
    cluster.psql("postgres", "CREATE TABLE t (x int)");
    let subvault = |args: &[&str]| {
        let out = Command::new(crate::common::subvault_bin())
            .arg("-c")
            .arg(&cfg)
            .args(args)
            .env("SUBVAULT_LOCK_DIR", cfg_dir.path().join("locks"))
            .output()
            .unwrap();
        (out.status.code(), crate::common::output_text(&out))
    };
    let keys = || -> Vec<String> { crate::common::bucket_objects(&bucket).into_keys().collect() };
    // Segments switched per simulated hour, and what each run deletes: the
    // first run the WAL from before its backup; in hour 2 the four segments
    // of hour 1 (over the budget: 3 of 6 at 02:00, the last at 02:30); then
    // each hour's two.
    let switches = [2, 4, 2, 2, 2];
    let deletes = [2, 0, 1, 2, 2];
    for h in 0..5 {
        for _ in 0..switches[h] {
            cluster.psql("postgres", "INSERT INTO t SELECT generate_series(1, 1000)");
            switch_and_wait_archived(&cluster);
        }
        let now = format!("2026-01-01T0{h}:00:00Z");
        if h == 2 {
            let (_, plan) = subvault(&["plan", "--dry-run", "--now", &now]);
            assert!(
                plan.contains(
                    "WAL archive on s3: 000000010000000000000003 .. 000000010000000000000008, 6 objects"
                ),
                "{plan}"
            );
            assert!(
                plan.contains("WAL retention deletes 4 objects")
                    && plan.contains("over the prune budget"),
                "{plan}"
            );
            // The budget allows 3 of 6: the oldest three go now, no gap.
            let (code, out) = subvault(&["run", "--now", &now]);
            assert_eq!(code, Some(0), "{out}");
            assert!(out.contains("deleted 3 archived WAL objects"), "{out}");
            let (segments, _) = archive_and_starts(&keys());
            assert_eq!(segments[0], "000000010000000000000006", "{segments:?}");
        }
        let at = if h == 2 {
            "2026-01-01T02:30:00Z".to_string()
        } else {
            now
        };
        let (code, out) = subvault(&["run", "--now", &at]);
        assert_eq!(code, Some(0), "{out}");
        if deletes[h] > 0 {
            assert!(
                out.contains(&format!("deleted {} archived WAL object", deletes[h])),
                "hour {h}: {out}"
            );
        } else {
            assert!(!out.contains("archived WAL"), "hour {h}: {out}");
        }
        // Exactly the segments from the oldest kept start on, no gap.
        let (segments, starts) = archive_and_starts(&keys());
        let oldest = starts.iter().min().expect("backups record .pgrs").clone();
        if let Some(first) = segments.first() {
            assert_eq!(
                first, &oldest,
                "hour {h}: {segments:?} vs starts {starts:?}"
            );
        }
        let pos = |s: &str| u64::from_str_radix(&s[8..], 16).unwrap();
        for pair in segments.windows(2) {
            assert_eq!(
                pos(&pair[1]),
                pos(&pair[0]) + 1,
                "hour {h}: gap in {segments:?}"
            );
        }
    }
    let (_, list) = subvault(&["list"]);
    assert!(
        list.contains("WAL archive of pg: 2 object(s)")
            && list.contains("segments 00000001000000000000000B (uploaded "),
        "{list}"
    );
}

/// Writes a CA (`NAME.pem`, `NAME.key`) into `dir` with the openssl CLI.
fn make_ca(dir: &Path, name: &str) {
    run(Command::new("openssl")
        .current_dir(dir)
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args([
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
        ])
        .args(["-subj", &format!("/CN={name}")])
        .args(["-addext", "basicConstraints=critical,CA:TRUE"])
        .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"])
        .stderr(Stdio::null()));
}

/// TLS to PostgreSQL (`sslmode`, `sslrootcert`) against a real server with
/// `ssl = on` and a CA and server certificate (for `localhost` only) made
/// here with openssl: `require` and `verify-full` with the right CA connect
/// encrypted, `verify-ca` accepts an address the certificate does not name;
/// `verify-full` with another CA, or by an address the certificate does not
/// name, fails in one line naming the setting; with a `hostssl`-only
/// pg_hba.conf, `disable` fails naming `sslmode`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root + btrfs + postgresql-15 + openssl"]
async fn tls_modes_connect_or_name_the_setting() {
    let _serial = SERIAL.lock().await;
    let fs = TestFs::new(512);
    let subvol = fs.subvolume("pg");
    let cluster = Cluster::start(&subvol.join("data"), &[]);
    let certs = fs.path().join("certs");
    postgres_dir(&certs);
    make_ca(&certs, "ca");
    make_ca(&certs, "other-ca");
    run(Command::new("openssl")
        .current_dir(&certs)
        .args([
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
        ])
        .args(["-out", "server.csr", "-subj", "/CN=localhost"])
        .stderr(Stdio::null()));
    std::fs::write(
        certs.join("ext.cnf"),
        "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n\
         keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(Command::new("openssl")
        .current_dir(&certs)
        .args([
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
        ])
        .args(["-CAcreateserial", "-days", "2", "-out", "server.pem"])
        .args(["-extfile", "ext.cnf"])
        .stderr(Stdio::null()));
    run(Command::new("chown")
        .arg("-R")
        .arg("postgres:postgres")
        .arg(&certs));
    run(Command::new("chmod")
        .arg("600")
        .arg(certs.join("server.key")));
    cluster.psql("postgres", "ALTER SYSTEM SET ssl = on");
    cluster.psql(
        "postgres",
        &format!(
            "ALTER SYSTEM SET ssl_cert_file = '{}'",
            certs.join("server.pem").display()
        ),
    );
    cluster.psql(
        "postgres",
        &format!(
            "ALTER SYSTEM SET ssl_key_file = '{}'",
            certs.join("server.key").display()
        ),
    );
    cluster.psql("postgres", "SELECT pg_reload_conf()");
    std::thread::sleep(Duration::from_millis(500));

    let cfg = |host: &str, mode: Option<SslMode>, ca: Option<&str>| PostgresConfig {
        connection: Secret::new(format!(
            "host={host} port={} user=postgres dbname=postgres",
            cluster.port
        )),
        sslmode: mode,
        sslrootcert: ca.map(|c| certs.join(c)),
        ..pg_config(String::new(), PgMode::Checkpoint)
    };
    let tls = |c: PostgresConfig| async move { subvault::postgres::connection_uses_tls(&c).await };
    assert!(tls(cfg("127.0.0.1", Some(SslMode::Require), None))
        .await
        .unwrap());
    assert!(
        tls(cfg("127.0.0.1", None, None)).await.unwrap(),
        "prefer uses TLS when offered"
    );
    assert!(!tls(cfg("127.0.0.1", Some(SslMode::Disable), None))
        .await
        .unwrap());
    assert!(
        tls(cfg("localhost", Some(SslMode::VerifyFull), Some("ca.pem")))
            .await
            .unwrap()
    );
    assert!(
        tls(cfg("127.0.0.1", Some(SslMode::VerifyCa), Some("ca.pem")))
            .await
            .unwrap()
    );

    let one_line = |e: PgError| {
        let line = e.to_string();
        assert_eq!(line.lines().count(), 1, "{line}");
        line
    };
    let wrong_ca = one_line(
        tls(cfg(
            "localhost",
            Some(SslMode::VerifyFull),
            Some("other-ca.pem"),
        ))
        .await
        .unwrap_err(),
    );
    assert!(
        wrong_ca.contains("postgres.sslrootcert") && wrong_ca.contains("other-ca.pem"),
        "{wrong_ca}"
    );
    let wrong_name = one_line(
        tls(cfg("127.0.0.1", Some(SslMode::VerifyFull), Some("ca.pem")))
            .await
            .unwrap_err(),
    );
    assert!(
        wrong_name.contains("postgres.sslmode verify-full") && wrong_name.contains("does not name"),
        "{wrong_name}"
    );

    // TLS only: pg_hba.conf with hostssl lines.
    let hba = subvol.join("data/pg_hba.conf");
    let text = std::fs::read_to_string(&hba).unwrap();
    std::fs::write(&hba, text.replace("\nhost ", "\nhostssl ")).unwrap();
    cluster.psql("postgres", "SELECT pg_reload_conf()");
    std::thread::sleep(Duration::from_millis(500));
    let plain = one_line(
        tls(cfg("127.0.0.1", Some(SslMode::Disable), None))
            .await
            .unwrap_err(),
    );
    assert!(
        plain.contains("hostssl") && plain.contains("postgres.sslmode is disable"),
        "{plain}"
    );
    assert!(
        tls(cfg("localhost", Some(SslMode::VerifyFull), Some("ca.pem")))
            .await
            .unwrap()
    );
}

/// A timeline switch (issue 18): a copy restored with `restore --pitr
/// --start` and promoted (timeline 2) archives back into the same archive
/// while the original goes on writing on timeline 1. The copy's WAL and its
/// `00000002.history` go under the timeline-2 folder; every timeline-1 object
/// the original archived is untouched (the copy adds only the `.partial` of
/// the segment it switched in); and a later `restore --pitr` of the original
/// to a time after the fork, along `--timeline current`, has the original's
/// rows and none of the copy's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root + btrfs + S3 + postgresql-15"]
async fn a_promoted_copy_archiving_back_keeps_the_timelines_apart() {
    let _serial = SERIAL.lock().await;
    let src_fs = TestFs::new(3072);
    let dst_fs = TestFs::new(4096);
    let bucket = crate::common::new_bucket_async("tli").await;
    let cfg_dir = tempfile::tempdir().unwrap();
    let cfg = cfg_dir.path().join("config.yaml");
    postgres_dir(cfg_dir.path());
    let bin = crate::common::subvault_bin();
    let archive_command = format!("{} -c {} wal-push %p", bin.display(), cfg.display());
    let write_config = |subvol: &Path, snaps: &Path, connection: &str| {
        write_pitr_config(&cfg, &bucket, subvol, snaps, connection)
    };
    write_config(
        &src_fs.path().join("pg"),
        &src_fs.path().join("snapshots"),
        "host=127.0.0.1",
    );
    let src = source_cluster_with(&src_fs, false, Some(&archive_command));
    write_config(
        &src.subvol,
        &src.snaps,
        &src.cluster.connection("postgres", None),
    );
    let subvault = |args: &[&str]| {
        let out = Command::new(&bin)
            .arg("-c")
            .arg(&cfg)
            .args(args)
            .env("SUBVAULT_LOCK_DIR", cfg_dir.path().join("locks"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "subvault {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let rows_of = |c: &Cluster| -> Vec<(u64, chrono::DateTime<chrono::Utc>)> {
        c.psql(
            "postgres",
            "SELECT id || '|' || to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') FROM pitr_rows ORDER BY id",
        )
        .lines()
        .map(|l| {
            let (id, at) = l.split_once('|').unwrap();
            (id.parse().unwrap(), at.parse().unwrap())
        })
        .collect()
    };
    let wal_objects = || {
        crate::common::bucket_objects(&bucket)
            .into_iter()
            .filter(|(k, _)| k.starts_with("host1/pg.wal/"))
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    let restore_started = |dir: &str, time: chrono::DateTime<chrono::Utc>, extra: &[&str]| {
        let to = dst_fs.path().join(dir);
        std::fs::create_dir(&to).unwrap();
        let port = free_port();
        let (port_s, time_s) = (
            port.to_string(),
            time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        );
        let mut args = vec![
            "restore",
            "--to",
            to.to_str().unwrap(),
            "--source",
            "pg",
            "--pitr",
            &time_s,
            "--start",
            "--port",
            &port_s,
            "--pg-setting",
            "listen_addresses=127.0.0.1",
            "--pg-setting",
            "unix_socket_directories=",
        ];
        args.extend_from_slice(extra);
        let out = subvault(&args);
        let datadir = out
            .lines()
            .find_map(|l| l.split_once("pg_ctl -D ").map(|(_, r)| r))
            .and_then(|r| r.split_whitespace().next())
            .map(PathBuf::from)
            .unwrap_or_else(|| panic!("{out}"));
        Cluster {
            log: datadir.join("subvault-start.log"),
            datadir,
            port,
        }
    };

    let inserter = start_inserter(&src.cluster);
    tokio::time::sleep(Duration::from_secs(3)).await;
    subvault(&["run", "--now", "2026-01-01T00:00:00Z"]);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let rows = rows_of(&src.cluster);
    // The fork: a row committed after the backup (4 s of rows came since).
    let fork = &rows[rows.len() - 10];
    let fork_time = fork.1 + chrono::TimeDelta::milliseconds(50);
    switch_and_wait_archived(&src.cluster);
    let before = wal_objects();
    assert!(
        before.keys().all(|k| k.contains("/00000001/")),
        "{before:?}"
    );

    // The copy: recovered to the fork, promoted to timeline 2, archiving
    // into the same source's archive (its data directory is no source's,
    // hence --source).
    let copy_archive = format!(
        "archive_command={} -c {} wal-push --source pg %p",
        bin.display(),
        cfg.display()
    );
    let copy = restore_started(
        "copy",
        fork_time,
        &[
            "--pg-setting",
            "archive_mode=on",
            "--pg-setting",
            &copy_archive,
        ],
    );
    assert_eq!(copy.psql("postgres", "SELECT pg_is_in_recovery()"), "f");
    assert_eq!(
        copy.psql("postgres", "SELECT max(id) FROM pitr_rows"),
        fork.0.to_string()
    );
    assert_eq!(
        copy.psql(
            "postgres",
            "SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)"
        ),
        "00000002"
    );
    copy.psql("postgres", "CREATE TABLE copy_only AS SELECT 1 AS x");
    switch_and_wait_archived(&copy);

    // The original went on writing on timeline 1 meanwhile.
    tokio::time::sleep(Duration::from_secs(2)).await;
    drop(inserter);
    switch_and_wait_archived(&src.cluster);
    let after = wal_objects();
    for (k, v) in &before {
        assert_eq!(after.get(k), Some(v), "{k} changed or vanished");
    }
    let added: Vec<&String> = after.keys().filter(|k| !before.contains_key(*k)).collect();
    let tli2: Vec<&&String> = added.iter().filter(|k| k.contains("/00000002/")).collect();
    assert!(
        tli2.iter()
            .any(|k| k.contains("/00000002/00000002.history.cmprzstd")),
        "{added:?}"
    );
    assert!(
        tli2.iter().any(|k| k.contains("/00000002/00000002000000")),
        "{added:?}"
    );
    for k in &added {
        // Timeline 1 gets the original's new segments and the copy's
        // .partial of the segment it switched in; nothing else.
        let name = k.rsplit('/').next().unwrap();
        let tli = k.rsplit('/').nth(1).unwrap();
        assert!(
            tli == "00000002" && name.starts_with("00000002")
                || tli == "00000001" && name.starts_with("00000001"),
            "{k}"
        );
    }
    drop(copy);

    // A later restore of the original after the fork, along its own
    // timeline: the original's rows, none of the copy's.
    let rows = rows_of(&src.cluster);
    let last = &rows[rows.len() - 3];
    assert!(last.0 > fork.0 + 10, "the original wrote past the fork");
    src.cluster.stop();
    let again = restore_started(
        "again",
        last.1 + chrono::TimeDelta::milliseconds(50),
        &["--timeline", "current"],
    );
    assert_eq!(
        again.psql(
            "postgres",
            "SELECT count(*) || '|' || max(id) FROM pitr_rows"
        ),
        format!("{}|{}", last.0, last.0)
    );
    assert_eq!(
        again.psql(
            "postgres",
            "SELECT count(*) FROM pg_tables WHERE tablename = 'copy_only'"
        ),
        "0"
    );
    drop(again);

    // --start on a copy that cannot start: exit 1, the reason and the log's end.
    let to = dst_fs.path().join("broken");
    std::fs::create_dir(&to).unwrap();
    let out = Command::new(&bin)
        .arg("-c")
        .arg(&cfg)
        .args(["restore", "--to", to.to_str().unwrap(), "--source", "pg"])
        .args(["--pitr", &fork_time.to_rfc3339(), "--start"])
        .args(["--pg-setting", "no_such_setting=1"])
        .env("SUBVAULT_LOCK_DIR", cfg_dir.path().join("locks"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("stopped before reaching the recovery target")
            && err.contains("no_such_setting"),
        "{err}"
    );

    eprintln!(
        "timeline switch: {} timeline-1 objects untouched, {} added ({} on timeline 2)",
        before.len(),
        added.len(),
        tli2.len()
    );
}
