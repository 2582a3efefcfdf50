//! Running programs as the server's user and checking their exit status.

use std::path::Path;
use std::process::{Command, Output};

/// Builds a command that runs `program` as `run_as`, or as the current user
/// when `run_as` is `None`. setpriv execs the program in place, so the
/// child's process ID is the program's own and killing the child stops the
/// program itself.
pub(crate) fn command(run_as: Option<&str>, program: &Path) -> Command {
    match run_as {
        Some(user) => {
            let mut command = Command::new("setpriv");
            command
                .arg(format!("--reuid={user}"))
                .arg(format!("--regid={user}"))
                .args(["--init-groups", "--"])
                .arg(program);
            command
        }
        None => Command::new(program),
    }
}

/// Returns whether this process runs with user ID 0.
pub(crate) fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| output.stdout.starts_with(b"0\n"))
}

pub(crate) fn user_exists(name: &str) -> bool {
    Command::new("id")
        .arg(name)
        .output()
        .is_ok_and(|output| output.status.success())
}

/// Returns whether `program` can be started from `PATH`.
pub(crate) fn program_exists(program: &str, version_flag: &str) -> bool {
    Command::new(program).arg(version_flag).output().is_ok()
}

/// Runs `command` and returns its output, or panics with the command line
/// and the program's stdout and stderr when it cannot start or exits with a
/// failure.
pub(crate) fn run(command: &mut Command) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|error| panic!("{command:?} failed to start: {error}"));
    assert!(
        output.status.success(),
        "{command:?} failed with {}: {}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}
