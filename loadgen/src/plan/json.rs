//! How a [`Plan`](super::Plan) reads in JSON (the report's `config`): durations in seconds,
//! the protocol and `--expect-status` as typed; and how `merge` reads them back.

use std::time::Duration;

use ringd_common::ProtocolKind;

use crate::args::{parse_status_set, StatusSet};

pub(super) fn ser_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

pub(super) fn ser_display<S: serde::Serializer, T: std::fmt::Display>(
    v: &T,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

pub(super) fn ser_opt_display<S: serde::Serializer, T: std::fmt::Display>(
    v: &Option<T>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => s.collect_str(v),
        None => s.serialize_none(),
    }
}

pub(super) fn de_secs<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let secs = <f64 as serde::Deserialize>::deserialize(d)?;
    Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom)
}

pub(super) fn de_protocol<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<ProtocolKind, D::Error> {
    let name = <String as serde::Deserialize>::deserialize(d)?;
    <ProtocolKind as clap::ValueEnum>::from_str(&name, false)
        .map_err(|_| serde::de::Error::custom(format!("unknown protocol {name:?}")))
}

pub(super) fn de_status<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<StatusSet>, D::Error> {
    let text = <Option<String> as serde::Deserialize>::deserialize(d)?;
    text.map(|t| parse_status_set(&t))
        .transpose()
        .map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::super::Plan;
    use super::*;
    use crate::args::Args;

    #[test]
    fn a_plan_reads_back_as_written() {
        let p = Args::try_parse_from([
            "loadgen",
            "--protocol",
            "http",
            "--expect-status",
            "2xx,304",
            "-d",
            "1.5s",
            "--warmup",
            "250ms",
            "--source",
            "127.0.0.2",
        ])
        .unwrap()
        .into_plan()
        .unwrap();
        let text = serde_json::to_string(&p).unwrap();
        let back: Plan = serde_json::from_str(&text).unwrap();
        assert_eq!(
            serde_json::to_value(&back).unwrap(),
            serde_json::to_value(&p).unwrap()
        );
        assert_eq!(back.duration, Duration::from_millis(1500));
        assert_eq!(back.expect_status, p.expect_status);
        assert_eq!(back.protocol, ProtocolKind::Http);
        let bad = text.replace("\"http\"", "\"gopher\"");
        let e = serde_json::from_str::<Plan>(&bad).unwrap_err().to_string();
        assert!(e.contains("gopher"), "{e}");
    }
}
