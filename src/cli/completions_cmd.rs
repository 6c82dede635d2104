//! `subvault completions SHELL` and `subvault man`: generated from the same
//! clap definitions as the parser, so they never drift from it.

use std::io::Write as _;

use anyhow::Result;
use clap::CommandFactory;

use super::Cli;
use crate::errors::EXIT_OK;

/// Arguments of `subvault completions`.
#[derive(Debug, Clone, clap::Args)]
pub struct CompletionsArgs {
    /// The shell: bash, zsh or fish.
    #[arg(value_enum)]
    pub shell: Shell,
}

/// The shells completions are generated for.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Shell {
    /// bash (install as /usr/share/bash-completion/completions/subvault).
    Bash,
    /// zsh (install as /usr/share/zsh/vendor-completions/_subvault).
    Zsh,
    /// fish (install as /usr/share/fish/vendor_completions.d/subvault.fish).
    Fish,
}

/// Prints the completion script for `args.shell`.
pub fn completions(args: &CompletionsArgs) -> Result<i32> {
    let shell = match args.shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    clap_complete::generate(
        shell,
        &mut Cli::command(),
        "subvault",
        &mut std::io::stdout(),
    );
    Ok(EXIT_OK)
}

/// Prints the man page: the top-level page with every subcommand's options,
/// and the exit statuses.
pub fn man() -> Result<i32> {
    let cmd = Cli::command();
    let man = clap_mangen::Man::new(cmd.clone());
    // Rendered whole first, so a reader that stops early (`subvault man |
    // head`) is a closed pipe on one write, which is not an error.
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    man.render_description_section(&mut out)?;
    man.render_options_section(&mut out)?;
    man.render_subcommands_section(&mut out)?;
    // Each subcommand's options, as `.SH` sections of their own.
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        render_subcommand(&mut out, sub, &format!("subvault {}", sub.get_name()))?;
    }
    // Not clap_mangen's extra section: it would be titled EXTRA.
    writeln!(out, ".SH \"EXIT STATUS\"")?;
    for line in super::EXIT_STATUS_HELP.lines().skip(1) {
        match line.trim_start().split_once(char::is_whitespace) {
            Some((code, text)) if code.parse::<u16>().is_ok() => {
                writeln!(out, ".TP\n\\fB{code}\\fR\n{}", roff_escape(text.trim()))?
            }
            _ => writeln!(out, "{}", roff_escape(line.trim()))?,
        }
    }
    man.render_version_section(&mut out)?;
    match std::io::stdout().lock().write_all(&out) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(EXIT_OK),
        r => r.map(|()| EXIT_OK).map_err(Into::into),
    }
}

fn render_subcommand(out: &mut impl std::io::Write, sub: &clap::Command, path: &str) -> Result<()> {
    let about = sub
        .get_long_about()
        .or(sub.get_about())
        .map(|a| a.to_string())
        .unwrap_or_default();
    writeln!(out, ".SH \"{}\"", path.to_uppercase())?;
    for para in about.split("\n\n") {
        writeln!(out, ".PP\n{}", roff_escape(&para.replace('\n', " ")))?;
    }
    for arg in sub
        .get_arguments()
        .filter(|a| !a.is_hide_set() && !a.is_global_set())
    {
        let name = match (arg.get_short(), arg.get_long()) {
            (Some(s), Some(l)) => format!("-{s}, --{l}"),
            (None, Some(l)) => format!("--{l}"),
            (Some(s), None) => format!("-{s}"),
            (None, None) => arg.get_id().to_string().to_uppercase(),
        };
        let value = arg
            .get_value_names()
            .map(|v| format!(" {}", v.join(" ")))
            .unwrap_or_default();
        let help = arg
            .get_long_help()
            .or(arg.get_help())
            .map(|h| h.to_string())
            .unwrap_or_default();
        writeln!(
            out,
            ".TP\n\\fB{}\\fR{}\n{}",
            roff_escape(&name),
            roff_escape(&value),
            roff_escape(&help.replace('\n', " "))
        )?;
    }
    for nested in sub.get_subcommands() {
        render_subcommand(out, nested, &format!("{path} {}", nested.get_name()))?;
    }
    Ok(())
}

/// Escapes what roff would read as requests or escapes.
fn roff_escape(s: &str) -> String {
    let s = s.replace('\\', "\\e").replace('-', "\\-");
    if s.starts_with('.') || s.starts_with('\'') {
        format!("\\&{s}")
    } else {
        s
    }
}
