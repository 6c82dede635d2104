//! `subvault check --source NAME`: renders `ops::check`.

use std::path::Path;
use std::time::Duration;

use anyhow::Result;

use super::load_config;
use crate::errors::EXIT_OK;
use crate::ops::sources::select_sources;

/// Arguments of `subvault check`.
#[derive(Debug, Clone, clap::Args)]
pub struct CheckArgs {
    /// The PostgreSQL source to check.
    #[arg(long, value_name = "NAME")]
    pub source: String,
    /// Seconds to wait for the switched segment on every remote.
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    pub timeout: u64,
}

/// Runs `subvault check`.
pub fn execute(config_path: &Path, args: &CheckArgs) -> Result<i32> {
    let config = load_config(config_path)?;
    let source = select_sources(&config, std::slice::from_ref(&args.source))?[0];
    let rt = tokio::runtime::Runtime::new()?;
    let report = rt.block_on(crate::ops::check::check(
        &config,
        source,
        Duration::from_secs(args.timeout),
    ))?;
    for line in report {
        println!("ok: {line}");
    }
    Ok(EXIT_OK)
}
