//! Schedules in the config and on the command line: each bad `[[schedules]]` entry is
//! refused naming the entry and its line; `kiln schedules [--json]` shows the next fire times
//! in the zone and in UTC and the latest tick; `kiln schedules trigger NAME` enqueues a tick
//! now (an unknown name exits 2); `kiln status --json` shows a tick's schedule and time.

use std::path::Path;
use std::process::{Command, Output};

use kiln::config::{Config, ConfigError, Misfire};
use kiln::store::{AnyStore, JobStore};
use serde_json::Value;

/// A config whose `[[schedules]]` entries are `schedules`, with a declared `echo` handler, a
/// `maintenance` queue and no handlers directory.
fn config_text(schedules: &str) -> String {
    format!(
        "[host]\nhandlers_dir = \"absent\"\n[store]\npath = \"kiln.db\"\n\
         [queues.maintenance]\n[handlers.echo]\nqueue = \"maintenance\"\n\n{schedules}"
    )
}

fn load(dir: &Path, schedules: &str) -> Result<Config, ConfigError> {
    Config::from_toml_str(
        &config_text(schedules),
        &dir.join("config.toml"),
        Vec::new(),
    )
}

/// The error `schedules` is refused with, as `(key, line, message)`.
fn refused(schedules: &str) -> (String, usize, String) {
    let dir = tempfile::tempdir().unwrap();
    let error = load(dir.path(), schedules).expect_err("refused");
    (
        error.key().unwrap_or_default().to_owned(),
        error.line().unwrap_or_default(),
        error.to_string(),
    )
}

/// Config lines before the first schedule line (see `config_text`).
const HEAD: usize = 8;

#[test]
fn schedules_load_with_their_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let config = load(
        dir.path(),
        "[[schedules]]\nname = \"nightly\"\nhandler = \"echo\"\ncron = \"0 0 * * *\"\n\
         timezone = \"Europe/Madrid\"\npayload = { older_than = \"30d\" }\nmisfire = \"run-once\"\n\
         [[schedules]]\nname = \"often\"\nhandler = \"echo\"\ncron = \"*/15 * * * *\"\n\
         queue = \"default\"\n",
    )
    .unwrap();
    let [nightly, often] = &config.schedules[..] else {
        panic!("two schedules: {:?}", config.schedules);
    };
    assert_eq!(
        nightly.queue, "maintenance",
        "the handler's queue by default"
    );
    assert_eq!(nightly.zone_name, "Europe/Madrid");
    assert_eq!(nightly.payload, br#"{"older_than":"30d"}"#);
    assert_eq!(nightly.misfire, Misfire::RunOnce);
    assert_eq!(often.queue, "default");
    assert_eq!(often.zone_name, "UTC");
    assert_eq!(often.misfire, Misfire::Skip);
    assert!(often.payload.is_empty());
}

#[test]
fn a_bad_schedule_is_refused_naming_the_entry_and_its_line() {
    let entry = |extra: &str| {
        format!(
            "[[schedules]]\nname = \"nightly\"\nhandler = \"echo\"\ncron = \"0 0 * * *\"\n{extra}"
        )
    };
    let (key, line, message) = refused(&entry("").replace("0 0 * * *", "61 0 * * *"));
    assert_eq!((key.as_str(), line), ("schedules.nightly.cron", HEAD + 4));
    assert!(
        message.contains("minute field `61`: 61 is outside 0-59"),
        "{message}"
    );

    let (key, line, message) = refused(&entry("timezone = \"Europe/Atlantis\"\n"));
    assert_eq!(
        (key.as_str(), line),
        ("schedules.nightly.timezone", HEAD + 5)
    );
    assert!(
        message.contains("`Europe/Atlantis` is not an IANA time zone"),
        "{message}"
    );

    let (key, line, message) = refused(&entry("").replace("\"echo\"", "\"nosuch\""));
    assert_eq!(
        (key.as_str(), line),
        ("schedules.nightly.handler", HEAD + 3)
    );
    assert!(message.contains("unknown handler `nosuch`"), "{message}");

    let (key, line, message) = refused(&entry("queue = \"reports\"\n"));
    assert_eq!((key.as_str(), line), ("schedules.nightly.queue", HEAD + 5));
    assert!(
        message.contains("queue `reports` is not defined"),
        "{message}"
    );

    let (key, line, message) = refused(&entry("misfire = \"later\"\n"));
    assert_eq!(
        (key.as_str(), line),
        ("schedules.nightly.misfire", HEAD + 5)
    );
    assert!(
        message.contains("use \"skip\" or \"run-once\""),
        "{message}"
    );

    let twice = format!("{}\n{}", entry(""), entry(""));
    let (key, line, message) = refused(&twice);
    assert_eq!((key.as_str(), line), ("schedules.nightly.name", HEAD + 7));
    assert!(
        message.contains("a schedule named `nightly` is already defined"),
        "{message}"
    );

    let (key, _, message) = refused("[[schedules]]\nname = \"x\"\nhandler = \"echo\"\n");
    assert_eq!(key, "schedules.x.cron");
    assert!(message.contains("is required"), "{message}");

    let (key, line, message) = refused(&entry("cronn = \"1\"\n"));
    assert!(key.ends_with("cronn"), "{key}");
    assert_eq!(line, HEAD + 5);
    assert!(message.contains("unknown key"), "{message}");
}

/// A project directory with a store and `config.toml` holding `schedules`.
fn project(schedules: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.toml"), config_text(schedules)).unwrap();
    AnyStore::open_embedded(dir.path().join("kiln.db")).unwrap();
    dir
}

fn kiln(dir: &Path, args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kiln"));
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("KILN_")) {
        command.env_remove(key);
    }
    command
        .current_dir(dir)
        .env("KILN_CONFIG", dir.join("config.toml"))
        .env("KILN_LOG", "warn")
        .args(args)
        .output()
        .expect("kiln runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

const NIGHTLY: &str = "[[schedules]]\nname = \"nightly\"\nhandler = \"echo\"\n\
    cron = \"30 2 * * *\"\ntimezone = \"Europe/Madrid\"\npayload = { n = 1 }\n";

#[test]
fn schedules_lists_next_fire_times_in_zone_and_utc_and_the_last_tick() {
    let dir = project(NIGHTLY);
    let listed = kiln(dir.path(), &["schedules", "--json"]);
    assert_eq!(listed.status.code(), Some(0), "{listed:?}");
    let views: Value = serde_json::from_slice(&listed.stdout).unwrap();
    let nightly = &views[0];
    assert_eq!(nightly["name"], "nightly");
    assert_eq!(nightly["timezone"], "Europe/Madrid");
    assert_eq!(nightly["queue"], "maintenance");
    assert_eq!(nightly["misfire"], "skip");
    assert_eq!(nightly["last_tick"], Value::Null);
    let next = nightly["next"].as_array().unwrap();
    assert_eq!(next.len(), 3);
    for fire in next {
        let local = fire["local"].as_str().unwrap();
        assert!(
            local.contains("T02:30:00+0") || local.contains("T03:00:00+02:00"),
            "{local}"
        );
        assert!(fire["utc"].as_i64().is_some(), "{fire}");
    }

    let triggered = kiln(dir.path(), &["schedules", "trigger", "nightly"]);
    assert_eq!(triggered.status.code(), Some(0), "{triggered:?}");
    let id = stdout(&triggered).trim().to_owned();
    assert!(id.len() >= 36, "an id: {id}");

    let listed = kiln(dir.path(), &["schedules", "--json"]);
    let views: Value = serde_json::from_slice(&listed.stdout).unwrap();
    let last = &views[0]["last_tick"];
    assert_eq!(last["job"], id.as_str());
    assert_eq!(last["state"], "waiting");

    let text = stdout(&kiln(dir.path(), &["schedules"]));
    assert!(
        text.contains("nightly  handler echo  queue maintenance"),
        "{text}"
    );
    assert!(text.contains(&format!("job {id}  waiting")), "{text}");
    assert_eq!(text.matches("  next  ").count(), 3, "{text}");

    let status = kiln(dir.path(), &["status", &id, "--json"]);
    let job: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(job["tick"]["schedule"], "nightly");
    assert_eq!(job["tick"]["manual"], true);
    assert!(job["tick"]["at"].as_i64().is_some(), "{job}");
    assert_eq!(job["payload"]["value"]["n"], 1);
}

#[test]
fn triggering_an_unknown_schedule_exits_2() {
    let dir = project(NIGHTLY);
    let out = kiln(dir.path(), &["schedules", "trigger", "weekly"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let error = String::from_utf8_lossy(&out.stderr);
    assert!(
        error.contains("schedule `weekly` is not configured (schedules: nightly)"),
        "{error}"
    );
}

#[tokio::test]
async fn triggered_ticks_do_not_move_the_cron_cursor() {
    let dir = project(NIGHTLY);
    for _ in 0..2 {
        let out = kiln(dir.path(), &["schedules", "trigger", "nightly", "--json"]);
        let reply: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(reply["schedule"], "nightly");
    }
    let store = AnyStore::open_embedded(dir.path().join("kiln.db")).unwrap();
    let records = store
        .schedule_records(&[("nightly".into(), "maintenance".into())])
        .await
        .unwrap();
    let record = records[0].clone().unwrap();
    assert_eq!(record.cursor, None, "manual ticks leave the cursor");
    let job = store.get(&record.last_job).await.unwrap().unwrap();
    assert!(job.tick.unwrap().manual);
}

#[test]
fn kiln_run_enqueues_ticks_and_stops_its_scheduler_at_shutdown() {
    // An every-second schedule, so the host's own scheduler (on the wall clock) has a tick
    // to enqueue soon; the test waits for the outcome, bounded, and asserts no timing.
    let schedule = "[store]\npath = \"kiln.db\"\n\
        [[schedules]]\nname = \"second\"\nhandler = \"echo\"\ncron = \"* * * * * *\"\n\
        payload = \"tick\"\n";
    let project = crate::cli::Project::with_store(&["echo"], "", schedule);
    let host = project.host();
    let db = project.path().join("kiln.db");
    let found = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let job = loop {
        let succeeded = db.exists().then(|| {
            runtime.block_on(async {
                let store = AnyStore::open_embedded(&db).unwrap();
                let filter = kiln::store::ListFilter {
                    state: Some(kiln::store::JobState::Succeeded),
                    ..Default::default()
                };
                let jobs = store
                    .list(filter, kiln::store::Page::default())
                    .await
                    .unwrap();
                jobs.into_iter().find(|job| job.tick.is_some())
            })
        });
        if let Some(Some(job)) = succeeded {
            break job;
        }
        assert!(
            std::time::Instant::now() < found,
            "no tick's job succeeded\n{}",
            project.host_logs()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let tick = job.tick.unwrap();
    assert_eq!(tick.schedule, "second");
    assert_eq!(tick.at.0 % 1000, 0, "a tick is a whole second");
    assert_eq!(job.payload, br#""tick""#);
    let status = host.terminate();
    assert!(status.success(), "{status:?}\n{}", project.host_logs());
}
