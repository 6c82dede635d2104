//! A failed request that never got an answer, in words: `connection refused
//! by 127.0.0.1:9`, `cannot resolve the host name ...`, `no answer within the
//! timeout`. The SDK's own rendering ends in a Debug dump of its error tree
//! (`DispatchFailure(DispatchFailure { source: ConnectorError { ... } })`),
//! which says the same thing to nobody.

use std::error::Error;
use std::io::ErrorKind;
use std::net::SocketAddr;

/// The words for a transport failure whose error chain starts at `err`.
pub(super) fn in_words(err: &(dyn Error + 'static)) -> String {
    let mut chain: Vec<&(dyn Error + 'static)> = vec![err];
    while let Some(next) = chain[chain.len() - 1].source() {
        chain.push(next);
    }
    let addr = chain.iter().find_map(|e| peer_address(&format!("{e:?}")));
    let peer = |verb: &str| match addr {
        Some(a) => format!("{verb} {a}"),
        None => String::new(),
    };
    let io = chain
        .iter()
        .find_map(|e| e.downcast_ref::<std::io::Error>());
    if let Some(io) = io {
        let what = match io.kind() {
            ErrorKind::ConnectionRefused => Some(format!("connection refused{}", sp(peer("by")))),
            ErrorKind::TimedOut => Some(format!("connection{} timed out", sp(peer("to")))),
            ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe => {
                Some(format!("connection reset{}", sp(peer("by"))))
            }
            ErrorKind::NetworkUnreachable => Some("network unreachable".to_string()),
            ErrorKind::HostUnreachable => Some(format!("host unreachable{}", sp(peer("")))),
            _ => None,
        };
        if let Some(what) = what {
            return what;
        }
    }
    // hyper's resolver says "dns error" over the resolver's own message.
    if let Some(i) = chain.iter().position(|e| e.to_string() == "dns error") {
        let why = chain
            .get(i + 1)
            .map(|e| e.to_string())
            .unwrap_or_else(|| "unknown".into());
        return format!("cannot resolve the endpoint's host name ({why})");
    }
    if chain.iter().any(|e| {
        let t = e.to_string();
        t.contains("invalid peer certificate") || t.contains("certificate")
    }) {
        return format!(
            "TLS: {} (for a private CA set `verify: /path/to/ca.pem` on the endpoint)",
            innermost(&chain)
        );
    }
    crate::errors::std_one_line(err)
}

fn sp(s: String) -> String {
    if s.trim().is_empty() {
        String::new()
    } else {
        format!(" {}", s.trim())
    }
}

fn innermost(chain: &[&(dyn Error + 'static)]) -> String {
    chain
        .iter()
        .rev()
        .map(|e| e.to_string())
        .find(|t| !t.is_empty())
        .unwrap_or_default()
}

/// The first socket address in an error's Debug text. hyper's connect error
/// keeps the address it tried only there (no accessor), as in
/// `ConnectError("tcp connect error", 127.0.0.1:9, Os { .. })`.
fn peer_address(debug: &str) -> Option<SocketAddr> {
    debug
        .split([',', '(', ')', ' ', '{', '}', '"'])
        .find_map(|token| token.parse::<SocketAddr>().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fmt;

    /// An error like hyper's ConnectError: a message, the address in its Debug
    /// only, and the io error as its source.
    struct Connect(std::io::Error, &'static str);

    impl fmt::Debug for Connect {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(
                f,
                "ConnectError(\"tcp connect error\", {}, {:?})",
                self.1, self.0
            )
        }
    }
    impl fmt::Display for Connect {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("tcp connect error")
        }
    }
    impl Error for Connect {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn refused_and_timed_out_connections_name_the_peer() {
        let e = Connect(ErrorKind::ConnectionRefused.into(), "127.0.0.1:9");
        assert_eq!(in_words(&e), "connection refused by 127.0.0.1:9");
        let e = Connect(ErrorKind::TimedOut.into(), "[::1]:443");
        assert_eq!(in_words(&e), "connection to [::1]:443 timed out");
        let bare = std::io::Error::from(ErrorKind::ConnectionRefused);
        assert_eq!(in_words(&bare), "connection refused");
    }

    #[test]
    fn other_failures_are_their_messages_without_debug() {
        let e = std::io::Error::other("stream ended early");
        assert_eq!(in_words(&e), "stream ended early");
    }
}
