//! Reading a service's configuration: each service's settings are one `clap`
//! struct whose fields name their variable (`env = "POSTLINE_…"`), default and
//! doc, so `--help` is the reference. [`from_env`] parses the process's
//! arguments and environment, [`defaults`] builds the defaults without them
//! (tests), and [`ConfigError`] names a variable that is set but unusable,
//! without echoing values the help hides (URLs with passwords, tokens, keys).

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{ArgMatches, Command, FromArgMatches};
use std::ffi::OsString;
use std::num::ParseIntError;
use std::time::Duration;

/// Shown instead of a value that may be secret.
pub const REDACTED: &str = "<redacted>";

/// A configuration variable that is set but unusable.
#[derive(Debug, thiserror::Error)]
#[error("environment variable {name}={value:?} is invalid: {reason}")]
pub struct ConfigError {
    /// Variable name.
    pub name: String,
    /// Its value, or [`REDACTED`] for one that may be secret.
    pub value: String,
    /// Why it was refused.
    pub reason: String,
}

impl ConfigError {
    /// A refusal of `name` whose value is not repeated.
    pub fn redacted(name: &str, reason: impl Into<String>) -> Self {
        Self {
            name: name.to_string(),
            value: REDACTED.to_string(),
            reason: reason.into(),
        }
    }
}

/// Checks a parsed configuration against rules between variables.
pub trait Validate {
    /// Completes and checks the configuration (rules between variables,
    /// settings derived from several of them).
    fn validate(self) -> Result<Self, ConfigError>
    where
        Self: Sized;
}

/// The configuration from the process's arguments and environment. `--help`
/// and `--version` print and exit the process: call this from `main` only.
pub fn from_env<T: clap::Parser + Validate>() -> Result<T, ConfigError> {
    // A variable set but empty is unset, so its default applies.
    let command = T::command().mut_args(|arg| {
        let empty = arg.get_env().is_some_and(|name| {
            std::env::var_os(name).is_some_and(|value| value.to_string_lossy().trim().is_empty())
        });
        if empty {
            arg.env(None)
        } else {
            arg
        }
    });
    match parse::<T>(command, &T::command(), std::env::args_os()) {
        Ok(config) => config.validate(),
        Err(Refusal::Config(error)) => Err(error),
        Err(Refusal::Clap(error)) if error.kind() == ErrorKind::DisplayHelp => {
            // Help from the whole command: every variable, empty ones too.
            let mut command = T::command();
            let long = std::env::args_os().any(|arg| arg == "--help");
            let shown = if long {
                command.print_long_help()
            } else {
                command.print_help()
            };
            std::process::exit(if shown.is_ok() { 0 } else { 2 })
        }
        Err(Refusal::Clap(error)) => error.exit(),
    }
}

/// The defaults of `T`, ignoring the process's environment and arguments.
pub fn defaults<T: clap::Parser + Validate>() -> Result<T, ConfigError> {
    from_args(std::iter::empty::<&str>())
}

/// `T` from command-line `args` (without the program name) and the
/// defaults, ignoring the process's environment: for tests.
pub fn from_args<T: clap::Parser + Validate>(
    args: impl IntoIterator<Item = impl Into<OsString> + Clone>,
) -> Result<T, ConfigError> {
    let command = T::command().mut_args(|arg| arg.env(None));
    let name = OsString::from(command.get_name());
    let args = std::iter::once(name).chain(args.into_iter().map(Into::into));
    match parse::<T>(command, &T::command(), args) {
        Ok(config) => config.validate(),
        Err(Refusal::Config(error)) => Err(error),
        Err(Refusal::Clap(error)) => Err(ConfigError::redacted("", error.kind().to_string())),
    }
}

/// Seconds, as the `…_SECS` variables take them.
pub fn secs(text: &str) -> Result<Duration, ParseIntError> {
    text.trim().parse().map(Duration::from_secs)
}

/// Milliseconds, as the `…_MS` variables take them.
pub fn millis(text: &str) -> Result<Duration, ParseIntError> {
    text.trim().parse().map(Duration::from_millis)
}

/// A count of at least 1.
pub fn at_least_one(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(count) => Ok(count),
        Err(error) => Err(error.to_string()),
    }
}

/// One setting as `--help` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variable {
    /// The environment variable.
    pub name: String,
    /// Its default as shown (several values joined by commas), if any.
    pub default: Option<String>,
    /// Whether its value is hidden from `--help` and from errors.
    pub secret: bool,
}

/// Every setting of `command` read from a variable, in `--help` order: what
/// the README's configuration table is checked against.
pub fn variables(command: &Command) -> Vec<Variable> {
    command
        .get_arguments()
        .filter_map(|arg| {
            let name = arg.get_env()?.to_string_lossy().into_owned();
            let defaults: Vec<String> = arg
                .get_default_values()
                .iter()
                .map(|value| value.to_string_lossy().into_owned())
                .collect();
            Some(Variable {
                name,
                default: (!defaults.is_empty()).then(|| defaults.join(",")),
                secret: arg.is_hide_env_values_set(),
            })
        })
        .collect()
}

/// What `program --help` fails to say of `command`'s variables (each with
/// its default), or a secret value it shows: run with every secret variable
/// set to a marker and every other one set but empty, it must exit 0, list
/// them all and never print the marker. Empty when
/// all is well; the services' `tests/help.rs` assert that.
pub fn help_problems(program: &std::path::Path, command: &Command) -> Vec<String> {
    const MARKER: &str = "do-not-show-this-value";
    let listed = variables(command);
    let mut run = std::process::Command::new(program);
    run.arg("--help");
    for variable in &listed {
        // Secret ones set (never to be shown), the others set but empty
        // (which counts as unset, and must still be listed).
        run.env(&variable.name, if variable.secret { MARKER } else { "" });
    }
    let output = match run.output() {
        Ok(output) => output,
        Err(error) => return vec![format!("{} does not run: {error}", program.display())],
    };
    let help = String::from_utf8_lossy(&output.stdout);
    let mut problems = Vec::new();
    if !output.status.success() {
        problems.push(format!("--help exits with {}", output.status));
    }
    for variable in &listed {
        if !help.contains(&format!("[env: {}", variable.name)) {
            problems.push(format!("{} is not listed", variable.name));
        }
        match variable.default.as_deref() {
            Some(default)
                if !help.contains(&format!("[default: {default}]")) && !default.is_empty() =>
            {
                problems.push(format!(
                    "{} is listed without its default {default}",
                    variable.name
                ))
            }
            _ => {}
        }
    }
    if help.contains(MARKER) {
        problems.push("a secret variable's value is shown".into());
    }
    problems
}

enum Refusal {
    /// A value was refused: said without the value where it may be secret.
    Config(ConfigError),
    /// Help, version or a usage error of the command line.
    Clap(clap::Error),
}

/// Parses `args` with `command`; refusals name the variables `described` has.
fn parse<T: FromArgMatches>(
    command: Command,
    described: &Command,
    args: impl IntoIterator<Item = impl Into<OsString> + Clone>,
) -> Result<T, Refusal> {
    let matches: ArgMatches = command
        .try_get_matches_from(args)
        .map_err(|error| refusal(described, error))?;
    T::from_arg_matches(&matches).map_err(|error| refusal(described, error))
}

/// Turns clap's refusal of a value into a [`ConfigError`] naming the
/// variable; clap's own message would repeat the value, secrets included.
fn refusal(command: &Command, error: clap::Error) -> Refusal {
    if !matches!(
        error.kind(),
        ErrorKind::ValueValidation | ErrorKind::InvalidValue | ErrorKind::InvalidUtf8
    ) {
        return Refusal::Clap(error);
    }
    let flag = match error.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(flag)) => flag.clone(),
        _ => String::new(),
    };
    let arg = command.get_arguments().find(|arg| {
        arg.get_long()
            .is_some_and(|long| flag.split_whitespace().next() == Some(&format!("--{long}")))
    });
    let name = arg
        .and_then(|arg| arg.get_env())
        .map(|env| env.to_string_lossy().into_owned())
        .unwrap_or(flag);
    let secret = arg.is_none_or(|arg| arg.is_hide_env_values_set());
    let value = match error.get(ContextKind::InvalidValue) {
        Some(ContextValue::String(value)) if !secret => value.clone(),
        _ => REDACTED.to_string(),
    };
    let reason = match std::error::Error::source(&error) {
        Some(source) => source.to_string(),
        None => match error.get(ContextKind::ValidValue) {
            Some(ContextValue::Strings(valid)) => format!("use one of {}", valid.join(", ")),
            _ => error.kind().to_string(),
        },
    };
    Refusal::Config(ConfigError {
        name,
        value,
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    /// A configuration with a public and a secret setting.
    #[derive(Debug, Parser)]
    struct Sample {
        /// A count.
        #[arg(long, env = "POSTLINE_TEST_ENV_COUNT", default_value = "3", value_parser = at_least_one)]
        count: usize,
        /// A token.
        #[arg(long, env = "POSTLINE_TEST_ENV_TOKEN", default_value = "dev", hide_env_values = true, value_parser = token)]
        token: String,
    }

    fn token(text: &str) -> Result<String, String> {
        if text.len() < 3 {
            Err("too short".into())
        } else {
            Ok(text.to_string())
        }
    }

    fn parse_args(args: &[&str]) -> Result<Sample, ConfigError> {
        match parse::<Sample>(Sample::command(), &Sample::command(), args) {
            Ok(sample) => Ok(sample),
            Err(Refusal::Config(error)) => Err(error),
            Err(Refusal::Clap(error)) => panic!("unexpected clap error: {error}"),
        }
    }

    #[test]
    fn a_refused_value_names_its_variable_and_repeats_a_public_value() {
        let error = parse_args(&["x", "--count", "0"]).unwrap_err();
        assert_eq!(error.name, "POSTLINE_TEST_ENV_COUNT");
        assert_eq!(error.value, "0");
        assert_eq!(error.reason, "must be at least 1");
    }

    #[test]
    fn a_refused_secret_is_never_repeated() {
        let error = parse_args(&["x", "--token", "s3"]).unwrap_err();
        assert_eq!(error.name, "POSTLINE_TEST_ENV_TOKEN");
        assert_eq!(error.value, REDACTED);
        assert!(!error.to_string().contains("s3"), "{error}");
    }

    #[test]
    fn durations_parse_from_seconds_and_milliseconds() {
        assert_eq!(secs("90"), Ok(Duration::from_secs(90)));
        assert_eq!(millis("1500"), Ok(Duration::from_millis(1500)));
        assert!(secs("1h").is_err());
    }
}
