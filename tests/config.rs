//! Configuration: the repo's `config.toml`, defaults, every class of error (each naming its
//! key and line), environment overrides, settings resolution and backoff arithmetic.

use std::path::{Path, PathBuf};
use std::time::Duration;

use kiln::config::{
    Backoff, Config, ConfigError, DEFAULT_QUEUE, Durability, RedisTarget, StoreConfig,
};

const ORIGIN: &str = "/etc/kiln/config.toml";

fn no_env() -> Vec<(String, String)> {
    Vec::new()
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml_str(text, Path::new(ORIGIN), no_env())
}

/// Asserts that `text` is rejected with an error about `key` at `line`, whose message names
/// both, the file, and contains `detail`.
fn assert_rejected(text: &str, key: &str, line: usize, detail: &str) {
    let err = parse(text).expect_err("config should be rejected");
    let message = err.to_string();
    assert_eq!(err.key(), Some(key), "{message}");
    assert_eq!(err.line(), Some(line), "{message}");
    assert!(message.contains(&format!("`{key}`")), "{message}");
    assert!(message.contains(&format!("line {line}")), "{message}");
    assert!(message.contains(ORIGIN), "{message}");
    assert!(message.contains(detail), "{message}");
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn repo_config_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../config.toml")
}

#[test]
fn repo_config_loads() {
    let path = repo_config_path();
    let text = std::fs::read_to_string(&path).unwrap();
    let config = Config::from_toml_str(&text, &path, no_env()).unwrap();
    let dir = path.parent().unwrap();
    assert_eq!(config.host.handlers_dir, dir.join("target/handlers"));
    assert_eq!(
        config.store,
        StoreConfig::Embedded {
            path: dir.join("target/kiln.db"),
            durability: Durability::Normal
        }
    );
    for handler in [
        "echo", "flaky", "spin", "hog", "panic", "progress", "fanout", "escape",
    ] {
        assert!(
            config.handlers.contains_key(handler),
            "no [handlers.{handler}]"
        );
    }
    assert_eq!(config.queue_for("spin"), "slow");
    let spin = config.job_settings("spin", "slow");
    assert_eq!(spin.limits.timeout, secs(2));
    assert!(spin.limits.fuel.is_some());
    let hog = config.job_settings("hog", config.queue_for("hog"));
    assert_eq!(hog.limits.memory, 32 << 20);
    assert_eq!(hog.limits.timeout, secs(2));

    Config::load(&path).expect("Config::load reads the same file");
}

#[test]
fn empty_file_has_defaults() {
    let config = parse("").unwrap();
    assert_eq!(config.host.concurrency, 16);
    assert_eq!(config.host.threads, None, "one thread per CPU");
    assert_eq!(config.host.handlers_dir, Path::new("/etc/kiln/handlers"));
    assert_eq!(config.host.lease, secs(30));
    assert_eq!(config.host.shutdown_grace, secs(10));
    assert_eq!(config.host.unknown_handler_grace, secs(300));
    assert!(matches!(
        config.store,
        StoreConfig::Embedded {
            durability: Durability::Normal,
            ..
        }
    ));
    let default = &config.queues[DEFAULT_QUEUE];
    assert_eq!(default.concurrency, 16);
    assert_eq!((default.priority, default.paused), (0, false));
    assert_eq!(config.queue_for("anything"), DEFAULT_QUEUE);

    let job = config.job_settings("anything", DEFAULT_QUEUE);
    assert_eq!(job.max_attempts, 3);
    assert_eq!(job.limits.timeout, secs(30));
    assert_eq!(job.limits.memory, 64 << 20);
    assert_eq!(job.limits.fuel, None);
    assert_eq!(job.limits.max_result, 1 << 20);
    assert_eq!(job.limits.max_log, 64 << 10);
    assert_eq!(job.backoff.initial, secs(1));
    assert_eq!(job.backoff.max, secs(300));
    assert!(job.grants.env.is_empty() && job.grants.dir.is_none());
    let retention = config.retention(DEFAULT_QUEUE);
    assert_eq!(
        (retention.succeeded.count, retention.succeeded.age),
        (1000, secs(86_400))
    );
    assert_eq!(
        (retention.failed.count, retention.failed.age),
        (10_000, secs(7 * 86_400))
    );
}

#[test]
fn unknown_keys_name_key_and_line() {
    assert_rejected("\n\nfoo = 1\n", "foo", 3, "unknown key");
    assert_rejected(
        "[queues.images]\nconcurrency = 2\nconcurency = 3\n",
        "queues.images.concurency",
        3,
        "expected",
    );
    assert_rejected(
        "[defaults]\nbackoff = { initial = \"1s\",\n  jiter = 0.5 }\n",
        "defaults.backoff.jiter",
        3,
        "unknown key",
    );
    assert_rejected(
        "[handlers.x]\nretention = {}\n",
        "handlers.x.retention",
        2,
        "unknown key",
    );
}

#[test]
fn wrong_types_name_key_and_line() {
    assert_rejected(
        "[host]\nconcurrency = \"many\"\n",
        "host.concurrency",
        2,
        "expected an integer",
    );
    assert_rejected(
        "[queues]\ndefault = 3\n",
        "queues.default",
        2,
        "expected a table",
    );
    assert_rejected(
        "[store]\nnodes = \"redis://a:1\"\n",
        "store.nodes",
        2,
        "expected an array",
    );
}

#[test]
fn bad_durations_and_sizes() {
    assert_rejected(
        "[host]\n\nshutdown_grace = \"10 parsecs\"\n",
        "host.shutdown_grace",
        3,
        "10 parsecs",
    );
    assert_rejected(
        "[defaults]\ntimeout = 30\n",
        "defaults.timeout",
        2,
        "no unit",
    );
    assert_rejected(
        "[defaults]\ntimeout = \"0s\"\n",
        "defaults.timeout",
        2,
        "longer than zero",
    );
    assert_rejected(
        "[queues.a]\nmemory = \"64 MiBs\"\n",
        "queues.a.memory",
        2,
        "unknown unit `MiBs`",
    );
    assert_rejected(
        "[defaults]\nmax_log = -5\n",
        "defaults.max_log",
        2,
        "negative",
    );
    assert_rejected(
        "[defaults]\nmax_result = \"-1KiB\"\n",
        "defaults.max_result",
        2,
        "negative",
    );
    assert_rejected(
        "[defaults]\nmemory = \"1KiB\"\n",
        "defaults.memory",
        2,
        "outside",
    );
    assert_rejected(
        "[defaults]\nfuel = 0\n",
        "defaults.fuel",
        2,
        "not a positive fuel budget",
    );
}

#[test]
fn sizes_accept_units() {
    let config = parse(
        "[defaults]\nmemory = \"64 MiB\"\nmax_result = \"10MB\"\nmax_log = 1000\n\
         [queues.a]\nmemory = \"1GiB\"\nmax_log = \"512KiB\"\n",
    )
    .unwrap();
    let d = config.job_settings("h", DEFAULT_QUEUE);
    assert_eq!(
        (d.limits.memory, d.limits.max_result, d.limits.max_log),
        (64 << 20, 10_000_000, 1000)
    );
    let a = config.job_settings("h", "a");
    assert_eq!((a.limits.memory, a.limits.max_log), (1 << 30, 512 << 10));
    assert_eq!(config.max_job_memory(), 1 << 30);
}

#[test]
fn out_of_range_values() {
    assert_rejected(
        "[defaults]\nbackoff = { jitter = 1.5 }\n",
        "defaults.backoff.jitter",
        2,
        "outside 0.0..=1.0",
    );
    assert_rejected(
        "[queues.images]\npriority = 1\n\nconcurrency = 0\n",
        "queues.images.concurrency",
        4,
        "less than 1",
    );
    assert_rejected(
        "[host]\nconcurrency = 0\n",
        "host.concurrency",
        2,
        "less than 1",
    );
    assert_rejected("[host]\nthreads = 0\n", "host.threads", 2, "less than 1");
    assert_rejected(
        "[host]\nthreads = 5000\n",
        "host.threads",
        2,
        "5000 is more than 1024",
    );
    assert_rejected(
        "[defaults]\nmax_attempts = 0\n",
        "defaults.max_attempts",
        2,
        "less than 1",
    );
    assert_rejected(
        "[queues.q]\nbackoff = { initial = \"1m\", max = \"1s\" }\n",
        "queues.q.backoff.max",
        2,
        "backoff.initial",
    );
}

#[test]
fn handler_on_undefined_queue() {
    assert_rejected(
        "[queues.images]\n\n[handlers.resize]\nqueue = \"imgs\"\n",
        "handlers.resize.queue",
        4,
        "queue `imgs` is not defined",
    );
    let config = parse("[handlers.resize]\nqueue = \"default\"\n").unwrap();
    assert_eq!(config.queue_for("resize"), DEFAULT_QUEUE);
}

#[test]
fn store_settings() {
    assert_rejected(
        "[store]\nbackend = \"redis\"\nurl = \"http://localhost:6379\"\n",
        "store.url",
        3,
        "redis://",
    );
    assert_rejected(
        "[store]\nurl = \"redis://a:1\"\nnodes = [\"redis://b:2\"]\n",
        "store.nodes",
        3,
        "mutually exclusive",
    );
    assert_rejected(
        "[store]\nbackend = \"redis\"\n",
        "store.backend",
        2,
        "needs `store.url`",
    );
    assert_rejected(
        "[store]\nbackend = \"sqlite\"\n",
        "store.backend",
        2,
        "not a backend",
    );
    assert_rejected(
        "[store]\nbackend = \"embedded\"\nurl = \"redis://a:1\"\n",
        "store.url",
        3,
        "only the redis backend",
    );
    assert_rejected(
        "[store]\nnodes = [\"redis://a:1\", \"tcp://b\"]\n",
        "store.nodes",
        2,
        "tcp://b",
    );

    assert_rejected(
        "[store]\nca_file = \"ca.pem\"\n",
        "store.ca_file",
        2,
        "only the redis backend",
    );

    let config = parse("[store]\nurl = \"rediss://cache:6380\"\n").unwrap();
    assert_eq!(
        config.store,
        StoreConfig::Redis(RedisTarget::server("rediss://cache:6380"))
    );
    let config = parse("[store]\nurl = \"rediss://cache:6380\"\nca_file = \"ca.pem\"\n").unwrap();
    assert_eq!(
        config.store,
        StoreConfig::Redis(
            RedisTarget::server("rediss://cache:6380").with_ca_file("/etc/kiln/ca.pem")
        ),
        "ca_file is relative to the config file"
    );
    let config = parse("[store]\nnodes = [\"redis://a:7000\", \"redis://b:7001\"]\n").unwrap();
    assert_eq!(
        config.store,
        StoreConfig::Redis(RedisTarget::cluster(["redis://a:7000", "redis://b:7001"]))
    );
    let config = parse("[store]\npath = \"/var/kiln.db\"\ndurability = \"full\"\n").unwrap();
    assert_eq!(
        config.store,
        StoreConfig::Embedded {
            path: "/var/kiln.db".into(),
            durability: Durability::Full
        }
    );
}

#[test]
fn syntax_errors_name_the_line() {
    let err = parse("[host]\nconcurrency = = 4\n").unwrap_err();
    assert!(matches!(err, ConfigError::Syntax { .. }), "{err}");
    assert_eq!(err.line(), Some(2), "{err}");
    assert!(err.to_string().contains("line 2"), "{err}");
}

#[test]
fn env_overrides_apply() {
    let text =
        "[host]\nconcurrency = 16\n[queues.default]\nconcurrency = 8\n[handlers.resize-image]\n";
    let vars = env(&[
        ("KILN_HOST__CONCURRENCY", "4"),
        ("KILN_HOST__THREADS", "1"),
        ("KILN_QUEUES__DEFAULT__CONCURRENCY", "2"),
        ("KILN_QUEUES__SLOW__PAUSED", "true"),
        ("KILN_STORE__URL", "redis://127.0.0.1:6379"),
        ("KILN_DEFAULTS__BACKOFF__JITTER", "0.5"),
        ("KILN_HANDLERS__RESIZE_IMAGE__TIMEOUT", "2m"),
        ("KILN_CONFIG", "ignored.toml"),
        ("PATH", "/usr/bin"),
    ]);
    let config = Config::from_toml_str(text, Path::new(ORIGIN), vars).unwrap();
    assert_eq!(config.host.concurrency, 4);
    assert_eq!(config.host.threads, Some(1));
    assert_eq!(config.queues["default"].concurrency, 2);
    assert!(config.queues["slow"].paused);
    assert_eq!(
        config.queues["slow"].concurrency, 4,
        "new queues default to host concurrency"
    );
    assert_eq!(
        config.store,
        StoreConfig::Redis(RedisTarget::server("redis://127.0.0.1:6379"))
    );
    assert_eq!(config.defaults.backoff.jitter, 0.5);
    assert_eq!(
        config
            .job_settings("resize-image", DEFAULT_QUEUE)
            .limits
            .timeout,
        secs(120)
    );
}

#[test]
fn env_override_errors_name_the_variable() {
    let cases = [
        (
            "KILN_HOST__CONCURENCY",
            "4",
            "host.concurency",
            "unknown key",
        ),
        ("KILN_NOPE__X", "1", "nope", "unknown key"),
        (
            "KILN_HOST__CONCURRENCY",
            "0",
            "host.concurrency",
            "less than 1",
        ),
        ("KILN_HOST__LEASE", "soon", "host.lease", "soon"),
        (
            "KILN_HOST__CONCURRENCY__X",
            "1",
            "host.concurrency.x",
            "not a table",
        ),
    ];
    for (var, value, key, detail) in cases {
        let err = Config::from_toml_str(
            "[host]\nconcurrency = 3\n",
            Path::new(ORIGIN),
            env(&[(var, value)]),
        )
        .unwrap_err();
        let message = err.to_string();
        assert_eq!(err.key(), Some(key), "{message}");
        assert_eq!(err.line(), None, "{message}");
        assert!(
            message.contains(&format!("environment variable `{var}`")),
            "{message}"
        );
        assert!(message.contains(detail), "{message}");
    }
}

#[test]
fn settings_resolve_handler_then_queue_then_defaults() {
    let text = r#"
[defaults]
timeout = "30s"
memory = "64MiB"
max_attempts = 3
fuel = 1000
backoff = { initial = "1s", max = "5m", jitter = 0.2 }

[queues.images]
timeout = "1m"
memory = "128MiB"
backoff = { max = "1m" }
retention = { failed = { count = 5 } }

[handlers.resize]
queue = "images"
timeout = "2m"
fuel = "unlimited"
grants = { env = { API_BASE = "https://example" }, dir = "assets" }
"#;
    let config = parse(text).unwrap();
    assert_eq!(config.queue_for("resize"), "images");

    let resize = config.job_settings("resize", "images");
    assert_eq!(resize.limits.timeout, secs(120), "handler beats queue");
    assert_eq!(resize.limits.memory, 128 << 20, "queue beats defaults");
    assert_eq!(resize.max_attempts, 3, "defaults fill the rest");
    assert_eq!(resize.limits.fuel, None, "a handler may lift a fuel budget");
    assert_eq!(
        resize.backoff,
        Backoff {
            initial: secs(1),
            max: secs(60),
            jitter: 0.2
        }
    );
    assert_eq!(resize.grants.env["API_BASE"], "https://example");
    assert_eq!(
        resize.grants.dir.as_deref(),
        Some(Path::new("/etc/kiln/assets"))
    );

    let other = config.job_settings("thumbnail", "images");
    assert_eq!(
        (other.limits.timeout, other.limits.memory, other.limits.fuel),
        (secs(60), 128 << 20, Some(1000))
    );
    assert!(other.grants.env.is_empty());

    let elsewhere = config.job_settings("resize", DEFAULT_QUEUE);
    assert_eq!(
        (elsewhere.limits.timeout, elsewhere.limits.memory),
        (secs(120), 64 << 20)
    );

    let retention = config.retention("images");
    assert_eq!(
        (retention.failed.count, retention.failed.age),
        (5, secs(7 * 86_400))
    );
    assert_eq!(retention.succeeded.count, 1000);
}

#[test]
fn backoff_doubles_caps_and_jitters() {
    let backoff = Backoff {
        initial: secs(1),
        max: secs(60),
        jitter: 0.0,
    };
    let delays: Vec<_> = (1..=8).map(|n| backoff.delay(n, 0.7)).collect();
    assert_eq!(
        delays,
        [1, 2, 4, 8, 16, 32, 60, 60].map(secs).to_vec(),
        "doubles per attempt, capped at max"
    );
    assert_eq!(
        backoff.delay(0, 0.0),
        secs(1),
        "attempt 0 counts as the first"
    );
    assert_eq!(
        backoff.delay(u32::MAX, 0.0),
        secs(60),
        "no overflow on huge attempts"
    );

    let jittery = Backoff {
        jitter: 0.2,
        ..backoff
    };
    assert_eq!(
        jittery.delay(3, 0.0),
        secs(4),
        "rand 0 keeps the full delay"
    );
    assert_eq!(
        jittery.delay(3, 1.0),
        Duration::from_millis(3200),
        "rand 1 cuts the full jitter"
    );
    for i in 0..=100 {
        let rand = f64::from(i) / 100.0;
        let d = jittery.delay(5, rand);
        assert!(
            d >= Duration::from_millis(12_800) && d <= secs(16),
            "{d:?} at rand {rand}"
        );
        assert!(
            jittery.delay(10, rand) <= secs(60),
            "jitter never exceeds max"
        );
    }
}

#[test]
fn env_values_may_be_toml_arrays_or_strings() {
    let vars = env(&[(
        "KILN_STORE__NODES",
        r#"["redis://a:7000", "redis://b:7001"]"#,
    )]);
    let config = Config::from_toml_str("", Path::new(ORIGIN), vars).unwrap();
    assert_eq!(
        config.store,
        StoreConfig::Redis(RedisTarget::cluster(["redis://a:7000", "redis://b:7001"]))
    );

    let vars = env(&[("KILN_STORE__NODES", r#"["redis://a:7000", "tcp://b"]"#)]);
    let err = Config::from_toml_str("\n\n", Path::new(ORIGIN), vars).unwrap_err();
    assert_eq!(err.key(), Some("store.nodes"), "{err}");
    assert!(err.to_string().contains("`KILN_STORE__NODES`"), "{err}");

    let vars = env(&[("KILN_HANDLERS__X__QUEUE", r#""default""#)]);
    let config = Config::from_toml_str("", Path::new(ORIGIN), vars).unwrap();
    assert_eq!(
        config.queue_for("x"),
        DEFAULT_QUEUE,
        "a quoted value is a TOML string"
    );
}

#[test]
fn missing_file_is_a_read_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.toml");
    let err = Config::load(&path).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }), "{err}");
    assert!(err.to_string().contains("absent.toml"), "{err}");
}

#[test]
fn network_grants_add_to_the_queue_grants() {
    let config = parse(
        r#"
[queues.partners]
grants = { http = ["https://*.partner.example:8443"], env = { REGION = "eu" } }
http_max_in_flight = 2

[handlers.notify]
queue = "partners"
http_connect_timeout = "3s"
grants = { http = ["https://api.mail.example", "http://127.0.0.1:*"], tcp = ["smtp.example.com:587"], env = { REGION = "us" } }
"#,
    )
    .unwrap();
    let notify = config.job_settings("notify", "partners");
    assert_eq!(notify.grants.http.origins.len(), 3);
    assert_eq!(notify.grants.tcp.len(), 1);
    assert_eq!(
        notify.grants.env["REGION"], "us",
        "the handler's value wins"
    );
    assert_eq!(notify.limits.http.max_in_flight, 2);
    assert_eq!(notify.limits.http.connect_timeout, secs(3));
    let other = config.job_settings("other", "partners");
    assert_eq!(
        other.grants.http.origins.len(),
        1,
        "the queue's grant alone"
    );
    assert!(other.grants.tcp.is_empty());
    let default = config.job_settings("other", DEFAULT_QUEUE);
    assert_eq!(default.limits.http.max_in_flight, 8);
    assert_eq!(default.limits.http.connect_timeout, secs(10));
    assert!(default.grants.http.origins.is_empty());
}

#[test]
fn bad_network_grants_name_the_entry_and_line() {
    let origins = "[handlers.notify]\ngrants = { http = [\n  \"https://api.mail.example\",\n  \"https://api.mail.example/send\",\n] }\n";
    assert_rejected(origins, "handlers.notify.grants.http[1]", 4, "path");
    let scheme = "[queues.q]\ngrants = { http = [\"ftp://files.example\"] }\n";
    assert_rejected(scheme, "queues.q.grants.http[0]", 2, "ftp");
    let tcp = "[handlers.mail]\ngrants = { tcp = [\"smtp.example.com\"] }\n";
    assert_rejected(tcp, "handlers.mail.grants.tcp[0]", 2, "port");
    let ca = "[handlers.mail]\ngrants = { http_ca_file = \"/nonexistent/ca.pem\" }\n";
    assert_rejected(
        ca,
        "handlers.mail.grants.http_ca_file",
        2,
        "/nonexistent/ca.pem",
    );
    let flight = "[defaults]\nhttp_max_in_flight = 0\n";
    assert_rejected(flight, "defaults.http_max_in_flight", 2, "less than 1");
}

#[test]
fn a_kiln_variable_that_is_not_an_override_is_refused_unless_kiln_reads_it() {
    for var in ["KILN_BOGUS", "KILN_STORE_PATH"] {
        let err = Config::from_toml_str("", Path::new(ORIGIN), env(&[(var, "1")])).unwrap_err();
        assert!(matches!(err, ConfigError::UnknownVariable { .. }), "{err}");
        assert!(err.to_string().contains(&format!("`{var}`")), "{err}");
    }
    let read = env(&[
        ("KILN_CONFIG", "x.toml"),
        ("KILN_LOG", "debug"),
        ("KILN_BENCH_THREADS", "1"),
        ("KILN_TEST_RSS_CHILD", "1"),
        ("OTHER", "1"),
    ]);
    Config::from_toml_str("", Path::new(ORIGIN), read).unwrap();
}
