//! `subvault config init`: parses the arguments, has `ops::config_init` write
//! the starter config, then checks it like `config check`.

use std::path::{Path, PathBuf};

use anyhow::Result;

use super::config_cmd::{self, CheckArgs};
use crate::ops::config_init::{write_new, InitSpec};

/// Arguments of `subvault config init`.
#[derive(Debug, Clone, clap::Args)]
pub struct InitArgs {
    /// The subvolume to back up (absolute path); its snapshots go to
    /// `snapshots` next to it.
    #[arg(long, value_name = "PATH")]
    pub source: PathBuf,
    /// The S3 bucket.
    #[arg(long, value_name = "NAME")]
    pub bucket: String,
    /// An S3-compatible endpoint (default: AWS).
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,
}

/// Writes the starter config to the config path (`-c`), never over an
/// existing file, then checks it: exit 0, or 2 if the check fails.
pub fn execute(config_path: &Path, args: &InitArgs) -> Result<i32> {
    let spec = InitSpec::new(&args.source, &args.bucket, args.endpoint.as_deref())?;
    write_new(config_path, &spec.render())?;
    if !super::quiet() {
        println!("wrote {}", config_path.display());
    }
    config_cmd::execute(config_path, &CheckArgs::default())
}
