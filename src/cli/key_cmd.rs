//! `subvault key`: make the key file of an encrypted remote, and its
//! write-only copy for a host that only writes backups (see `crypt`).

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::crypt::{self, KeyFile};
use crate::errors::{UsageError, EXIT_OK};

/// `subvault key ...`
#[derive(Debug, clap::Subcommand)]
pub enum KeyCommand {
    /// Make a new key file: an age identity and recipient, and an auth key.
    ///
    /// With --out the file is created with mode 0600 (never overwritten);
    /// without, it is printed. Keep a copy offline: without it the remote's
    /// backups can be neither read nor authenticated.
    Generate(GenerateArgs),
    /// Copy a key file without its identity, for a host that only writes
    /// backups (`run`, `plan` and `list` work with it; `restore` and `verify`
    /// need the full file).
    WriteOnly(WriteOnlyArgs),
}

/// Arguments of `subvault key generate`.
#[derive(Debug, Clone, clap::Args)]
pub struct GenerateArgs {
    /// Write the key file here (mode 0600) instead of printing it.
    #[arg(long, short, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// Arguments of `subvault key write-only`.
#[derive(Debug, Clone, clap::Args)]
pub struct WriteOnlyArgs {
    /// The full key file.
    #[arg(value_name = "IN")]
    pub input: PathBuf,
    /// The write-only copy to make (mode 0600, never overwritten).
    #[arg(value_name = "OUT")]
    pub output: PathBuf,
}

/// Runs `subvault key ...`.
pub fn execute(cmd: &KeyCommand) -> Result<i32> {
    match cmd {
        KeyCommand::Generate(args) => generate(args.out.as_deref()),
        KeyCommand::WriteOnly(args) => write_only(&args.input, &args.output),
    }
}

fn generate(out: Option<&Path>) -> Result<i32> {
    let made = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let g = crypt::generate(&made)?;
    let Some(path) = out else {
        // Like age-keygen: the file on stdout, the advice on stderr.
        print!("{}", g.text);
        eprintln!("{}", advice(Path::new("KEYFILE"), &g.recipient.to_string()));
        return Ok(EXIT_OK);
    };
    crypt::write_new(path, &g.text).map_err(|e| UsageError(e.to_string()))?;
    println!("wrote {} (mode 0600)", path.display());
    println!("{}", advice(path, &g.recipient.to_string()));
    Ok(EXIT_OK)
}

/// What to do with a new key file: what to store offline, how to use it.
fn advice(path: &Path, recipient: &str) -> String {
    let p = path.display();
    format!(
        "public key: {recipient}\n\
         Store a copy of {p} offline (a password manager, or printed and locked away): it holds \
         the identity that decrypts the backups and the auth key that authenticates them, and \
         without it they cannot be restored.\n\
         Use it in the config, per remote:   encryption: {{key_file: {p}}}\n\
         For a host that only writes backups: subvault key write-only {p} OUT\n\
         Restore one object by hand:         age -d -i {p} OBJECT | zstd -d | btrfs receive DIR"
    )
}

fn write_only(input: &Path, output: &Path) -> Result<i32> {
    let usage = |e: crypt::KeyFileError| UsageError(e.to_string());
    let key = KeyFile::load(input).map_err(usage)?;
    crypt::write_new(output, &key.write_only_text()).map_err(usage)?;
    println!(
        "wrote {} (mode 0600): the recipients and auth key of {}, no identity",
        output.display(),
        input.display()
    );
    println!(
        "A host holding it can run `subvault run`, `plan` and `list`; `restore` and `verify` need {}.",
        input.display()
    );
    Ok(EXIT_OK)
}
