//! What every sockwarden process does, whichever binary it is: log set-up ([`logging`]),
//! the admin server for `/healthz`, `/readyz` and `/metrics` ([`admin`]) fed by [`status`],
//! waiting for a shutdown signal ([`shutdown`]) and the host's name ([`host`]).
pub mod admin;
pub mod host;
pub mod logging;
pub mod shutdown;
pub mod status;
