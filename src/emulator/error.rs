//! The errors of the emulator's set-up: reading and checking its configuration, binding its
//! listeners. A leaf module: everything that can fail before the first request uses it, and it uses
//! nothing of the emulator.

use std::{net::SocketAddr, path::PathBuf};

/// Errors of the emulator's set-up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The config file could not be read.
    #[error("cannot read the emulator config {path}")]
    ReadConfig {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The config is not valid YAML for the expected structure.
    #[error("the emulator config does not parse")]
    ParseConfig(#[source] serde_yaml::Error),
    /// The config parses but is inconsistent.
    #[error("invalid emulator config: {0}")]
    InvalidConfig(String),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The requested address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}
