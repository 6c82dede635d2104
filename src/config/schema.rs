//! The schema: reads a [`Config`] from a parsed YAML tree and checks it.
//!
//! Field-level checks happen while reading; checks that relate fields to each
//! other (remote ids, duplicates, snapshot dir placement) run afterwards over the
//! typed values, still holding the nodes so errors point at the right place.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use chrono_tz::Tz;
use serde_yaml_ng::Value;

use super::duration::parse_duration;
use super::node::{closest, Fault, Node};
use super::operations;
use super::{
    Compression, Config, DedupeConfig, EncryptionConfig, LocalConfig, ObjectLockConfig,
    ObjectLockMode, PgMode, PostgresConfig, RemoteConfig, RemoteKind, S3Config, S3Endpoint, Safety,
    Secret, Source, SslMode, StorageClasses, UploadConfig, Verify,
};
use crate::core::model::Codec;
use crate::core::policy::{Policy, Timeframe};

const TOP_KEYS: &[&str] = &["timezone", "sources", "remotes", "safety", "prices"];
const SAFETY_KEYS: &[&str] = &[
    "prune_budget",
    "clock_tolerance",
    "abort_incomplete_uploads_after",
];
const SOURCE_KEYS: &[&str] = &[
    "path",
    "snapshots",
    "name",
    "postgres",
    "dedupe",
    "upload_to_remotes",
];
const UPLOAD_KEYS: &[&str] = &[
    "id",
    "preserve",
    "compression",
    "pipe_through",
    "restore_pipe_through",
    "storage_class",
    "object_lock",
];
const REMOTE_KEYS: &[&str] = &["id", "s3", "local", "encryption"];
const S3_KEYS: &[&str] = &["bucket", "prefix", "endpoint"];
const ENDPOINT_KEYS: &[&str] = &[
    "endpoint_url",
    "region_name",
    "profile_name",
    "aws_access_key_id",
    "aws_secret_access_key",
    "api_version",
    "verify",
    "force_path_style",
];

/// Default PostgreSQL connect/statement timeout.
const DEFAULT_PG_TIMEOUT: Duration = Duration::from_secs(60);

/// Read and validate the whole document. `base_dir` resolves a relative CA bundle.
pub(crate) fn build(root: &Value, base_dir: &Path, file: &Path) -> Result<Config, Fault> {
    let root = Node::root(root);
    if root.value().is_null() {
        return Err(root.fault("the file is empty: it needs timezone, sources and remotes"));
    }
    let top = root.map(&[TOP_KEYS, operations::TOP_KEYS].concat())?;
    let ops = operations::top_level(&top)?;
    let timezone = timezone(&top.required("timezone")?)?;

    let remote_nodes = top.required("remotes")?.non_empty_seq()?;
    let mut remotes = Vec::new();
    let mut remote_ids: HashMap<String, Node> = HashMap::new();
    let mut places: Vec<Node> = Vec::new();
    for node in &remote_nodes {
        let (remote, id_node, place) = remote(node, base_dir)?;
        check_apart(&remote, &place, &remotes, &places)?;
        places.push(place);
        if let Some(first) = remote_ids.get(&remote.id) {
            return Err(id_node.fault(format!(
                "duplicate remote id {:?} (already used by {}); ids must be unique",
                remote.id,
                first.path()
            )));
        }
        remote_ids.insert(remote.id.clone(), id_node);
        remotes.push(remote);
    }

    // A config without `sources` only reads (a fleet reader's `status
    // --fleet`, `list`, `restore`); commands that back up refuse it
    // (`ops::sources::select_sources`). An empty list is still a mistake.
    let source_nodes = match top.get("sources") {
        Some(n) => n.non_empty_seq()?,
        None => Vec::new(),
    };
    let mut sources: Vec<Source> = Vec::new();
    let mut located: Vec<SourceNodes> = Vec::new();
    for node in &source_nodes {
        let (source, nodes) = source(node, &remotes)?;
        for (other, other_nodes) in sources.iter().zip(&located) {
            if other.name == source.name {
                return Err(nodes.name.fault(format!(
                    "duplicate source name {:?} (already used by {}); set a unique `name`",
                    source.name,
                    other_nodes.name.path()
                )));
            }
            if same_path(&other.path, &source.path) {
                return Err(nodes.path.fault(format!(
                    "source {} is already configured at {}; list each subvolume once",
                    source.path.display(),
                    other_nodes.path.path()
                )));
            }
        }
        sources.push(source);
        located.push(nodes);
    }
    check_snapshot_dirs(&sources, &located)?;
    let safety = match top.get("safety") {
        Some(n) => safety(&n)?,
        None => Safety::default(),
    };
    let prices = match top.get("prices") {
        Some(n) => Some(super::prices::prices(&n)?),
        None => None,
    };

    Ok(Config {
        path: file.to_path_buf(),
        timezone,
        sources,
        remotes,
        safety,
        max_parallel_sources: ops.max_parallel_sources,
        metrics_file: ops.metrics_file,
        hooks: ops.hooks,
        prices,
    })
}

/// An IANA time zone name, with a suggestion for a near miss.
fn timezone(node: &Node) -> Result<Tz, Fault> {
    let name = node.non_empty_str()?;
    Tz::from_str(name).map_err(|_| {
        let names = chrono_tz::TZ_VARIANTS.iter().map(|tz| tz.name());
        let hint = match closest(name, names) {
            Some(near) => format!(" (did you mean {near:?}?)"),
            None => {
                " (use an IANA name such as Europe/Berlin, America/New_York or UTC)".to_string()
            }
        };
        node.fault(format!("unknown time zone {name:?}{hint}"))
    })
}

/// An absolute path.
fn abs_path(node: &Node) -> Result<PathBuf, Fault> {
    let text = node.non_empty_str()?;
    let path = PathBuf::from(text);
    if !path.is_absolute() {
        return Err(node.fault(format!(
            "{text:?} is a relative path; write it absolute (starting with /)"
        )));
    }
    Ok(path)
}

/// Whether two absolute paths name the same place, ignoring `//`, `/./` and a
/// trailing slash.
fn same_path(a: &Path, b: &Path) -> bool {
    a.components().eq(b.components())
}

/// Whether `inner` is `outer` or below it.
fn is_within(inner: &Path, outer: &Path) -> bool {
    let inner: Vec<Component> = inner.components().collect();
    let outer: Vec<Component> = outer.components().collect();
    inner.len() >= outer.len() && inner[..outer.len()] == outer[..]
}

/// A short identifier: a remote id or source name.
fn identifier(node: &Node, what: &str) -> Result<String, Fault> {
    let text = node.non_empty_str()?;
    if text.contains('/') || text.chars().any(char::is_control) || text == "." || text == ".." {
        return Err(node.fault(format!(
            "bad {what} {text:?}: it must not contain '/' or control characters"
        )));
    }
    Ok(text.to_string())
}

/// One entry of `remotes`; returns its id node for duplicate reports and the
/// node that says where it stores (`local.path`, or `s3.prefix` / `s3.bucket`)
/// for overlap reports.
fn remote<'v>(
    node: &Node<'v>,
    base_dir: &Path,
) -> Result<(RemoteConfig, Node<'v>, Node<'v>), Fault> {
    let map = node.map(&[REMOTE_KEYS, operations::REMOTE_KEYS].concat())?;
    let id_node = map.required("id")?;
    let id = identifier(&id_node, "remote id")?;
    let rate_limit = operations::rate_limit(&map)?;
    let single_put_max = operations::single_put_max(&map)?;
    let place;
    let kind = match (map.get("s3"), map.get("local")) {
        (Some(s3), None) => {
            let s3_map = s3.map(S3_KEYS)?;
            place = match s3_map.get("prefix") {
                Some(p) => p,
                None => s3_map.required("bucket")?,
            };
            RemoteKind::S3(s3_config(&s3, base_dir)?)
        }
        (None, Some(local)) => {
            let local = local.map(&["path"])?;
            place = local.required("path")?;
            RemoteKind::Local(LocalConfig {
                path: abs_path(&place)?,
            })
        }
        (Some(_), Some(local)) => {
            return Err(local
                .fault("a remote is either `s3` or `local`, not both; split it into two remotes"))
        }
        (None, None) => {
            return Err(map.node().fault(format!(
                "remote {id:?} needs an `s3:` or a `local:` section"
            )))
        }
    };
    let encryption = match map.get("encryption") {
        Some(n) => {
            let e = n.map(&["key_file"])?;
            Some(EncryptionConfig {
                key_file: abs_path(&e.required("key_file")?)?,
            })
        }
        None => None,
    };
    Ok((
        RemoteConfig {
            id,
            kind,
            encryption,
            rate_limit,
            single_put_max,
        },
        id_node,
        place,
    ))
}

/// Two remotes that are equal or nested would list, and prune, each other's
/// objects: refuse a remote that overlaps one read before it.
fn check_apart(
    remote: &RemoteConfig,
    place: &Node,
    earlier: &[RemoteConfig],
    earlier_places: &[Node],
) -> Result<(), Fault> {
    for (other, other_place) in earlier.iter().zip(earlier_places) {
        let overlap = match (&remote.kind, &other.kind) {
            (RemoteKind::Local(a), RemoteKind::Local(b)) => {
                is_within(&a.path, &b.path) || is_within(&b.path, &a.path)
            }
            (RemoteKind::S3(a), RemoteKind::S3(b)) => {
                a.store_identity() == b.store_identity()
                    && (a.prefix.starts_with(&b.prefix) || b.prefix.starts_with(&a.prefix))
            }
            _ => false,
        };
        if overlap {
            return Err(place.fault(format!(
                "remote {:?} ({}) overlaps remote {:?} ({}, at {}): each would list and prune \
                 the other's objects; give every remote its own place, none inside another",
                remote.id,
                remote.location(),
                other.id,
                other.location(),
                other_place.path()
            )));
        }
    }
    Ok(())
}

/// The `safety` section.
fn safety(node: &Node) -> Result<Safety, Fault> {
    let map = node.map(SAFETY_KEYS)?;
    let mut out = Safety::default();
    if let Some(n) = map.get("prune_budget") {
        out.prune_budget = share(&n)?;
    }
    let duration = |key: &str| -> Result<Option<Duration>, Fault> {
        let Some(n) = map.get(key) else {
            return Ok(None);
        };
        if let Value::Number(num) = n.value() {
            return Err(n.fault(format!("{num} has no unit; write e.g. {num}m")));
        }
        parse_duration(n.str()?).map(Some).map_err(|m| n.fault(m))
    };
    if let Some(d) = duration("clock_tolerance")? {
        out.clock_tolerance = d;
    }
    if let Some(d) = duration("abort_incomplete_uploads_after")? {
        if d < Duration::from_secs(3600) {
            return Err(map
                .get("abort_incomplete_uploads_after")
                .expect("read above")
                .fault("at least 1h: a shorter limit could abort an upload still under way"));
        }
        out.abort_incomplete_uploads_after = d;
    }
    Ok(out)
}

/// A share: `50%` or `0.5`, from 0 to 1.
fn share(node: &Node) -> Result<f64, Fault> {
    let bad = || node.fault("write a share such as 50% or 0.5 (0 to 100%)");
    let v = match node.value() {
        Value::Number(n) => n.as_f64().ok_or_else(bad)?,
        Value::String(s) => match s.trim().strip_suffix('%') {
            Some(pct) => pct.trim().parse::<f64>().map_err(|_| bad())? / 100.0,
            None => s.trim().parse::<f64>().map_err(|_| bad())?,
        },
        _ => return Err(bad()),
    };
    if !(0.0..=1.0).contains(&v) {
        return Err(bad());
    }
    Ok(v)
}

/// The `s3` section of a remote.
fn s3_config(node: &Node, base_dir: &Path) -> Result<S3Config, Fault> {
    let map = node.map(S3_KEYS)?;
    let bucket = map.required("bucket")?.non_empty_str()?.to_string();
    // A prefix is a directory: `bk` and `bk/` both mean `bk/`, so a remote at
    // `bk` never sees (or prunes) the keys of a neighbour at `bk-long`.
    let prefix = match map.get("prefix") {
        Some(p) => {
            let mut prefix = p.str()?.to_string();
            if !prefix.is_empty() && !prefix.ends_with('/') {
                prefix.push('/');
            }
            prefix
        }
        None => String::new(),
    };
    let endpoint = match map.get("endpoint") {
        Some(e) => endpoint(&e, base_dir)?,
        None => S3Endpoint::default(),
    };
    Ok(S3Config {
        bucket,
        prefix,
        endpoint,
    })
}

/// The `endpoint` section of an S3 remote.
fn endpoint(node: &Node, base_dir: &Path) -> Result<S3Endpoint, Fault> {
    let map = node.map(ENDPOINT_KEYS)?;
    let opt_str = |key: &str| -> Result<Option<String>, Fault> {
        map.get(key)
            .map(|n| n.non_empty_str().map(str::to_string))
            .transpose()
    };
    let endpoint_url = opt_str("endpoint_url")?;
    if let (Some(url), Some(n)) = (&endpoint_url, map.get("endpoint_url")) {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(n.fault(format!(
                "endpoint URL {:?} must start with http:// or https://",
                crate::errors::redact_url(url)
            )));
        }
    }
    let secret_access_key = match map.get("aws_secret_access_key") {
        // Checked without echoing the value anywhere.
        Some(n) => Some(Secret::new(n.non_empty_str()?)),
        None => None,
    };
    let access_key_id = opt_str("aws_access_key_id")?;
    // One key without the other would fail on the first request; say so now.
    match (&access_key_id, map.get("aws_access_key_id"), map.get("aws_secret_access_key")) {
        (Some(_), Some(n), None) => {
            return Err(n.fault("aws_access_key_id needs aws_secret_access_key next to it (or remove both to use the AWS credential chain)"))
        }
        (None, _, Some(n)) => {
            return Err(n.fault("aws_secret_access_key needs aws_access_key_id next to it (or remove both to use the AWS credential chain)"))
        }
        _ => {}
    }
    if let Some(n) = map.get("api_version") {
        // Accepted for btrfs2s3 compatibility; the SDK pins its own API version.
        if matches!(n.value(), Value::Sequence(_) | Value::Mapping(_)) {
            return Err(n.expected("a version string such as 2006-03-01"));
        }
    }
    let verify = match map.get("verify") {
        None => Verify::Default,
        Some(n) => match n.value() {
            Value::Bool(true) => Verify::Default,
            Value::Bool(false) => Verify::Disabled,
            Value::String(_) => Verify::CaBundle(base_dir.join(n.non_empty_str()?)),
            _ => return Err(n.expected("true, false or the path of a CA bundle (.pem)")),
        },
    };
    let force_path_style = map.get("force_path_style").map(|n| n.bool()).transpose()?;
    Ok(S3Endpoint {
        endpoint_url,
        region_name: opt_str("region_name")?,
        profile_name: opt_str("profile_name")?,
        access_key_id,
        secret_access_key,
        verify,
        force_path_style,
    })
}

/// The nodes of a source that checks across sources point at.
struct SourceNodes<'v> {
    /// `name`, or `path` when the name is derived from it.
    name: Node<'v>,
    path: Node<'v>,
    snapshots: Node<'v>,
}

/// A snapshot dir inside a source subvolume (its own or another one) would make
/// each snapshot change that source: refuse it.
fn check_snapshot_dirs(sources: &[Source], nodes: &[SourceNodes]) -> Result<(), Fault> {
    for (source, at) in sources.iter().zip(nodes) {
        for (other, other_at) in sources.iter().zip(nodes) {
            if !is_within(&source.snapshots, &other.path) {
                continue;
            }
            let relation = if same_path(&source.snapshots, &other.path) {
                "is"
            } else {
                "is inside"
            };
            let which = if std::ptr::eq(source, other) {
                String::new()
            } else {
                format!(" ({})", other_at.path.path())
            };
            return Err(at.snapshots.fault(format!(
                "the snapshot dir {} {relation} the source {}{which}: each snapshot would \
                 change that source (so every run would see new data) and nest in the next \
                 snapshot; put the snapshots outside every source subvolume",
                source.snapshots.display(),
                other.path.display()
            )));
        }
    }
    Ok(())
}

/// One entry of `sources`, and the nodes that checks across sources point at.
fn source<'v>(
    node: &Node<'v>,
    remotes: &[RemoteConfig],
) -> Result<(Source, SourceNodes<'v>), Fault> {
    let map = node.map(&[SOURCE_KEYS, operations::SOURCE_KEYS].concat())?;
    let max_age = operations::max_age(&map)?;
    let path_node = map.required("path")?;
    let path = abs_path(&path_node)?;
    let snapshots_node = map.required("snapshots")?;
    let snapshots = abs_path(&snapshots_node)?;
    let (name, name_node) = match map.get("name") {
        Some(n) => (identifier(&n, "source name")?, n),
        None => {
            let base = path.file_name().and_then(|b| b.to_str()).ok_or_else(|| {
                path_node.fault(format!(
                    "{} has no base name to name the source by; add `name:`",
                    path.display()
                ))
            })?;
            (base.to_string(), path_node.clone())
        }
    };
    let postgres = map.get("postgres").map(|n| postgres(&n)).transpose()?;
    let dedupe = match map.get("dedupe") {
        Some(n) => {
            let d = n.map(&["after_run"])?;
            DedupeConfig {
                after_run: d
                    .get("after_run")
                    .map(|n| n.bool())
                    .transpose()?
                    .unwrap_or(false),
            }
        }
        None => DedupeConfig::default(),
    };
    let mut uploads: Vec<UploadConfig> = Vec::new();
    for up in map.required("upload_to_remotes")?.non_empty_seq()? {
        let (upload, id_node) = upload(&up, remotes)?;
        if uploads.iter().any(|u| u.id == upload.id) {
            return Err(id_node.fault(format!(
                "remote {:?} is listed twice for this source; merge the entries",
                upload.id
            )));
        }
        uploads.push(upload);
    }
    Ok((
        Source {
            name,
            path,
            snapshots,
            postgres,
            dedupe,
            upload_to_remotes: uploads,
            max_age,
        },
        SourceNodes {
            name: name_node,
            path: path_node,
            snapshots: snapshots_node,
        },
    ))
}

/// The `postgres` section of a source.
fn postgres(node: &Node) -> Result<PostgresConfig, Fault> {
    let map = node.map(&[
        "connection",
        "mode",
        "timeout",
        "pitr_window",
        "sslmode",
        "sslrootcert",
    ])?;
    let connection = Secret::new(map.required("connection")?.non_empty_str()?);
    let mode = match map.get("mode") {
        None => PgMode::default(),
        Some(n) => match n.str()? {
            "checkpoint" => PgMode::Checkpoint,
            "backup" => PgMode::Backup,
            other => {
                return Err(n.fault(format!(
                    "unknown mode {other:?} (expected checkpoint or backup)"
                )))
            }
        },
    };
    let timeout = match map.get("timeout") {
        None => DEFAULT_PG_TIMEOUT,
        Some(n) => {
            if let Value::Number(num) = n.value() {
                return Err(n.fault(format!("{num} has no unit; write e.g. {num}s")));
            }
            let d = parse_duration(n.str()?).map_err(|m| n.fault(m))?;
            if d.is_zero() {
                return Err(n.fault("timeout must be longer than zero"));
            }
            d
        }
    };
    let pitr_window = match map.get("pitr_window") {
        None => None,
        Some(n) => {
            if let Value::Number(num) = n.value() {
                return Err(n.fault(format!("{num} has no unit; write e.g. {num}d")));
            }
            let d = parse_duration(n.str()?).map_err(|m| n.fault(m))?;
            if d.is_zero() {
                return Err(n.fault(
                    "pitr_window must be longer than zero (leave it out to keep the WAL every kept backup can use)",
                ));
            }
            Some(d)
        }
    };
    let sslmode = match map.get("sslmode") {
        None => None,
        Some(n) => Some(match n.str()? {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(n.fault(format!(
                    "unknown sslmode {other:?} (expected disable, prefer, require, verify-ca or verify-full)"
                )))
            }
        }),
    };
    let sslrootcert = map.get("sslrootcert").map(|n| abs_path(&n)).transpose()?;
    if let (Some(m @ (SslMode::VerifyCa | SslMode::VerifyFull)), None) = (sslmode, &sslrootcert) {
        return Err(map.required("sslmode")?.fault(format!(
            "sslmode {} needs sslrootcert: the CA certificate file (PEM) the server's certificate must lead to",
            m.as_str()
        )));
    }
    Ok(PostgresConfig {
        connection,
        mode,
        timeout,
        pitr_window,
        sslmode,
        sslrootcert,
    })
}

/// One entry of `upload_to_remotes`; returns its id node for duplicate reports.
fn upload<'v>(
    node: &Node<'v>,
    remotes: &[RemoteConfig],
) -> Result<(UploadConfig, Node<'v>), Fault> {
    let map = node.map(UPLOAD_KEYS)?;
    let id_node = map.required("id")?;
    let id = id_node.non_empty_str()?.to_string();
    if !remotes.iter().any(|r| r.id == id) {
        let ids: Vec<&str> = remotes.iter().map(|r| r.id.as_str()).collect();
        return Err(id_node.fault(format!(
            "unknown remote {id:?}; the remotes defined under `remotes` are: {}",
            ids.join(", ")
        )));
    }
    let preserve_node = map.required("preserve")?;
    let text = preserve_node.str()?;
    let preserve = Policy::from_str(text)
        .map_err(|e| preserve_node.fault(format!("bad policy {text:?}: {e}")))?;
    let commands = |key: &str| match map.get(key) {
        Some(n) => pipe_through(&n),
        None => Ok(Vec::new()),
    };
    let restore_pipe_through = commands("restore_pipe_through")?;
    let pipe_through = commands("pipe_through")?;
    let compression = match map.get("compression") {
        Some(n) => compression(&n)?,
        // btrfs2s3 configs compress inside pipe_through; compressing twice wastes CPU.
        None if !pipe_through.is_empty() => Compression {
            codec: Codec::None,
            level: None,
            threads: None,
        },
        None => Compression {
            codec: Codec::Zstd,
            level: None,
            threads: None,
        },
    };
    let storage_class = match map.get("storage_class") {
        Some(n) => storage_classes(&n)?,
        None => StorageClasses::default(),
    };
    let object_lock = match map.get("object_lock") {
        Some(n) => {
            let lock = n.map(&["mode"])?;
            let mode_node = lock.required("mode")?;
            let mode = match mode_node.str()? {
                "GOVERNANCE" => ObjectLockMode::Governance,
                "COMPLIANCE" => ObjectLockMode::Compliance,
                other => {
                    return Err(mode_node.fault(format!(
                        "unknown object lock mode {other:?} (expected GOVERNANCE or COMPLIANCE)"
                    )))
                }
            };
            if let Some(RemoteKind::Local(_)) = remotes.iter().find(|r| r.id == id).map(|r| &r.kind)
            {
                return Err(n.fault(format!(
                    "object_lock needs an s3 remote, and {id:?} is a local directory; remove it"
                )));
            }
            Some(ObjectLockConfig { mode })
        }
        None => None,
    };
    Ok((
        UploadConfig {
            id,
            preserve,
            compression,
            pipe_through,
            restore_pipe_through,
            storage_class,
            object_lock,
        },
        id_node,
    ))
}

/// `compression: zstd` or `compression: {codec: zstd, level: 3}`.
fn compression(node: &Node) -> Result<Compression, Fault> {
    let parse_codec = |n: &Node| -> Result<Codec, Fault> {
        let name = n.str()?;
        Codec::from_str(name).map_err(|e| n.fault(e.to_string()))
    };
    match node.value() {
        Value::String(_) => Ok(Compression {
            codec: parse_codec(node)?,
            level: None,
            threads: None,
        }),
        Value::Mapping(_) => {
            let map = node.map(&["codec", "level", "threads"])?;
            let codec = parse_codec(&map.required("codec")?)?;
            let level = match map.get("level") {
                None => None,
                Some(n) => {
                    let level = n.int()?;
                    let Some(range) = Compression::level_range(codec) else {
                        return Err(n.fault(format!("codec {codec} takes no level; remove it")));
                    };
                    match i32::try_from(level) {
                        Ok(l) if range.contains(&l) => Some(l),
                        _ => {
                            return Err(n.fault(format!(
                                "level {level} is out of range for {codec} ({}..={})",
                                range.start(),
                                range.end()
                            )))
                        }
                    }
                }
            };
            let threads = match map.get("threads") {
                None => None,
                Some(n) => {
                    let t = n.int()?;
                    if codec != Codec::Zstd {
                        return Err(n.fault(format!(
                            "only zstd compresses on several threads; remove threads for {codec}"
                        )));
                    }
                    let max = crate::stream::MAX_THREADS;
                    match u32::try_from(t) {
                        Ok(t) if (1..=max).contains(&t) => Some(t),
                        _ => {
                            return Err(n.fault(format!("threads {t} is out of range (1..={max})")))
                        }
                    }
                }
            };
            Ok(Compression {
                codec,
                level,
                threads,
            })
        }
        _ => {
            Err(node.expected("zstd, gzip, none or a mapping {codec: zstd, level: 3, threads: 2}"))
        }
    }
}

/// `pipe_through: [[gzip], [gpg, --encrypt, -r, me@example.com]]` (and
/// `restore_pipe_through`, in the same shape).
fn pipe_through(node: &Node) -> Result<Vec<Vec<String>>, Fault> {
    let mut commands = Vec::new();
    for cmd in node.seq()? {
        let argv: Vec<String> = cmd
            .seq()
            .map_err(|_| cmd.expected("a command as a list of arguments, e.g. [zstd, -3]"))?
            .iter()
            .map(|arg| match arg.value() {
                // Numbers are fine as arguments (`[zstd, -3]` has a string, `[xz, 9]` not).
                Value::Number(n) => Ok(n.to_string()),
                _ => arg.str().map(str::to_string),
            })
            .collect::<Result<_, _>>()?;
        if argv.is_empty() {
            return Err(cmd.fault("empty command; give at least the program name"));
        }
        commands.push(argv);
    }
    Ok(commands)
}

/// `storage_class: {yearly: DEEP_ARCHIVE, default: STANDARD}`.
fn storage_classes(node: &Node) -> Result<StorageClasses, Fault> {
    let mut allowed: Vec<&str> = Timeframe::ALL.iter().map(|tf| tf.adjective()).collect();
    allowed.push("default");
    let map = node.map(&allowed)?;
    let mut classes = StorageClasses::default();
    for key in &allowed {
        let Some(n) = map.get(key) else { continue };
        let class = n.non_empty_str()?;
        if !class
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        {
            return Err(n.fault(format!(
                "bad storage class {class:?}: S3 storage classes are upper case, e.g. STANDARD, \
                 STANDARD_IA, GLACIER_IR, DEEP_ARCHIVE"
            )));
        }
        match Timeframe::from_str(key) {
            Ok(tf) => classes.by_timeframe.push((tf, class.to_string())),
            Err(_) => classes.default = class.to_string(),
        }
    }
    Ok(classes)
}
