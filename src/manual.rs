//! The manual pages and shell completions, generated from the clap
//! definitions in `cli` (never kept by hand): `embargo-relay(8)` and one
//! page per subcommand (`embargo-relay-embargo-show(8)`, …), each with the
//! description and examples its `--help` has; completions for bash, zsh
//! and fish. `scripts/package` puts them in the Debian package.

use std::path::Path;

use anyhow::Context;
use clap::CommandFactory;

/// The manual's section: a daemon and its administration commands.
const SECTION: &str = "8";

/// Writes `out/man8/*.8` and `out/completions/{embargo-relay.bash,
/// _embargo-relay, embargo-relay.fish}`.
pub fn generate(out: &Path) -> anyhow::Result<()> {
    let man = out.join("man8");
    let completions = out.join("completions");
    for dir in [&man, &completions] {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot make {}", dir.display()))?;
    }
    let mut cmd = crate::cli::Cli::command().disable_help_subcommand(true);
    cmd.build();
    pages(&cmd, &man)?;
    // clap_complete offers hidden subcommands too: complete a copy without them.
    let mut cmd = clap::Command::new("embargo-relay")
        .version(env!("CARGO_PKG_VERSION"))
        // Its own --help and --version come with the arguments copied.
        .disable_help_flag(true)
        .disable_version_flag(true)
        .disable_help_subcommand(true)
        .args(cmd.get_arguments().cloned())
        .subcommands(cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned());
    for (shell, file) in [
        (clap_complete::Shell::Bash, "embargo-relay.bash"),
        (clap_complete::Shell::Zsh, "_embargo-relay"),
        (clap_complete::Shell::Fish, "embargo-relay.fish"),
    ] {
        let path = completions.join(file);
        let mut f = std::fs::File::create(&path)
            .with_context(|| format!("cannot write {}", path.display()))?;
        clap_complete::generate(shell, &mut cmd, "embargo-relay", &mut f);
    }
    Ok(())
}

/// `cmd`'s page and its visible subcommands' pages, named by their path
/// (`embargo-relay-roster-add.8`).
fn pages(cmd: &clap::Command, dir: &Path) -> anyhow::Result<()> {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        pages(sub, dir)?;
    }
    let version = cmd.get_version().unwrap_or(env!("CARGO_PKG_VERSION"));
    let page = clap_mangen::Man::new(cmd.clone())
        .section(SECTION)
        .source(format!("embargo-relay {version}"))
        .manual("embargo-relay");
    page.generate_to(dir).with_context(|| {
        format!(
            "cannot write the page of {} in {}",
            cmd.get_name(),
            dir.display()
        )
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    /// A page per visible command, named by its path, in section 8, each
    /// with its description and examples as `--help` has them; the
    /// completions know the subcommands and their options.
    #[test]
    fn pages_and_completions_follow_the_cli() {
        let dir = tempfile::tempdir().unwrap();
        super::generate(dir.path()).unwrap();
        let man = dir.path().join("man8");
        let mut names: Vec<String> = std::fs::read_dir(&man)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        for name in [
            "embargo-relay.8",
            "embargo-relay-run.8",
            "embargo-relay-submit.8",
            "embargo-relay-embargo-show.8",
            "embargo-relay-roster-add.8",
            "embargo-relay-check.8",
        ] {
            assert!(names.iter().any(|n| n == name), "{name} in {names:?}");
        }
        assert!(
            !names
                .iter()
                .any(|n| n.contains("generate-docs") || n.contains("-help")),
            "{names:?}"
        );
        let add = std::fs::read_to_string(man.join("embargo-relay-roster-add.8")).unwrap();
        assert!(
            add.starts_with(".ie \\n(.g .ds Aq") || add.contains(".TH"),
            "{add}"
        );
        assert!(add.contains(".TH embargo-relay-roster-add 8"), "{add}");
        assert!(add.contains("\\-\\-discover"), "options: {add}");
        assert!(
            add.contains("embargo\\-relay roster add secalert@distro.example"),
            "the example from --help: {add}"
        );
        let bash =
            std::fs::read_to_string(dir.path().join("completions/embargo-relay.bash")).unwrap();
        assert!(
            bash.contains("release-now") && bash.contains("--config"),
            "{bash}"
        );
        assert!(
            !bash.contains("generate-docs"),
            "hidden commands are not completed"
        );
        let zsh = std::fs::read_to_string(dir.path().join("completions/_embargo-relay")).unwrap();
        assert!(zsh.starts_with("#compdef embargo-relay"), "{zsh}");
        let fish =
            std::fs::read_to_string(dir.path().join("completions/embargo-relay.fish")).unwrap();
        assert!(fish.contains("import-markdown"), "{fish}");
    }
}
