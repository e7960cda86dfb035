//! Unit tests of the configuration file: keys, values, problems, precedence.

use super::*;
use std::time::Duration;

fn argv(words: &[&str]) -> Vec<OsString> {
    std::iter::once("ringd")
        .chain(words.iter().copied())
        .map(OsString::from)
        .collect()
}

/// A sample value for every option; the test below fails for an option that has none here.
fn sample(long: &str) -> Option<&'static str> {
    Some(match long {
        "listen" | "metrics" => "\"127.0.0.1:0\"",
        "protocol" => "\"proxy\"",
        "upstream" => "[\"127.0.0.1:9\"]",
        "balance" => "\"least-conn\"",
        "engine" => "\"epoll\"",
        "send-proxy" => "\"v1\"",
        "route-sni" => "[\"a.test=127.0.0.1:9\"]",
        "route-sni-fallback" => "\"close\"",
        "threads" | "backlog" | "buffers" | "check-rise" | "check-fall" | "uring-wait-batch" => "2",
        "max-connections" => "7",
        "send-buffer" | "recv-buffer" | "buffer-size" | "max-pending-output" => "\"8KiB\"",
        "greeting" | "http-body" | "check-send" | "check-expect" => "\"x\"",
        "pid-file" => "\"/tmp/x.pid\"",
        "access-log" => "\"/tmp/access.log\"",
        "tls-cert" | "tls-key" => "[\"/tmp/x.pem\"]",
        "access-log-format" => "\"logfmt\"",
        "access-log-queue" => "64",
        "log-level" => "\"warn\"",
        "pin" | "no-pin" | "no-direct-descriptors" | "uring-sqpoll" => "true",
        l if l.ends_with("timeout")
            || l.ends_with("-for")
            || l.ends_with("interval")
            || l == "uring-min-wait" =>
        {
            "\"3s\""
        }
        _ => return None,
    })
}

#[test]
fn every_option_has_a_key() {
    let cmd = Args::command();
    let mut seen = 0;
    for arg in cmd.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        if NOT_IN_A_FILE.contains(&long) {
            continue;
        }
        let value = sample(long).unwrap_or_else(|| panic!("no sample value for --{long}"));
        for key in [long.to_string(), long.replace('-', "_")] {
            let got = words(&format!("{key} = {value}")).unwrap_or_else(|e| panic!("{e:?}"));
            let (id, w) = &got[0];
            assert_eq!(id, arg.get_id().as_str(), "{key}");
            let mut full = vec!["ringd".to_string()];
            full.extend(w.iter().cloned());
            let m = Args::command().try_get_matches_from(&full).unwrap();
            assert_eq!(
                m.value_source(id.as_str()),
                Some(ValueSource::CommandLine),
                "{key} sets --{long}"
            );
        }
        seen += 1;
    }
    assert!(seen > 30, "{seen} options");
}

#[test]
fn problems_name_their_keys() {
    let text = "idle-timout = \"1s\"\nthreads = \"many\"\npin = 3\nconfig = \"x\"\nnonsense = 1\n";
    let e = words(text).unwrap_err();
    assert_eq!(e.len(), 5, "{e:?}");
    assert!(e[0].starts_with("config: unknown key"), "{e:?}");
    assert!(e
        .iter()
        .any(|l| l == "idle-timout: unknown key (did you mean idle-timeout?)"));
    assert!(e.iter().any(|l| l == "nonsense: unknown key"), "{e:?}");
    assert!(
        e.iter()
            .any(|l| l.starts_with("threads: invalid value 'many'")),
        "{e:?}"
    );
    assert!(
        e.iter().any(|l| l == "pin: expected true or false"),
        "{e:?}"
    );
    let e = words("threads = 1\nthreads = 2\n").unwrap_err();
    assert_eq!(e, ["line 2: duplicate key"], "{e:?}");
}

#[test]
fn upstream_tables_and_strings() {
    let text = "upstream = [\"127.0.0.1:1,weight=2\", { addr = \"127.0.0.1:2\", backup = true }]\n\
                [[nothing]]\n";
    assert!(words(text).unwrap_err()[0].starts_with("nothing: unknown key"));
    let text = "[[upstream]]\naddr = \"127.0.0.1:1\"\nweight = 3\nmax_connections = 5\n\
                [[upstream]]\naddr = \"127.0.0.1:2\"\nbackup = true\n";
    let got = words(text).unwrap();
    assert_eq!(
        got[0].1,
        [
            "--upstream",
            "127.0.0.1:1,weight=3,max-conns=5",
            "--upstream",
            "127.0.0.1:2,backup"
        ]
    );
    let bad = "[[upstream]]\naddr = \"127.0.0.1:1\"\nwieght = 3\n";
    assert!(words(bad).unwrap_err()[0].contains("wieght"));
}

#[test]
fn flags_override_the_file() {
    let dir = std::env::temp_dir().join(format!("ringd-file-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("a.toml");
    std::fs::write(
        &path,
        "idle-timeout = \"7s\"\nmax-connections = 9\nno-pin = true\n\
         protocol = \"proxy\"\nupstream = [\"127.0.0.1:1\", \"127.0.0.1:2\"]\n",
    )
    .unwrap();
    let p = path.to_str().unwrap();
    let (a, info) = resolve(&argv(&["--config", p, "--idle-timeout", "2s"])).unwrap();
    assert_eq!(a.idle_timeout, Duration::from_secs(2), "the flag wins");
    assert_eq!(a.max_connections, 9, "the file applies");
    assert!(a.no_pin);
    assert_eq!(a.upstream.len(), 2);
    assert_eq!(info.unwrap().sha256.len(), 64);
    let (a, _) = resolve(&argv(&[
        "--config",
        p,
        "--pin",
        "--upstream",
        "127.0.0.1:3",
    ]))
    .unwrap();
    assert!(!a.no_pin, "--pin overrides the file's no-pin");
    assert_eq!(
        a.upstream,
        ["127.0.0.1:3"],
        "a list on the command line replaces the file's"
    );
    let (a, info) = resolve(&argv(&["--idle-timeout", "2s"])).unwrap();
    assert_eq!((a.idle_timeout, info), (Duration::from_secs(2), None));
    assert!(resolve(&argv(&["--config", "/nonexistent/ringd.toml"])).is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}
