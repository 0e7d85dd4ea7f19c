//! The node probe's library: everything `sockwarden-probe` runs, so examples and benchmarks
//! can drive the same code.
pub mod attribution;
pub mod backend;
pub mod btf_offsets;
pub mod cgroup;
pub mod cluster;
pub mod decide;
pub mod enforce;
pub mod event;
pub mod finding;
pub mod metrics;
pub mod open_resolve;
pub mod output;
pub mod pipeline;
pub mod procinfo;
pub mod rootfs;
pub mod run;
pub mod selftest;
pub mod sockets;
