//! `subvault list`: the backups on each remote as a tree (see `ops::list`),
//! as text or JSON.

use std::path::Path;

use anyhow::Result;
use chrono_tz::Tz;

use super::load_config;
use crate::errors::{EXIT_FAILURE, EXIT_OK};
use crate::ops::list::{Entry, RemoteListing};
use crate::ops::{self, remotes};
use crate::units::{human_bytes, show_time};

/// Arguments of `subvault list`.
#[derive(Debug, Clone, clap::Args)]
pub struct ListArgs {
    /// Only this remote.
    #[arg(long, value_name = "ID")]
    pub remote: Option<String>,
    /// Print JSON instead of the tree.
    #[arg(long)]
    pub json: bool,
}

/// Runs `subvault list`.
pub fn execute(config_path: &Path, args: &ListArgs) -> Result<i32> {
    let config = load_config(config_path)?;
    let ids: Vec<&str> = match &args.remote {
        Some(id) => vec![remotes::pick(&config, Some(id), None)?.id.as_str()],
        None => config.remotes.iter().map(|r| r.id.as_str()).collect(),
    };
    let rt = tokio::runtime::Runtime::new()?;
    let mut listings = Vec::new();
    let mut failed = false;
    for result in rt.block_on(ops::list::list(&config, &ids)) {
        match result {
            Ok(l) => listings.push(l),
            Err(e) => {
                eprintln!("subvault: {e}");
                failed = true;
            }
        }
    }
    if args.json {
        super::print_json(&listings)?;
    } else {
        let mut out = super::StdoutText::new();
        write_text(&mut out, &listings, config.timezone);
        out.finish()?;
    }
    Ok(if failed { EXIT_FAILURE } else { EXIT_OK })
}

fn line(e: &Entry, tz: Tz) -> String {
    let time = show_time(e.at, tz);
    let kind = if e.send_parent_uuid.is_none() {
        "full"
    } else {
        "incr"
    };
    let reasons = if e.reasons.is_empty() {
        String::new()
    } else {
        let words: Vec<String> = e.reasons.iter().map(ToString::to_string).collect();
        format!("  [{}]", words.join(", "))
    };
    let orphan = e
        .orphan
        .as_ref()
        .map(|o| format!("  ({o})"))
        .unwrap_or_default();
    format!(
        "{indent}{time}  {name} {kind}  {size:>10}  {class}  {codec}  {uuid}{reasons}{orphan}\n",
        indent = "  ".repeat(e.depth + 1),
        name = e.name,
        size = e.size.map(human_bytes).unwrap_or_else(|| "?".into()),
        class = e.storage_class,
        codec = e.codec.unwrap_or("sniffed"),
        uuid = e.uuid,
    )
}

/// The text form of the listings.
pub fn render(listings: &[RemoteListing], tz: Tz) -> String {
    let mut s = String::new();
    write_text(&mut s, listings, tz);
    s
}

/// [`render`] into `s` as it goes: `list` writes it straight to stdout,
/// since the text of 100k backups is 15 MiB (issue 21).
pub fn write_text(s: &mut dyn std::fmt::Write, listings: &[RemoteListing], tz: Tz) {
    for l in listings {
        let _ = s.write_fmt(format_args!(
            "remote {} ({}{}): {} backup(s)\n",
            l.id,
            l.location,
            if l.encrypted { ", encrypted" } else { "" },
            l.backups().len() + l.orphans().len()
        ));
        for e in l.backups() {
            let _ = s.write_str(&line(&e, tz));
        }
        if l.orphans().len() > 0 {
            let _ = s.write_fmt(format_args!("  orphans ({}):\n", l.orphans().len()));
            for e in l.orphans() {
                let _ = s.write_fmt(format_args!("  {}", line(&e, tz)));
            }
        }
        for w in &l.wal {
            let _ = s.write_fmt(format_args!(
                "  WAL archive of {}: {} object(s), {}{}\n",
                w.source,
                w.objects,
                human_bytes(w.bytes),
                match (&w.first_segment, &w.last_segment, w.newest_upload) {
                    (Some(f), Some(last), Some(t)) => format!(
                        ", segments {f}{} .. {last}, timeline(s) {}, newest uploaded {}",
                        w.first_upload
                            .map(|t| format!(" (uploaded {})", crate::units::show_time(t, tz)))
                            .unwrap_or_default(),
                        w.timelines
                            .iter()
                            .map(u32::to_string)
                            .collect::<Vec<_>>()
                            .join(","),
                        crate::units::show_time(t, tz)
                    ),
                    _ => String::new(),
                }
            ));
        }
        if !l.foreign.is_empty() {
            let _ = s.write_fmt(format_args!(
                "  foreign ({}): named like backups but not authenticated; never used or deleted\n",
                l.foreign.len()
            ));
            for f in &l.foreign {
                let _ = s.write_fmt(format_args!(
                    "    {}  {}  ({})\n",
                    f.key,
                    f.size.map(human_bytes).unwrap_or_else(|| "?".into()),
                    f.why
                ));
            }
        }
    }
}
