//! One connection to the server, with every statement bounded by the configured
//! timeout and every failure turned into a [`PgError`] that names the step.
//!
//! The connection string is parsed by tokio-postgres (key=value or URL); what
//! libpq would take from the environment and tokio-postgres does not (PGHOST,
//! PGPORT, PGUSER, PGDATABASE, PGPASSWORD, the pgpass file) is filled in here.

use std::future::Future;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_postgres::config::Host;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Config, NoTls, Row};

use super::tls::MakeRustls;
use crate::config::{PostgresConfig, SslMode};

use super::error::PgError;
use super::pgpass;

/// What one statement does and which privilege it needs, for error messages.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Step {
    /// Completes "may not ...", e.g. `run CHECKPOINT`.
    pub action: &'static str,
    /// Completes "it needs ...".
    pub needs: &'static str,
    /// Appended to a timeout message.
    pub slow_hint: &'static str,
}

impl Step {
    /// A step anyone who can log in may run.
    pub const fn plain(action: &'static str) -> Step {
        Step {
            action,
            needs: "no special privilege (check the server log)",
            slow_hint: "",
        }
    }
}

/// An open session. Dropping it closes the connection, which makes the server
/// abort a non-exclusive backup the session still holds.
pub(crate) struct Session {
    client: Client,
    connection: JoinHandle<Result<(), tokio_postgres::Error>>,
    timeout: Duration,
    /// The role logged in as (for messages).
    pub user: String,
    /// The TLS connector, for cancelling a statement the same way.
    tls: Option<MakeRustls>,
}

/// Runs a new connection's message loop on its own task.
fn spawn_connection<S, T>(
    (client, conn): (Client, tokio_postgres::Connection<S, T>),
) -> Result<(Client, JoinHandle<Result<(), tokio_postgres::Error>>), tokio_postgres::Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    Ok((client, tokio::spawn(conn)))
}

impl Session {
    /// Connect as `cfg` says (its connection string is never logged),
    /// giving up after its timeout; TLS as its `sslmode` and `sslrootcert` say.
    pub async fn connect(cfg: &PostgresConfig) -> Result<Session, PgError> {
        let mut config = complete_config(cfg.connection.expose())?;
        let user = config.get_user().unwrap_or_default().to_string();
        let target = describe_target(&config);
        let timeout = cfg.timeout;
        let tls_error = |detail: String, setting: &str| PgError::Tls {
            target: target.clone(),
            detail,
            setting: setting.to_string(),
        };
        let mode = match cfg.sslmode {
            Some(m) => m,
            None => match config.get_ssl_mode() {
                tokio_postgres::config::SslMode::Disable => SslMode::Disable,
                tokio_postgres::config::SslMode::Require => SslMode::Require,
                _ => SslMode::Prefer,
            },
        };
        config.ssl_mode(match mode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            _ => tokio_postgres::config::SslMode::Require,
        });
        let tls = MakeRustls::new(mode, cfg.sslrootcert.as_deref())
            .map_err(|e| tls_error(e.to_string(), "fix postgres.sslrootcert"))?;
        let connecting = async {
            match tls.clone() {
                None => spawn_connection(config.connect(NoTls).await?),
                Some(tls) => spawn_connection(config.connect(tls).await?),
            }
        };
        let (client, connection) = match tokio::time::timeout(timeout, connecting).await {
            Err(_) => {
                return Err(PgError::Timeout {
                    action: "accept the connection",
                    timeout,
                    hint: "; is the address right and the server healthy?",
                })
            }
            Ok(Err(e)) => return Err(connect_error(&e, &target, &user, mode, cfg)),
            Ok(Ok(pair)) => pair,
        };
        Ok(Session {
            client,
            connection,
            timeout,
            user,
            tls,
        })
    }

    /// Run `sql` expecting exactly one row.
    pub async fn one(
        &self,
        step: Step,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row, PgError> {
        self.bounded(step, self.client.query_one(sql, params)).await
    }

    /// Run `sql` returning all rows.
    pub async fn all(
        &self,
        step: Step,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, PgError> {
        self.bounded(step, self.client.query(sql, params)).await
    }

    /// Run a statement without results (e.g. `CHECKPOINT`).
    pub async fn execute(&self, step: Step, sql: &str) -> Result<(), PgError> {
        self.bounded(step, self.client.batch_execute(sql)).await
    }

    /// Close the connection and wait (briefly) until it is gone, so the server
    /// has seen the session end when this returns.
    pub async fn close(self) {
        let Session {
            client, connection, ..
        } = self;
        drop(client);
        let _ = tokio::time::timeout(Duration::from_secs(5), connection).await;
    }

    async fn bounded<T>(
        &self,
        step: Step,
        fut: impl Future<Output = Result<T, tokio_postgres::Error>>,
    ) -> Result<T, PgError> {
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(query_error(&e, step, &self.user, self.timeout)),
            Err(_) => {
                // The server keeps running the statement unless told otherwise.
                let token = self.client.cancel_token();
                let cancel = async {
                    match self.tls.clone() {
                        None => token.cancel_query(NoTls).await,
                        Some(tls) => token.cancel_query(tls).await,
                    }
                };
                let _ = tokio::time::timeout(Duration::from_secs(5), cancel).await;
                Err(PgError::Timeout {
                    action: step.action,
                    timeout: self.timeout,
                    hint: step.slow_hint,
                })
            }
        }
    }
}

/// True when the error means the session is gone (backend terminated, server
/// restart, network cut): for a backup this means the server aborted it.
pub(crate) fn session_lost(e: &PgError) -> Option<String> {
    match e {
        PgError::Query { detail, .. } if detail.starts_with(LOST_PREFIX) => Some(detail.clone()),
        PgError::Unreachable { detail, .. } => Some(detail.clone()),
        _ => None,
    }
}

const LOST_PREFIX: &str = "connection lost: ";

/// Parse the connection string and fill in libpq's environment defaults.
fn complete_config(connection: &str) -> Result<Config, PgError> {
    let mut config = Config::from_str(connection.trim()).map_err(|e| {
        // tokio-postgres' parse errors name the option, never its value.
        PgError::BadConnection(error_chain(&e))
    })?;
    if config.get_hosts().is_empty() && config.get_hostaddrs().is_empty() {
        match std::env::var("PGHOST") {
            Ok(h) if !h.is_empty() => {
                config.host(h);
            }
            _ => {
                let debian = Path::new("/var/run/postgresql");
                config.host_path(if debian.is_dir() {
                    debian
                } else {
                    Path::new("/tmp")
                });
            }
        }
    }
    if config.get_ports().is_empty() {
        if let Some(port) = std::env::var("PGPORT").ok().and_then(|p| p.parse().ok()) {
            config.port(port);
        }
    }
    if config.get_user().is_none() {
        let user = std::env::var("PGUSER")
            .ok()
            .filter(|u| !u.is_empty())
            .or_else(os_user)
            .ok_or_else(|| {
                PgError::BadConnection("no user given and the OS user is unknown".into())
            })?;
        config.user(user);
    }
    if config.get_dbname().is_none() {
        if let Ok(db) = std::env::var("PGDATABASE") {
            config.dbname(db);
        }
    }
    if config.get_application_name().is_none() {
        // Lets operators (and the tests) find subvault's session in pg_stat_activity.
        config.application_name("subvault");
    }
    if config.get_password().is_none() {
        if let Some(pw) = std::env::var_os("PGPASSWORD") {
            config.password(pw.into_encoded_bytes());
        } else if let Some(pw) = pgpass_password(&config) {
            config.password(pw);
        }
    }
    Ok(config)
}

/// The password for the first host in the pgpass file, as libpq would pick it.
fn pgpass_password(config: &Config) -> Option<String> {
    let file = pgpass::default_file()?;
    let host = match (config.get_hosts().first(), config.get_hostaddrs().first()) {
        (Some(Host::Tcp(h)), _) => h.clone(),
        (Some(Host::Unix(_)), _) => "localhost".to_string(),
        (None, Some(addr)) => addr.to_string(),
        (None, None) => "localhost".to_string(),
    };
    let user = config.get_user().unwrap_or_default();
    let key = pgpass::PassKey {
        host: &host,
        port: config
            .get_ports()
            .first()
            .copied()
            .unwrap_or(5432)
            .to_string(),
        database: config.get_dbname().unwrap_or(user),
        user,
    };
    pgpass::lookup(&file, &key)
}

/// The name of the effective OS user (what libpq uses when no user is given).
fn os_user() -> Option<String> {
    let uid = nix::unistd::geteuid();
    nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map(|u| u.name)
}

/// `host:port` (or the socket directory) for messages.
fn describe_target(config: &Config) -> String {
    let port = config.get_ports().first().copied().unwrap_or(5432);
    match (config.get_hosts().first(), config.get_hostaddrs().first()) {
        (_, Some(addr)) => format!("{addr}:{port}"),
        (Some(Host::Tcp(h)), None) => format!("{h}:{port}"),
        (Some(Host::Unix(dir)), None) => format!("socket {}/.s.PGSQL.{port}", dir.display()),
        (None, None) => format!("port {port}"),
    }
}

/// The error's message and its causes, without tokio-postgres' bare "db error".
fn error_chain(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return db.message().to_string();
    }
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// When a failed connection is TLS's doing: what to change.
fn tls_setting_at_fault(detail: &str, mode: SslMode, cfg: &PostgresConfig) -> Option<String> {
    let ca = || {
        cfg.sslrootcert
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    };
    // pg_hba.conf `hostssl` only: PostgreSQL 14+ says "no encryption",
    // older ones "SSL off".
    if detail.contains("no pg_hba.conf entry")
        && (detail.contains("no encryption") || detail.contains("SSL off"))
    {
        return Some(format!(
            "the server takes only TLS connections here (pg_hba.conf hostssl) and postgres.sslmode is {}: set sslmode to require, verify-ca or verify-full",
            mode.as_str()
        ));
    }
    if detail.contains("server does not support TLS") {
        return Some(format!(
            "the server does not offer TLS (ssl = off) and postgres.sslmode is {}: turn ssl on in the server or set sslmode to prefer or disable",
            mode.as_str()
        ));
    }
    if detail.contains("not valid for name") || detail.contains("NotValidForName") {
        return Some(
            "the server's certificate does not name the host connected to, which postgres.sslmode verify-full requires: connect by a name the certificate holds (host in postgres.connection) or use sslmode verify-ca"
                .to_string(),
        );
    }
    if detail.contains("invalid peer certificate") || detail.contains("UnknownIssuer") {
        return Some(format!(
            "the server's certificate does not lead to a CA in postgres.sslrootcert {}: point sslrootcert at the CA that signed it",
            ca()
        ));
    }
    if detail.contains("error performing TLS") {
        return Some(format!(
            "check postgres.sslmode ({}) and postgres.sslrootcert",
            mode.as_str()
        ));
    }
    None
}

/// Classify a failed connection attempt.
fn connect_error(
    e: &tokio_postgres::Error,
    target: &str,
    user: &str,
    mode: SslMode,
    cfg: &PostgresConfig,
) -> PgError {
    let detail = error_chain(e);
    if let Some(setting) = tls_setting_at_fault(&detail, mode, cfg) {
        return PgError::Tls {
            target: target.to_string(),
            detail,
            setting,
        };
    }
    let auth = |detail: String| PgError::Authentication {
        target: target.to_string(),
        user: user.to_string(),
        detail,
    };
    if let Some(code) = e.code() {
        if *code == SqlState::INVALID_PASSWORD
            || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
        {
            return auth(detail);
        }
        if *code == SqlState::CANNOT_CONNECT_NOW || *code == SqlState::ADMIN_SHUTDOWN {
            return PgError::Unreachable {
                target: target.to_string(),
                detail,
            };
        }
        return PgError::Query {
            action: "accept the connection",
            detail,
        };
    }
    if detail.contains("password missing") {
        return auth("the server asks for a password and none was given".into());
    }
    if detail.starts_with("authentication error") {
        return auth(detail);
    }
    if detail.starts_with("invalid configuration") {
        return PgError::BadConnection(detail);
    }
    PgError::Unreachable {
        target: target.to_string(),
        detail,
    }
}

/// Classify a failed statement.
fn query_error(e: &tokio_postgres::Error, step: Step, user: &str, timeout: Duration) -> PgError {
    let detail = error_chain(e);
    match e.code() {
        Some(code) if *code == SqlState::INSUFFICIENT_PRIVILEGE => PgError::InsufficientPrivilege {
            user: user.to_string(),
            action: step.action,
            needed: step.needs,
            detail,
        },
        Some(code)
            if *code == SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE
                && detail.contains("already in progress") =>
        {
            PgError::BackupInProgress { detail }
        }
        Some(code) if *code == SqlState::QUERY_CANCELED => PgError::Timeout {
            action: step.action,
            timeout,
            hint: step.slow_hint,
        },
        Some(code)
            if *code == SqlState::ADMIN_SHUTDOWN
                || *code == SqlState::CRASH_SHUTDOWN
                || code.code().starts_with("08") =>
        {
            PgError::Query {
                action: step.action,
                detail: format!("{LOST_PREFIX}{detail}"),
            }
        }
        Some(_) => PgError::Query {
            action: step.action,
            detail,
        },
        None if e.is_closed() || detail.starts_with("error communicating") => PgError::Query {
            action: step.action,
            detail: format!("{LOST_PREFIX}{detail}"),
        },
        None => PgError::Query {
            action: step.action,
            detail,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_connection_string_names_no_secret() {
        let err = complete_config("host=x password=hunter2 bogus_option=1").unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, PgError::BadConnection(_)), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
    }

    #[test]
    fn url_and_key_value_forms_parse() {
        let c = complete_config("postgresql://backup:pw@127.0.0.1:5433/app").unwrap();
        assert_eq!(c.get_user(), Some("backup"));
        assert_eq!(c.get_ports(), &[5433]);
        assert_eq!(c.get_password(), Some(&b"pw"[..]));
        assert_eq!(c.get_application_name(), Some("subvault"));
        let c = complete_config("host=127.0.0.1 user=u dbname=d").unwrap();
        assert_eq!(c.get_dbname(), Some("d"));
        assert_eq!(describe_target(&c), "127.0.0.1:5432");
    }
}
