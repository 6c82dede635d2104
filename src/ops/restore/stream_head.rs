//! What the first command of a raw `btrfs send` stream says: the name
//! `btrfs receive` will create in DIR, the subvolume's uuid and ctransid and,
//! for an incremental stream, its parent's uuid and ctransid.
//!
//! Read before `btrfs receive` starts, so a name that would escape DIR or that
//! already exists there is refused without touching the filesystem, a stream
//! that is not the backup its key names ([`check_against_key`]) is refused
//! before anything is received, and the restore knows exactly which subvolume
//! to delete if the receive fails.

use uuid::Uuid;

use crate::core::model::Backup;

const HEADER_LEN: usize = 17;
const CMD_HEADER_LEN: usize = 10;
const CMD_SUBVOL: u16 = 1;
const CMD_SNAPSHOT: u16 = 2;
const ATTR_UUID: u16 = 1;
const ATTR_CTRANSID: u16 = 2;
const ATTR_PATH: u16 = 15;
const ATTR_CLONE_UUID: u16 = 20;
const ATTR_CLONE_CTRANSID: u16 = 21;
/// A first command larger than this is not a real subvol/snapshot command.
const MAX_FIRST_CMD: usize = 64 * 1024;

/// The first command of a send stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamHead {
    /// The subvolume name `btrfs receive` creates.
    pub name: String,
    /// The uuid of the sent subvolume (becomes the received uuid).
    pub uuid: Uuid,
    /// The sent subvolume's ctransid (the key's `.ctid`).
    pub ctransid: u64,
    /// The parent of an incremental stream; `None` for a full one.
    pub parent_uuid: Option<Uuid>,
    /// The parent's ctransid; `None` for a full stream.
    pub parent_ctransid: Option<u64>,
}

/// Why the head cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    /// The stream does not start like a send stream.
    #[error("the stream does not start with a btrfs send header")]
    NotSendStream,
    /// The first command is not "create subvolume" or "create snapshot".
    #[error("the stream's first command is {0}, not a subvolume or snapshot command")]
    UnexpectedCommand(u16),
    /// The first command is malformed.
    #[error("the stream's first command is malformed ({0})")]
    Malformed(&'static str),
    /// The name would not be a single new entry in DIR.
    #[error(
        "the stream names its subvolume {0:?}, which is not a plain name; refusing to receive it"
    )]
    UnsafeName(String),
    /// The stream is not the backup its key describes.
    #[error("the stream does not match its key: it sends {what} {stream}, the key says {key}; refusing to receive it (was the object replaced?)")]
    KeyMismatch {
        /// Which field differs, e.g. `subvolume uuid`.
        what: &'static str,
        /// The stream's value.
        stream: String,
        /// The key's value.
        key: String,
    },
}

/// Parses the head once `buf` (the start of the raw stream) holds the whole
/// first command; `Ok(None)` means "read more".
pub fn parse(buf: &[u8]) -> Result<Option<StreamHead>, HeadError> {
    if buf.len() < HEADER_LEN {
        return if b"btrfs-stream\0".starts_with(&buf[..buf.len().min(13)]) {
            Ok(None)
        } else {
            Err(HeadError::NotSendStream)
        };
    }
    if &buf[..13] != b"btrfs-stream\0" {
        return Err(HeadError::NotSendStream);
    }
    let rest = &buf[HEADER_LEN..];
    if rest.len() < CMD_HEADER_LEN {
        return Ok(None);
    }
    let len = u32::from_le_bytes(rest[..4].try_into().unwrap()) as usize;
    let cmd = u16::from_le_bytes(rest[4..6].try_into().unwrap());
    if cmd != CMD_SUBVOL && cmd != CMD_SNAPSHOT {
        return Err(HeadError::UnexpectedCommand(cmd));
    }
    if len > MAX_FIRST_CMD {
        return Err(HeadError::Malformed("too long"));
    }
    if rest.len() < CMD_HEADER_LEN + len {
        return Ok(None);
    }
    let mut attrs = &rest[CMD_HEADER_LEN..CMD_HEADER_LEN + len];
    let (mut name, mut uuid, mut clone) = (None, None, None);
    let (mut ctransid, mut clone_ctransid) = (None, None);
    while !attrs.is_empty() {
        if attrs.len() < 4 {
            return Err(HeadError::Malformed("attribute header cut short"));
        }
        let ty = u16::from_le_bytes(attrs[..2].try_into().unwrap());
        let alen = u16::from_le_bytes(attrs[2..4].try_into().unwrap()) as usize;
        let data = attrs
            .get(4..4 + alen)
            .ok_or(HeadError::Malformed("attribute cut short"))?;
        match ty {
            ATTR_PATH => name = Some(String::from_utf8_lossy(data).into_owned()),
            ATTR_UUID => uuid = Uuid::from_slice(data).ok(),
            ATTR_CLONE_UUID => clone = Uuid::from_slice(data).ok(),
            ATTR_CTRANSID => ctransid = u64_of(data),
            ATTR_CLONE_CTRANSID => clone_ctransid = u64_of(data),
            _ => {}
        }
        attrs = &attrs[4 + alen..];
    }
    let name = name.ok_or(HeadError::Malformed("no path"))?;
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(HeadError::UnsafeName(name));
    }
    let snapshot = cmd == CMD_SNAPSHOT;
    if snapshot && (clone.is_none() || clone_ctransid.is_none()) {
        return Err(HeadError::Malformed(
            "a snapshot without its parent's uuid and ctransid",
        ));
    }
    Ok(Some(StreamHead {
        name,
        uuid: uuid.ok_or(HeadError::Malformed("no uuid"))?,
        ctransid: ctransid.ok_or(HeadError::Malformed("no ctransid"))?,
        parent_uuid: if snapshot { clone } else { None },
        parent_ctransid: if snapshot { clone_ctransid } else { None },
    }))
}

fn u64_of(data: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(data.try_into().ok()?))
}

/// Refuses a stream that is not the backup its key names: the sent
/// subvolume's uuid and ctransid must be the key's `.uuid` and `.ctid`, and
/// its parent's uuid the key's `.sndp` (none for a full backup). btrfs receive
/// would take any of these from the stream as it comes, so a planted or
/// swapped object would otherwise become a restored subvolume that claims to
/// be another one.
///
/// The parent's ctransid is not compared with the parent's key: a dedupe into
/// a read-only snapshot changes its ctransid (tested on 6.18: FIDEDUPERANGE
/// into a snapshot moved it from 9 to 11), so a child sent after the parent's
/// snapshot was deduped carries a newer parent ctransid than the parent's key,
/// legitimately; and btrfs receive finds the parent by uuid alone.
pub fn check_against_key(head: &StreamHead, backup: &Backup) -> Result<(), HeadError> {
    let mismatch =
        |what, stream: String, key: String| Err(HeadError::KeyMismatch { what, stream, key });
    if head.uuid != backup.uuid {
        return mismatch(
            "subvolume uuid",
            head.uuid.to_string(),
            backup.uuid.to_string(),
        );
    }
    if head.ctransid != backup.ctransid {
        return mismatch(
            "ctransid",
            head.ctransid.to_string(),
            backup.ctransid.to_string(),
        );
    }
    if head.parent_uuid != backup.send_parent_uuid {
        let show = |u: Option<Uuid>| {
            u.map(|u| u.to_string())
                .unwrap_or_else(|| "none (a full backup)".to_string())
        };
        return mismatch(
            "parent uuid",
            show(head.parent_uuid),
            show(backup.send_parent_uuid),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(ty: u16, data: &[u8]) -> Vec<u8> {
        let mut v = ty.to_le_bytes().to_vec();
        v.extend((data.len() as u16).to_le_bytes());
        v.extend(data);
        v
    }

    fn stream(cmd: u16, attrs: &[Vec<u8>]) -> Vec<u8> {
        let body: Vec<u8> = attrs.concat();
        let mut v = b"btrfs-stream\0".to_vec();
        v.extend(1u32.to_le_bytes());
        v.extend((body.len() as u32).to_le_bytes());
        v.extend(cmd.to_le_bytes());
        v.extend(0u32.to_le_bytes());
        v.extend(body);
        v.extend(b"more commands follow");
        v
    }

    #[test]
    fn snapshot_head_gives_name_uuid_and_parent() {
        let (u, p) = (Uuid::from_u128(7), Uuid::from_u128(9));
        let s = stream(
            CMD_SNAPSHOT,
            &[
                attr(ATTR_PATH, b"home.2026-01-01T00:00:00Z"),
                attr(ATTR_UUID, u.as_bytes()),
                attr(ATTR_CTRANSID, &5u64.to_le_bytes()),
                attr(ATTR_CLONE_UUID, p.as_bytes()),
                attr(ATTR_CLONE_CTRANSID, &3u64.to_le_bytes()),
            ],
        );
        let want = StreamHead {
            name: "home.2026-01-01T00:00:00Z".into(),
            uuid: u,
            ctransid: 5,
            parent_uuid: Some(p),
            parent_ctransid: Some(3),
        };
        assert_eq!(parse(&s).unwrap(), Some(want));
        // Every shorter prefix asks for more instead of failing.
        for n in 0..s.len() - 20 {
            assert_eq!(parse(&s[..n]).unwrap(), None, "prefix {n}");
        }
    }

    #[test]
    fn full_streams_have_no_parent() {
        let s = stream(
            CMD_SUBVOL,
            &[
                attr(ATTR_PATH, b"a"),
                attr(ATTR_UUID, Uuid::from_u128(1).as_bytes()),
                attr(ATTR_CTRANSID, &8u64.to_le_bytes()),
            ],
        );
        let h = parse(&s).unwrap().unwrap();
        assert_eq!(
            (h.parent_uuid, h.parent_ctransid, h.ctransid),
            (None, None, 8)
        );
    }

    #[test]
    fn heads_without_ctransid_or_parent_are_malformed() {
        let u = Uuid::from_u128(1);
        let s = stream(
            CMD_SUBVOL,
            &[attr(ATTR_PATH, b"a"), attr(ATTR_UUID, u.as_bytes())],
        );
        assert_eq!(parse(&s), Err(HeadError::Malformed("no ctransid")));
        let s = stream(
            CMD_SNAPSHOT,
            &[
                attr(ATTR_PATH, b"a"),
                attr(ATTR_UUID, u.as_bytes()),
                attr(ATTR_CTRANSID, &8u64.to_le_bytes()),
            ],
        );
        assert!(matches!(parse(&s), Err(HeadError::Malformed(_))));
    }

    #[test]
    fn names_that_leave_dir_and_non_streams_are_refused() {
        let u = Uuid::from_u128(1);
        for bad in [&b".."[..], b"../x", b"a/b", b"", b"."] {
            let s = stream(
                CMD_SUBVOL,
                &[attr(ATTR_PATH, bad), attr(ATTR_UUID, u.as_bytes())],
            );
            assert!(
                matches!(parse(&s), Err(HeadError::UnsafeName(_))),
                "{bad:?}"
            );
        }
        assert_eq!(parse(b"\x28\xb5\x2f\xfd"), Err(HeadError::NotSendStream));
        let s = stream(15, &[]);
        assert_eq!(parse(&s), Err(HeadError::UnexpectedCommand(15)));
    }

    fn backup(uuid: u128, ctransid: u64, parent: Option<u128>) -> Backup {
        Backup {
            key_form: format!("k{uuid}").into(),
            uuid: Uuid::from_u128(uuid),
            send_parent_uuid: parent.map(Uuid::from_u128),
            source_uuid: Uuid::nil(),
            ctransid,
            time: chrono::Utc::now(),
            size: None,
            storage_class: None,
            codec: None,
        }
    }

    fn head(uuid: u128, ctransid: u64, parent: Option<(u128, u64)>) -> StreamHead {
        StreamHead {
            name: "n".into(),
            uuid: Uuid::from_u128(uuid),
            ctransid,
            parent_uuid: parent.map(|p| Uuid::from_u128(p.0)),
            parent_ctransid: parent.map(|p| p.1),
        }
    }

    #[test]
    fn a_stream_must_be_the_backup_its_key_names() {
        let parent = backup(1, 10, None);
        let b = backup(2, 20, Some(1));
        assert_eq!(check_against_key(&head(2, 20, Some((1, 10))), &b), Ok(()));
        assert_eq!(check_against_key(&head(1, 10, None), &parent), Ok(()));
        // The parent's ctransid may have moved on since its key (a dedupe).
        assert_eq!(check_against_key(&head(2, 20, Some((1, 12))), &b), Ok(()));
        let what = |h: StreamHead, b: &Backup| match check_against_key(&h, b) {
            Err(HeadError::KeyMismatch { what, .. }) => what,
            other => panic!("{other:?}"),
        };
        assert_eq!(what(head(3, 20, Some((1, 10))), &b), "subvolume uuid");
        assert_eq!(what(head(2, 21, Some((1, 10))), &b), "ctransid");
        assert_eq!(what(head(2, 20, Some((4, 10))), &b), "parent uuid");
        assert_eq!(what(head(2, 20, None), &b), "parent uuid");
        // A full backup's key with an incremental stream.
        assert_eq!(what(head(1, 10, Some((9, 1))), &parent), "parent uuid");
        let e = check_against_key(&head(3, 20, Some((1, 10))), &b).unwrap_err();
        assert!(e.to_string().contains("does not match its key"), "{e}");
    }
}
