//! A throwaway GnuPG home for tests that encrypt through `pipe_through`:
//! symmetric encryption with a passphrase file, in batch mode. Dropping it
//! stops the gpg-agent that gpg started for the home and removes the home.

use std::path::PathBuf;
use std::process::Command;

/// A private `--homedir` with a passphrase file.
pub struct GpgHome {
    dir: tempfile::TempDir,
    passphrase_file: PathBuf,
}

impl GpgHome {
    /// A new home (mode 0700, as gpg wants) and passphrase file.
    pub fn new() -> GpgHome {
        let dir = tempfile::tempdir().unwrap();
        let passphrase_file = dir.path().join("passphrase");
        std::fs::write(&passphrase_file, "correct horse battery staple\n").unwrap();
        GpgHome {
            dir,
            passphrase_file,
        }
    }

    fn base(&self) -> Vec<String> {
        [
            "gpg",
            "--homedir",
            self.dir.path().to_str().unwrap(),
            "--batch",
            "--no-tty",
            "--quiet",
            "--pinentry-mode",
            "loopback",
            "--no-symkey-cache",
            "--passphrase-file",
            self.passphrase_file.to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    /// `gpg --symmetric` (AES256, no compression of its own) from stdin to stdout.
    pub fn encrypt(&self) -> Vec<String> {
        let mut v = self.base();
        v.extend(
            [
                "--symmetric",
                "--cipher-algo",
                "AES256",
                "--compress-algo",
                "none",
            ]
            .map(String::from),
        );
        v
    }

    /// `gpg --decrypt` from stdin to stdout.
    pub fn decrypt(&self) -> Vec<String> {
        let mut v = self.base();
        v.push("--decrypt".into());
        v
    }
}

impl Drop for GpgHome {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .arg("--homedir")
            .arg(self.dir.path())
            .args(["--kill", "all"])
            .output();
    }
}

/// A command as a YAML flow sequence: `[gpg, '--homedir', '/tmp/x', ...]`.
pub fn yaml_command(cmd: &[String]) -> String {
    let quoted: Vec<String> = cmd.iter().map(|a| format!("'{a}'")).collect();
    format!("[{}]", quoted.join(", "))
}
