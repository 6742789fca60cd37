//! Kiln's integration tests: one binary, one module per area, shared helpers in `util`.

mod cli;
mod cli_output;
mod config;
mod config_reload;
mod crossing;
mod host_log;
mod http;
mod http_server;
mod logs;
mod ops;
mod redis;
mod redis_hosts;
mod redis_server;
mod registry;
mod sandbox;
mod schedules;
mod schedules_cli;
mod stall;
mod store;
mod tcp;
mod util;
mod worker;
