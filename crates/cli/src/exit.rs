//! The exit codes `orchctl` itself decides; every error class has its own
//! ([`provisioner_core::ErrorCode::exit_code`]). The README's table lists both, and a test keeps
//! them equal.

/// Success.
pub const SUCCESS: u8 = 0;
/// A failure no error class covers (the async runtime could not start).
pub const UNEXPECTED: u8 = 1;
/// Flags that do not parse (clap's own exit code).
pub const USAGE: u8 = 2;
/// `status`: the pool's engine is not running.
pub const NOT_RUNNING: u8 = 12;

/// The codes above with their meaning, as the README's table words them.
pub const TABLE: [(u8, &str); 4] = [
    (SUCCESS, "success"),
    (UNEXPECTED, "unexpected failure"),
    (USAGE, "usage error"),
    (NOT_RUNNING, "`status`: not running"),
];
