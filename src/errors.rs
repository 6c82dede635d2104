//! What every layer needs to say about failure: the exit status a timer acts
//! on, the error kind that means "fix your config or command line", and error
//! chains as the one line a user reads on stderr or in the journal.
//!
//! A leaf module: it imports nothing from subvault, so any layer can raise a
//! [`UsageError`] (restic's `errors.Fatal`) without depending on `cli`.

/// Exit status: everything worked.
pub const EXIT_OK: i32 = 0;
/// Exit status: a source, object or operation failed.
pub const EXIT_FAILURE: i32 = 1;
/// Exit status: bad config or bad command-line usage.
pub const EXIT_USAGE: i32 = 2;
/// Exit status: another run holds the lock; nothing was attempted.
pub const EXIT_LOCKED: i32 = 3;
/// Exit status: stopped by SIGINT (128 + 2, as a shell reports it).
pub const EXIT_SIGINT: i32 = 130;
/// Exit status: stopped by SIGTERM (128 + 15).
pub const EXIT_SIGTERM: i32 = 143;

/// An error the user fixes by changing the config file or the command line.
/// Reported as one line on stderr, exit status 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// An error chain as one line: `outer: inner: root cause`.
///
/// Many error types print their cause in their own message *and* return it from
/// `source()` (thiserror's `#[error("...: {0}")]` next to `#[source]`), so the
/// plain `{:#}` chain repeats each such cause. A cause whose text the line
/// already holds is skipped.
pub fn one_line(e: &anyhow::Error) -> String {
    join(e.chain())
}

/// [`one_line`] for a plain error and its `source()` chain.
pub fn std_one_line(e: &(dyn std::error::Error + 'static)) -> String {
    join(std::iter::successors(Some(e), |e| e.source()))
}

/// `url` without the `user:password@` before its host, for messages and logs:
/// S3 authenticates with keys, so credentials in an endpoint URL are never
/// needed and never shown. Everything up to the last `@` before the query is
/// dropped (a password may itself hold `@` or an unescaped `/`), also when the
/// scheme is missing.
pub fn redact_url(url: &str) -> String {
    let start = url.find("://").map_or(0, |s| s + 3);
    let rest = &url[start..];
    let end = rest.find(['?', '#']).unwrap_or(rest.len());
    match rest[..end].rfind('@') {
        Some(at) => format!("{}{}", &url[..start], &rest[at + 1..]),
        None => url.to_string(),
    }
}

fn join<'a>(chain: impl Iterator<Item = &'a (dyn std::error::Error + 'static)>) -> String {
    let mut line = String::new();
    for cause in chain {
        let msg = cause.to_string();
        if msg.is_empty() || line.contains(&msg) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&msg);
    }
    line.replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("upload failed: {0}")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn causes_already_printed_are_not_repeated() {
        let io = std::io::Error::other("connection reset");
        let e = anyhow::Error::new(Outer(io)).context("source data");
        assert_eq!(one_line(&e), "source data: upload failed: connection reset");
        let io = std::io::Error::other("connection reset");
        assert_eq!(std_one_line(&Outer(io)), "upload failed: connection reset");
    }

    #[test]
    fn urls_lose_their_credentials() {
        for (url, want) in [
            ("https://u:p@h:9/x", "https://h:9/x"),
            ("http://h:9", "http://h:9"),
            ("https://AKID:s3cr@t@minio.lan", "https://minio.lan"),
            ("https://u:pa/ss@h/", "https://h/"),
            ("u:secret@h:9", "h:9"),
            ("https://h/?x=a@b", "https://h/?x=a@b"),
        ] {
            assert_eq!(redact_url(url), want, "{url}");
        }
    }

    #[test]
    fn distinct_causes_are_all_kept_on_one_line() {
        let e = anyhow::anyhow!("root\ncause")
            .context("middle")
            .context("top");
        assert_eq!(one_line(&e), "top: middle: root cause");
    }
}
