//! Merging JSON reports into one [`Report`] of the same schema: histograms added exactly
//! (never percentiles averaged), counts and errors summed, rates counted over the window
//! every run was measuring, the plans checked to be the same plan first.

use std::net::SocketAddr;

use hdrhistogram::Histogram;

use super::input::{add, Input};
use super::window::{self, Span};
use crate::args::Mode;
use crate::headroom::ClientBound;
use crate::plan::Plan;
use crate::report::{
    error_rate, Cpu, EndOfRun, Histograms, Latency, MergeInfo, MergedRun, RateReport, Report,
    Second, StatusClasses, TlsCounts, SCHEMA,
};

/// Merges the reports of `inputs` (all JSON) over the common window `(w0, w1)`.
pub fn merge(inputs: &[Input], (w0, w1): (f64, f64)) -> Result<Report, String> {
    let reports: Vec<&Report> = inputs.iter().filter_map(|i| i.report.as_deref()).collect();
    same_plan(inputs)?;
    let window = w1 - w0;
    let config = merged_plan(&reports);
    let hists = Summed::of(inputs)?;
    let sum = |f: fn(&Report) -> u64| reports.iter().map(|r| f(r)).sum::<u64>();
    let (requests, sent, unsent) = (sum(|r| r.requests), sum(|r| r.sent), sum(|r| r.unsent));
    let (warmup_requests, failed) = (sum(|r| r.warmup_requests), sum(|r| r.failed));
    let completed: f64 = inputs
        .iter()
        .map(|i| window::completed_within(&i.span, w0, w1))
        .sum();
    let throughput = completed / window;
    let loadgen_cpu: f64 = reports.iter().map(|r| r.loadgen_cpu.cpu_s).sum();
    let t0 = inputs.iter().map(|i| i.span.start).fold(f64::MAX, f64::min);
    let crr = config.mode == Mode::Crr;
    let mut report = Report {
        schema: SCHEMA.into(),
        version: env!("CARGO_PKG_VERSION").into(),
        started_unix_s: Some(w0),
        warmup_requests,
        duration_s: window,
        requests,
        sent,
        failed,
        unfinished: sum(|r| r.unfinished),
        unsent,
        end_of_run: end_of_run(&reports),
        error_rate: error_rate(failed, warmup_requests + requests + failed),
        throughput_rps: throughput,
        throughput_out_mib_s: reports.iter().map(|r| r.throughput_out_mib_s).sum(),
        throughput_in_mib_s: reports.iter().map(|r| r.throughput_in_mib_s).sum(),
        connections_per_s: crr.then_some(throughput),
        connects: sum(|r| r.connects),
        reconnects: sum(|r| r.reconnects),
        retried: sum(|r| r.retried),
        status: sum_status(&reports),
        status_codes: sum_maps(reports.iter().map(|r| r.status_codes.as_ref())),
        latency_ns: Latency::of(&hists.latency),
        latency_uncorrected_ns: Latency::of(hists.uncorrected.as_ref().unwrap_or(&hists.latency)),
        connect_latency_ns: hists.connect.as_ref().filter(|_| crr).map(Latency::of),
        handshake_latency_ns: hists.handshake.as_ref().map(Latency::of),
        tls: reports
            .iter()
            .filter_map(|r| r.tls)
            .reduce(|a, b| TlsCounts {
                handshakes: a.handshakes + b.handshakes,
                resumed: a.resumed + b.resumed,
            }),
        errors: sum_maps(reports.iter().map(|r| Some(&r.errors))).unwrap_or_default(),
        mismatched_bytes: sum(|r| r.mismatched_bytes),
        rate: (config.rate).map(|t| RateReport::judge(t, throughput, sent, unsent)),
        timeseries: timeseries(inputs.iter().map(|i| &i.span), t0),
        loadgen_cpu: Cpu::over(None, loadgen_cpu, requests),
        client_bound: ClientBound::combine(reports.iter().filter_map(|r| r.client_bound.as_ref())),
        server_cpu: server_cpu(&reports).map(|(pid, cpu)| Cpu::over(pid, cpu, requests)),
        thread_errors: thread_errors(inputs),
        interrupted: reports.iter().any(|r| r.interrupted),
        exit_code: 0,
        exit_reason: None,
        histograms: hists.encode(),
        merged: Some(merge_info(inputs, (w0, w1), t0)),
        config,
    };
    report.judge();
    Ok(report)
}

/// The runs' whole-run histograms, added exactly.
struct Summed {
    /// Corrected latency; every input has one.
    latency: Histogram<u64>,
    /// Service time, when any input carries it (interval logs do not).
    uncorrected: Option<Histogram<u64>>,
    /// Connect latency, when any input carries it.
    connect: Option<Histogram<u64>>,
    /// TLS handshake latency, when any input carries it.
    handshake: Option<Histogram<u64>>,
}

impl Summed {
    fn of(inputs: &[Input]) -> Result<Self, String> {
        let latency = sum_histograms(inputs.iter().map(|i| Some(&i.latency)))?
            .ok_or("no latency histogram")?;
        Ok(Summed {
            latency,
            uncorrected: sum_histograms(inputs.iter().map(|i| i.uncorrected.as_ref()))?,
            connect: sum_histograms(inputs.iter().map(|i| i.connect.as_ref()))?,
            handshake: sum_histograms(inputs.iter().map(|i| i.handshake.as_ref()))?,
        })
    }

    fn encode(&self) -> Option<Histograms> {
        Histograms::encode(
            &self.latency,
            self.uncorrected.as_ref(),
            self.connect.as_ref(),
            self.handshake.as_ref(),
        )
    }
}

/// What every run left unanswered: counts summed, the oldest of each the oldest of all.
fn end_of_run(reports: &[&Report]) -> EndOfRun {
    let max = |f: fn(&EndOfRun) -> u64| reports.iter().map(|r| f(&r.end_of_run)).max();
    EndOfRun {
        unfinished: reports.iter().map(|r| r.unfinished).sum(),
        unfinished_oldest_ns: max(|e| e.unfinished_oldest_ns).unwrap_or(0),
        unsent: reports.iter().map(|r| r.unsent).sum(),
        unsent_oldest_ns: max(|e| e.unsent_oldest_ns).unwrap_or(0),
    }
}

/// Every run's thread errors, each prefixed with the file it came from.
fn thread_errors(inputs: &[Input]) -> Vec<String> {
    inputs
        .iter()
        .flat_map(|i| {
            let errors = i.report.as_ref().map(|r| r.thread_errors.clone());
            errors
                .unwrap_or_default()
                .into_iter()
                .map(move |e| format!("{}: {e}", i.file))
        })
        .collect()
}

/// The runs and the window, as the merged report states them.
pub fn merge_info(inputs: &[Input], (w0, w1): (f64, f64), t0: f64) -> MergeInfo {
    MergeInfo {
        runs: inputs
            .iter()
            .map(|i| MergedRun {
                file: i.file.clone(),
                started_unix_s: i.span.start,
                duration_s: i.span.end - i.span.start,
                requests: i.report.as_ref().map_or(i.latency.len(), |r| r.requests),
            })
            .collect(),
        window_start_unix_s: w0,
        window_s: w1 - w0,
        timeseries_start_unix_s: t0,
    }
}

/// Every run must have run the same plan, bar how much load each host put on: the same
/// protocol, mode, request, pipeline, checks and loop. Connections, threads, rates,
/// targets and sources may differ (they add up); so may durations (the common window
/// decides).
fn same_plan(inputs: &[Input]) -> Result<(), String> {
    let key = |p: &Plan| -> Vec<(&'static str, String)> {
        vec![
            ("protocol", p.protocol.to_string()),
            ("mode", p.mode.name().to_string()),
            (
                "loop",
                if p.rate.is_some() { "open" } else { "closed" }.to_string(),
            ),
            (
                "bound",
                if p.requests.is_some() {
                    "--requests"
                } else {
                    "--duration"
                }
                .to_string(),
            ),
            ("size", p.size.to_string()),
            ("pipeline", p.pipeline.to_string()),
            ("method", format!("{:?}", p.method)),
            ("path", format!("{:?}", p.path)),
            ("verify", p.verify.to_string()),
            (
                "tls",
                p.tls.as_ref().map_or("off".into(), |t| {
                    let v = t.version;
                    format!("on (resume {}, alpn {:?}, version {v:?})", t.resume, t.alpn)
                }),
            ),
            (
                "expect_status",
                p.expect_status
                    .as_ref()
                    .map_or("none".into(), |s| s.to_string()),
            ),
        ]
    };
    let first = &inputs[0];
    let Some(r0) = &first.report else {
        return Ok(());
    };
    let k0 = key(&r0.config);
    for input in &inputs[1..] {
        let Some(r) = &input.report else { continue };
        let k = key(&r.config);
        if let Some(((name, a), (_, b))) = k0.iter().zip(&k).find(|(a, b)| a.1 != b.1) {
            return Err(format!(
                "{} and {} ran different plans ({name} {a} vs {b}): merge runs of the same plan",
                first.file, input.file
            ));
        }
    }
    Ok(())
}

/// The plan of the whole: the first run's, with connections, threads, rates and request
/// counts summed, every target and source, and no pinning (CPUs are per host).
fn merged_plan(reports: &[&Report]) -> Plan {
    let mut plan = reports[0].config.clone();
    plan.connections = reports.iter().map(|r| r.config.connections).sum();
    plan.threads = reports.iter().map(|r| r.config.threads).sum();
    plan.pin.clear();
    plan.requests = plan
        .requests
        .map(|_| reports.iter().filter_map(|r| r.config.requests).sum());
    plan.rate = plan
        .rate
        .map(|_| reports.iter().filter_map(|r| r.config.rate).sum());
    let mut targets: Vec<(SocketAddr, String)> = Vec::new();
    let mut sni: Option<Vec<String>> = plan.tls.as_ref().map(|_| Vec::new());
    for r in reports {
        let c = &r.config;
        for (i, pair) in c
            .targets
            .iter()
            .copied()
            .zip(c.target_names.iter().cloned())
            .enumerate()
        {
            if !targets.contains(&pair) {
                targets.push(pair);
                // TLS is on in every run or none (`same_plan`): the name sent to each target.
                if let (Some(t), Some(ct)) = (sni.as_mut(), c.tls.as_ref()) {
                    t.extend(ct.sni.get(i).cloned());
                }
            }
        }
        for s in &c.sources {
            if !plan.sources.contains(s) {
                plan.sources.push(*s);
            }
        }

        plan.duration = plan.duration.max(c.duration);
        plan.warmup = plan.warmup.max(c.warmup);
        plan.timeout = plan.timeout.max(c.timeout);
        plan.max_error_rate = plan.max_error_rate.min(c.max_error_rate);
    }
    (plan.targets, plan.target_names) = targets.into_iter().unzip();
    if let (Some(t), Some(sni)) = (plan.tls.as_mut(), sni) {
        t.sni = sni;
    }
    plan
}

/// The sum of the histograms given, exactly; `None` if none is.
fn sum_histograms<'a>(
    hists: impl Iterator<Item = Option<&'a Histogram<u64>>>,
) -> Result<Option<Histogram<u64>>, String> {
    let mut total: Option<Histogram<u64>> = None;
    for h in hists.flatten() {
        match total.as_mut() {
            Some(t) => add(t, h)?,
            None => {
                let mut t = h.clone();
                t.auto(true);
                total = Some(t);
            }
        }
    }
    Ok(total)
}

/// HTTP status classes summed over the runs that have them; `None` if none does.
fn sum_status(reports: &[&Report]) -> Option<StatusClasses> {
    let mut total: Option<[u64; 6]> = None;
    for s in reports.iter().filter_map(|r| r.status.as_ref()) {
        let t = total.get_or_insert([0; 6]);
        for (a, b) in t.iter_mut().zip(s.counts()) {
            *a += b;
        }
    }
    total.as_ref().map(StatusClasses::of)
}

/// Sums maps of counts key by key (keys in first-seen order); `None` if none is given.
fn sum_maps<'a>(
    maps: impl Iterator<Item = Option<&'a serde_json::Map<String, serde_json::Value>>>,
) -> Option<serde_json::Map<String, serde_json::Value>> {
    let mut total: Option<serde_json::Map<String, serde_json::Value>> = None;
    for m in maps.flatten() {
        let t = total.get_or_insert_with(serde_json::Map::new);
        for (k, v) in m {
            let n = t.get(k).and_then(|x| x.as_u64()).unwrap_or(0) + v.as_u64().unwrap_or(0);
            t.insert(k.clone(), n.into());
        }
    }
    total
}

/// Every run's seconds on one clock from `t0`, to the nearest second; JSON reports carry no
/// per-second histograms, so the seconds have counts and no percentiles.
fn timeseries<'a>(spans: impl Iterator<Item = &'a Span>, t0: f64) -> Vec<Second> {
    let mut seconds: Vec<Second> = Vec::new();
    for b in spans.flat_map(|s| &s.buckets) {
        let j = window::second_of(b.start, t0);
        while seconds.len() <= j {
            seconds.push(Second {
                second: seconds.len() as u64,
                completed: 0,
                errors: 0,
                p50_ns: None,
                p99_ns: None,
            });
        }
        seconds[j].completed += b.completed;
        seconds[j].errors += b.errors;
    }
    seconds
}

/// The server's CPU as the runs measured it: runs that name the same server process
/// measured it over nearly the same window, so the largest figure counts once; different
/// processes add up. The pid is given when there is one.
fn server_cpu(reports: &[&Report]) -> Option<(Option<u32>, f64)> {
    let mut by_pid: Vec<(Option<u32>, f64)> = Vec::new();
    for c in reports.iter().filter_map(|r| r.server_cpu.as_ref()) {
        match by_pid.iter_mut().find(|(pid, _)| *pid == c.pid) {
            Some((_, cpu)) => *cpu = cpu.max(c.cpu_s),
            None => by_pid.push((c.pid, c.cpu_s)),
        }
    }
    match by_pid.as_slice() {
        [] => None,
        [(pid, cpu)] => Some((*pid, *cpu)),
        many => Some((None, many.iter().map(|(_, c)| c).sum())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_key_add_up_in_first_seen_order() {
        let a: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(r#"{"200": 5, "404": 1}"#).unwrap();
        let b: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(r#"{"500": 2, "200": 7}"#).unwrap();
        let total = sum_maps([Some(&a), None, Some(&b)].into_iter()).unwrap();
        assert_eq!(
            serde_json::Value::Object(total).to_string(),
            r#"{"200":12,"404":1,"500":2}"#
        );
        assert_eq!(sum_maps([None, None].into_iter()), None);
    }

    #[test]
    fn histograms_add_exactly_and_only_at_the_same_precision() {
        let mut a = crate::stats::histogram();
        let mut b = crate::stats::histogram();
        a.record_n(1_000, 3).unwrap();
        b.record_n(2_000_000, 1).unwrap();
        let total = sum_histograms([Some(&a), None, Some(&b)].into_iter())
            .unwrap()
            .unwrap();
        assert_eq!(total.len(), 4);
        assert_eq!(total.count_at(1_000), 3);
        assert_eq!(total.count_at(2_000_000), 1);
        let coarse = Histogram::<u64>::new_with_bounds(1, 1_000_000, 2).unwrap();
        let e = sum_histograms([Some(&a), Some(&coarse)].into_iter()).unwrap_err();
        assert!(e.contains("significant digits"), "{e}");
    }
}
