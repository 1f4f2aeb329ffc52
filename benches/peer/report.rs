//! The benchmark's tables: medians of the runs with their lowest and highest, and ratios taken
//! only between figures of this one run.

use std::collections::BTreeMap;

use crate::systems::System;
use crate::{Args, Latency, Restore, Throughput};

/// A system (its index in `--systems`) and case (exactly-once, commit ms; none for the pipe).
pub type Key = (usize, Option<(bool, u64)>);

pub fn median(v: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = v.collect();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// `median [low-high]` of one figure across runs.
fn spread(v: &[f64], digits: usize) -> String {
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if v.len() < 2 {
        return format!("{:.*}", digits, median(v.iter().copied()));
    }
    format!("{:.*} [{:.*}-{:.*}]", digits, median(v.iter().copied()), digits, lo, digits, hi)
}

fn case_label(case: Option<(bool, u64)>) -> String {
    case.map_or("(no guarantee)".into(), |(eos, ms)| format!("{} {ms} ms", if eos { "exactly_once_v2" } else { "at_least_once" }))
}

fn index(a: &Args, s: System) -> Option<usize> {
    a.systems.iter().position(|&x| x == s)
}

pub fn throughput(a: &Args, tp: &BTreeMap<Key, Vec<Throughput>>) {
    let med = |k: &Key| tp.get(k).map(|v| median(v.iter().map(|t| t.events_per_s)));
    let pipe = index(a, System::Pipe).and_then(|i| med(&(i, None)));
    let ks = index(a, System::KafkaStreams);
    println!("\n## Throughput ({} events, {} keys, {} partitions; median [low-high] of {} runs)\n", a.events, a.keys, a.partitions, a.runs);
    println!("| system | guarantee, commit | events/s | of the pipe | vs Kafka Streams | start to first output (s) | CPU s per 1M events | peak RSS (MB) |");
    println!("|---|---|---|---|---|---|---|---|");
    for (k @ (si, case), v) in tp {
        let eps: Vec<f64> = v.iter().map(|t| t.events_per_s).collect();
        let m = median(eps.iter().copied());
        let of_pipe = pipe.map_or("".into(), |p| format!("{:.0}%", 100.0 * m / p));
        let vs_ks = ks.filter(|&i| i != *si).and_then(|i| med(&(i, *case))).map_or("".into(), |k| format!("{:.2}x", m / k));
        let col = |f: fn(&Throughput) -> f64, d| spread(&v.iter().map(f).collect::<Vec<_>>(), d);
        let _ = k;
        println!(
            "| {} | {} | {} | {of_pipe} | {vs_ks} | {} | {} | {} |",
            a.systems[*si].name(),
            case_label(*case),
            spread(&eps, 0),
            col(|t| t.startup_s, 2),
            col(|t| t.cpu_s_per_m, 1),
            col(|t| t.max_rss_mb, 0)
        );
    }
}

pub fn latency(a: &Args, rate: f64, lat: &BTreeMap<Key, Vec<Latency>>) {
    println!(
        "\n## End-to-end latency at {rate:.0} events/s, {} s after a 3 s warm-up, ms (median [low-high] of {} runs)\n",
        a.latency_secs, a.runs
    );
    println!("| system | guarantee, commit | p50 | p99 | max | kept up |");
    println!("|---|---|---|---|---|---|");
    for ((si, case), v) in lat {
        let col = |f: fn(&Latency) -> f64| spread(&v.iter().map(f).collect::<Vec<_>>(), 0);
        let kept = v.iter().filter(|l| l.kept_up).count();
        println!(
            "| {} | {} | {} | {} | {} | {kept} of {} runs |",
            a.systems[*si].name(),
            case_label(*case),
            col(|l| l.p50),
            col(|l| l.p99),
            col(|l| l.max),
            v.len()
        );
    }
}

/// Half the throughput of the slowest stateful system in any case measured.
pub fn latency_rate(a: &Args, tp: &BTreeMap<Key, Vec<Throughput>>) -> f64 {
    let slowest = tp
        .iter()
        .filter(|((si, _), _)| a.systems[*si] != System::Pipe)
        .map(|(_, v)| median(v.iter().map(|t| t.events_per_s)))
        .fold(f64::INFINITY, f64::min);
    assert!(slowest.is_finite(), "no stateful system was measured: give --latency-rate");
    slowest / 2.0
}

pub fn restore(a: &Args, tp: &BTreeMap<Key, Vec<Throughput>>, rs: &BTreeMap<usize, Vec<Restore>>) {
    println!(
        "\n## Restore of {} keys on an empty disk, and memory (exactly_once_v2, 100 ms; median [low-high] of {} runs)\n",
        a.restore_keys, a.runs
    );
    println!("Restore = start to first output on an empty disk less the same on the kept disk.\n");
    println!(
        "| system | changelog records | first output, kept disk (s) | first output, empty disk (s) | restore (s) | restore records/s | plain consumer records/s | restore / plain | peak RSS {} keys (MB) | RSS per 1M keys (MB) |",
        a.restore_keys
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (si, v) in rs {
        let base_rss = tp.get(&(*si, Some((true, 100)))).map(|t| median(t.iter().map(|t| t.max_rss_mb)));
        let restore_s: Vec<f64> = v.iter().map(|r| r.empty_disk_s - r.kept_disk_s).collect();
        let plain: Vec<f64> = v.iter().map(|r| r.changelog_records as f64 / r.plain_read_s).collect();
        // A restore shorter than the start-up's own jitter cannot be told apart: no rate for it.
        let measurable = restore_s.iter().all(|&s| s > 0.1);
        let rate: Vec<f64> = v.iter().zip(&restore_s).map(|(r, s)| r.changelog_records as f64 / s).collect();
        let ratio: Vec<f64> = rate.iter().zip(&plain).map(|(r, p)| 100.0 * r / p).collect();
        let (rate, ratio) =
            if measurable { (spread(&rate, 0), format!("{}%", spread(&ratio, 0))) } else { ("(within start-up jitter)".into(), "".into()) };
        let rss: Vec<f64> = v.iter().map(|r| r.max_rss_mb).collect();
        // Growth from the throughput runs' keys to the restore run's, scaled to 1M keys.
        let per_m = base_rss.map_or("".into(), |b| {
            let per: Vec<f64> = rss.iter().map(|r| (r - b) * 1e6 / (a.restore_keys - a.keys.min(a.restore_keys)) as f64).collect();
            spread(&per, 0)
        });
        println!(
            "| {} | {} | {} | {} | {} | {rate} | {} | {ratio} | {} | {per_m} |",
            a.systems[*si].name(),
            spread(&v.iter().map(|r| r.changelog_records as f64).collect::<Vec<_>>(), 0),
            spread(&v.iter().map(|r| r.kept_disk_s).collect::<Vec<_>>(), 2),
            spread(&v.iter().map(|r| r.empty_disk_s).collect::<Vec<_>>(), 2),
            spread(&restore_s, 2),
            spread(&plain, 0),
            spread(&rss, 0)
        );
    }
}
