//! What the first command of a raw `btrfs send` stream says: the name
//! `btrfs receive` will create in DIR, the subvolume's uuid and, for an
//! incremental stream, its parent's uuid.
//!
//! Read before `btrfs receive` starts, so a name that would escape DIR or that
//! already exists there is refused without touching the filesystem, and the
//! restore knows exactly which subvolume to delete if the receive fails.

use uuid::Uuid;

const HEADER_LEN: usize = 17;
const CMD_HEADER_LEN: usize = 10;
const CMD_SUBVOL: u16 = 1;
const CMD_SNAPSHOT: u16 = 2;
const ATTR_UUID: u16 = 1;
const ATTR_PATH: u16 = 15;
const ATTR_CLONE_UUID: u16 = 20;
/// A first command larger than this is not a real subvol/snapshot command.
const MAX_FIRST_CMD: usize = 64 * 1024;

/// The first command of a send stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamHead {
    /// The subvolume name `btrfs receive` creates.
    pub name: String,
    /// The uuid of the sent subvolume (becomes the received uuid).
    pub uuid: Uuid,
    /// The parent of an incremental stream; `None` for a full one.
    pub parent_uuid: Option<Uuid>,
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
            _ => {}
        }
        attrs = &attrs[4 + alen..];
    }
    let name = name.ok_or(HeadError::Malformed("no path"))?;
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(HeadError::UnsafeName(name));
    }
    Ok(Some(StreamHead {
        name,
        uuid: uuid.ok_or(HeadError::Malformed("no uuid"))?,
        parent_uuid: if cmd == CMD_SNAPSHOT { clone } else { None },
    }))
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
                attr(2, &5u64.to_le_bytes()),
                attr(ATTR_CLONE_UUID, p.as_bytes()),
            ],
        );
        let want = StreamHead {
            name: "home.2026-01-01T00:00:00Z".into(),
            uuid: u,
            parent_uuid: Some(p),
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
            ],
        );
        assert_eq!(parse(&s).unwrap().unwrap().parent_uuid, None);
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
}
