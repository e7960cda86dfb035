//! `loadgen merge`: two real runs started together against one ringd, merged from their
//! JSON reports and from their interval logs, give exactly the sum of their counts and the
//! percentiles of the union of their histograms (built here straight from the files with
//! HdrHistogram's own readers); inputs that cannot be merged are one line and exit 2.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;
use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
use hdrhistogram::serialization::Deserializer;
use hdrhistogram::Histogram;
use ringd::ProtocolKind;
use serde_json::Value;

use common::{loadgen_bin, ringd};

fn decode(b64: &str) -> Histogram<u64> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .unwrap()
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// Every interval of an interval log, added up.
fn log_total(path: &Path) -> Histogram<u64> {
    let text = std::fs::read(path).unwrap();
    let mut total: Option<Histogram<u64>> = None;
    for entry in IntervalLogIterator::new(&text) {
        if let LogEntry::Interval(iv) = entry.unwrap() {
            let h = decode(iv.encoded_histogram());
            match total.as_mut() {
                Some(t) => t.add(&h).unwrap(),
                None => total = Some(h),
            }
        }
    }
    total.unwrap()
}

/// The latency summary of `h` as a report gives it.
fn summary(h: &Histogram<u64>) -> Value {
    let q = |q: f64| h.highest_equivalent(h.value_at_quantile(q));
    serde_json::json!({
        "count": h.len(),
        "min": h.min(),
        "p50": q(0.5),
        "p90": q(0.9),
        "p99": q(0.99),
        "p99_9": q(0.999),
        "p99_99": q(0.9999),
        "max": h.highest_equivalent(h.max()),
    })
}

fn assert_latency(report: &Value, union: &Histogram<u64>) {
    let want = summary(union);
    for (k, v) in want.as_object().unwrap() {
        assert_eq!(&report["latency_ns"][k], v, "latency_ns.{k}");
    }
}

/// Two loadgens started together, as two hosts would be: `(json, hlog)` of each.
fn two_runs(dir: &Path) -> [(PathBuf, PathBuf); 2] {
    let server = ringd(ProtocolKind::Echo);
    let target = server.local_addr().to_string();
    let files = ["a", "b"].map(|n| (dir.join(format!("{n}.json")), dir.join(format!("{n}.hlog"))));
    let children: Vec<_> = files
        .iter()
        .enumerate()
        .map(|(i, (json, hlog))| {
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_loadgen"));
            cmd.arg(&target)
                .args([
                    "-c", "4", "-t", "1", "-d", "1500ms", "--warmup", "200ms", "-q",
                ])
                .arg("--json")
                .arg(json)
                .arg("--hlog")
                .arg(hlog)
                .stdout(Stdio::null());
            if i == 1 {
                cmd.args(["--source", "127.0.0.2"]);
            }
            cmd.spawn().unwrap()
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    server.shutdown().unwrap();
    files
}

#[test]
fn merging_two_runs_sums_counts_and_gives_the_percentiles_of_the_union() {
    let dir = tempfile::tempdir().unwrap();
    let [(a_json, a_log), (b_json, b_log)] = two_runs(dir.path());
    let (a, b) = (read_json(&a_json), read_json(&b_json));
    let mut union = decode(a["histograms"]["latency_ns"].as_str().unwrap());
    union
        .add(decode(b["histograms"]["latency_ns"].as_str().unwrap()))
        .unwrap();
    let sum = |k: &str| a[k].as_u64().unwrap() + b[k].as_u64().unwrap();
    assert_eq!(union.len(), sum("requests"));
    let m_json = merged_reports_add_up(dir.path(), [&a_json, &b_json], &sum, &union);
    let m = read_json(&m_json);
    // Rates over the common window: a run's own window contains it.
    let window = m["duration_s"].as_f64().unwrap();
    assert!(window > 0.0 && window <= a["duration_s"].as_f64().unwrap() + 1e-9);
    assert!(m["throughput_rps"].as_f64().unwrap() > 0.0);
    merged_logs_give_the_same_union(dir.path(), [&a_log, &b_log], &union);

    // A merge merges again: merged with nothing else it is itself.
    let again = dir.path().join("again.json");
    merge_ok(&[
        "merge",
        "--json",
        again.to_str().unwrap(),
        m_json.to_str().unwrap(),
    ]);
    let again = read_json(&again);
    assert_eq!(again["requests"], m["requests"]);
    assert_eq!(again["latency_ns"], m["latency_ns"]);
}

/// Runs `loadgen ARGS`, which must succeed.
fn merge_ok(args: &[&str]) -> std::process::Output {
    let out = loadgen_bin(args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Merges the JSON reports: every count is the sum of the runs' (`sum`), the latency that
/// of `union`, in the JSON, the table and the .hgrm. Returns the merged JSON's path.
fn merged_reports_add_up(
    dir: &Path,
    [a_json, b_json]: [&Path; 2],
    sum: &dyn Fn(&str) -> u64,
    union: &Histogram<u64>,
) -> PathBuf {
    let (m_json, m_hgrm) = (dir.join("m.json"), dir.join("m.hgrm"));
    let out = merge_ok(&[
        "merge",
        "--json",
        m_json.to_str().unwrap(),
        "--hgrm",
        m_hgrm.to_str().unwrap(),
        a_json.to_str().unwrap(),
        b_json.to_str().unwrap(),
    ]);
    let m = read_json(&m_json);
    assert_eq!(m["schema"], "loadgen/1");
    for k in [
        "requests",
        "sent",
        "failed",
        "unfinished",
        "warmup_requests",
        "connects",
        "reconnects",
        "mismatched_bytes",
    ] {
        assert_eq!(m[k].as_u64().unwrap(), sum(k), "{k}");
    }
    assert_eq!(m["config"]["connections"], 8);
    assert_eq!(m["config"]["sources"], serde_json::json!(["127.0.0.2"]));
    assert_eq!(m["merged"]["runs"].as_array().unwrap().len(), 2);
    assert_latency(&m, union);
    assert_eq!(
        &decode(m["histograms"]["latency_ns"].as_str().unwrap()),
        union
    );
    let table = String::from_utf8(out.stdout).unwrap();
    let requests_line = table.lines().find(|l| l.contains("Requests")).unwrap();
    assert_eq!(
        requests_line.split_whitespace().nth(1).unwrap(),
        sum("requests").to_string()
    );
    assert!(table.contains("merged 2 run(s)"), "{table}");
    let (_, total) = loadgen::hdr::parse_hgrm(&std::fs::read_to_string(&m_hgrm).unwrap()).unwrap();
    assert_eq!(total, union.len());
    m_json
}

/// Merges the interval logs: the same values, so the same union, in the JSON and the log.
fn merged_logs_give_the_same_union(dir: &Path, [a_log, b_log]: [&Path; 2], union: &Histogram<u64>) {
    let mut log_union = log_total(a_log);
    log_union.add(log_total(b_log)).unwrap();
    assert_eq!(&log_union, union);
    let (l_json, l_log) = (dir.join("l.json"), dir.join("l.hlog"));
    merge_ok(&[
        "merge",
        "--json",
        l_json.to_str().unwrap(),
        "--hlog",
        l_log.to_str().unwrap(),
        a_log.to_str().unwrap(),
        b_log.to_str().unwrap(),
    ]);
    let l = read_json(&l_json);
    assert_eq!(l["requests"].as_u64().unwrap(), union.len());
    assert_latency(&l, union);
    assert_eq!(&log_total(&l_log), union);
}

#[test]
fn inputs_that_cannot_be_merged_are_one_line_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let [(a_json, a_log), (b_json, _)] = two_runs(dir.path());
    let a = read_json(&a_json);
    let variant = |name: &str, change: &dyn Fn(&mut Value)| {
        let mut v = a.clone();
        change(&mut v);
        let path = dir.path().join(name);
        std::fs::write(&path, v.to_string()).unwrap();
        path.to_str().unwrap().to_string()
    };
    let http = variant("http.json", &|v| {
        v["config"]["protocol"] = "http".into();
        v["started_unix_s"] = (v["started_unix_s"].as_f64().unwrap() + 0.001).into();
    });
    let tls = variant("tls.json", &|v| {
        v["config"]["tls"] = serde_json::json!({
            "sni": ["127.0.0.1"], "trust": "insecure", "resume": false, "alpn": []
        });
        v["started_unix_s"] = (v["started_unix_s"].as_f64().unwrap() + 0.003).into();
    });
    let late = variant("late.json", &|v| {
        v["started_unix_s"] = (v["started_unix_s"].as_f64().unwrap() + 100.0).into();
    });
    let empty = variant("empty.json", &|v| {
        v["duration_s"] = 0.0.into();
        v["started_unix_s"] = (v["started_unix_s"].as_f64().unwrap() + 0.002).into();
    });
    let old = variant("old.json", &|v| {
        v.as_object_mut().unwrap().remove("histograms");
    });
    let garbage = dir.path().join("garbage.hlog");
    std::fs::write(&garbage, "not a log\n").unwrap();
    let (a, b) = (a_json.to_str().unwrap(), b_json.to_str().unwrap());
    let a_log = a_log.to_str().unwrap();
    let out_hlog = dir.path().join("x.hlog");
    for (args, needle) in [
        (vec![a, &http], "different plans (protocol echo vs http)"),
        (vec![a, &late], "never all measured at the same time"),
        (vec![a, &tls], "different plans (tls off vs on"),
        (vec![a, &old], "no histograms"),
        (vec![a, &empty], "no measured window"),
        (vec![a, a_log], "interval log and"),
        (vec![a, a], "same run"),
        (vec![a, garbage.to_str().unwrap()], "interval log"),
        (vec![a, "/nonexistent/r.json"], "/nonexistent/r.json"),
        (
            vec!["--hlog", out_hlog.to_str().unwrap(), a, b],
            "--hlog needs",
        ),
    ] {
        let out = loadgen_bin(&[&["merge"], args.as_slice()].concat());
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    assert!(!out_hlog.exists());
}
